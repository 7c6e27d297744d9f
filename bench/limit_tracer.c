/* limit_tracer: the physical limit of a ptrace sandbox, for the benchmark.
 *
 *   limit_tracer FILTER.bin PROGRAM [ARGS...]
 *
 * Installs the seccomp filter appvirt would (FILTER.bin: struct sock_filter[], written by
 * limit_filter.py) and follows every process and thread as appvirt does, stopping at exactly
 * the same system calls, but does no work at any stop: what is left is the kernel's cost of
 * the stops themselves. It never asks for a call's exit stop, which the filter's data offers
 * for the calls whose handlers may want one: a tracer that does nothing needs none (appvirt
 * takes next to none, its compiled loop answering at the seccomp stop). Like appvirt, it
 * keeps itself and the program on one CPU. Prints "stops N" on stderr at the end and exits
 * with the program's status.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static struct sock_fprog load_filter(const char *path)
{
    struct sock_fprog prog = {0, NULL};
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (f == NULL || fstat(fileno(f), &st) != 0 || st.st_size % sizeof(struct sock_filter)) {
        perror(path);
        exit(125);
    }
    prog.len = (unsigned short)(st.st_size / sizeof(struct sock_filter));
    prog.filter = malloc(st.st_size);
    if (fread(prog.filter, 1, st.st_size, f) != (size_t)st.st_size) {
        perror(path);
        exit(125);
    }
    fclose(f);
    return prog;
}

static void pin_to_current_cpu(void)
{
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(sched_getcpu(), &one);
    sched_setaffinity(0, sizeof one, &one);     /* the child inherits it */
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: limit_tracer FILTER.bin PROGRAM [ARGS...]\n");
        return 2;
    }
    struct sock_fprog prog = load_filter(argv[1]);
    pin_to_current_cpu();
    pid_t main_pid = fork();
    if (main_pid == 0) {
        ptrace(PTRACE_TRACEME, 0, 0, 0);
        raise(SIGSTOP);
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
            perror("seccomp");
            _exit(125);
        }
        execvp(argv[2], argv + 2);
        perror(argv[2]);
        _exit(127);
    }
    int status;
    waitpid(main_pid, &status, 0);
    ptrace(PTRACE_SETOPTIONS, main_pid, 0,
           PTRACE_O_TRACESECCOMP | PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK
           | PTRACE_O_TRACECLONE | PTRACE_O_TRACEEXEC | PTRACE_O_EXITKILL
           | PTRACE_O_TRACESYSGOOD);
    ptrace(PTRACE_CONT, main_pid, 0, 0);

    long stops = 0;
    int exit_code = 0;
    for (;;) {
        pid_t pid = waitpid(-1, &status, __WALL);
        if (pid < 0) {
            if (errno == EINTR)
                continue;
            break;                               /* ECHILD: every tracee is gone */
        }
        if (WIFEXITED(status) || WIFSIGNALED(status)) {
            if (pid == main_pid)
                exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            continue;
        }
        if (!WIFSTOPPED(status))
            continue;
        int sig = WSTOPSIG(status), event = status >> 16;
        stops++;
        if (event != 0) {
            ptrace(PTRACE_CONT, pid, 0, 0);      /* seccomp stops; fork/clone/exec events */
        } else if (sig == SIGSTOP) {
            ptrace(PTRACE_CONT, pid, 0, 0);      /* a new tracee's first stop */
        } else {
            ptrace(PTRACE_CONT, pid, 0, sig);    /* deliver the signal */
        }
    }
    fprintf(stderr, "stops %ld\n", stops);
    return exit_code;
}
