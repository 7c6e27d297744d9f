/* tracer_calls: what each call the compiled loop makes at a stop costs the tracer, and what
 * the ways around the dearest ones would cost (never run by the tests).
 *
 *   cc -O2 -o tracer_calls bench/tracer_calls.c && ./tracer_calls [DIR]
 *
 * A child on the same CPU, as appvirt keeps its tracees, opens DIR/a/b/c/d/e/f/file (DIR
 * defaults to the working directory: put it where appvirt's upper layer would be, as deep)
 * as its fd 3 and stops under ptrace; the tracer then makes each call 100,000 times and
 * prints the microseconds per call as a markdown table:
 *   getpid                         a system call that does nothing: the entry and exit alone
 *   readlink /proc/PID/fd/N        fd_path: the object of a call's fd (its path in the view)
 *   readlinkat(/proc/PID/fd, N)    the same from a held descriptor of the process's fd dir
 *   fstatat /proc/PID/fd/N         a check of the fd's object (its inode) without its path
 *   kcmp KCMP_FILE                 whether an fd is still the file a held duplicate is
 *   pidfd_getfd + close            a duplicate of the program's fd, for kcmp or a change
 *   pidfd_getfd + fstat + close    whether an fd is still a file known by its inode
 *   process_vm_readv 64 B, 4 KB    a path or a result cell read from the program
 *   pread /proc/PID/mem 64 B       the same through a held descriptor of its memory
 *   fstatat DIR/.../file           a name looked up in the upper layer
 *   write 120 B                    a log record, to DIR/log
 *   PTRACE_GET_SYSCALL_INFO-like   PTRACE_PEEKUSER of orig_rax (the stop's registers)
 *   PTRACE_POKEUSER                one register written (the compiled loop writes two to
 *                                  skip a call: orig_rax -1 and rax the result)
 *   PTRACE_GETREGS, PTRACE_SETREGS all of them read, or written, at once
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/kcmp.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CALLS 100000

static int dup_stat(int pidfd, struct stat *st)
{
    int fd = (int)syscall(SYS_pidfd_getfd, pidfd, 3, 0);
    int rc = fstat(fd, st);
    close(fd);
    return rc;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static char cell[4096] __attribute__((aligned(4096)));

#define TIME(label, body) do {                                                   \
        double t0 = now();                                                       \
        for (int i_ = 0; i_ < CALLS; i_++) { body; }                             \
        printf("| %s | %.2f |\n", label, (now() - t0) / CALLS * 1e6);            \
    } while (0)

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : ".";
    char deep[4096], file[4200], log[4200];
    snprintf(deep, sizeof deep, "%s/a/b/c/d/e/f", dir);
    for (size_t i = strlen(dir) + 1; ; i++) {               /* mkdir -p */
        char keep = deep[i];
        if (keep != '/' && keep != 0)
            continue;
        deep[i] = 0;
        mkdir(deep, 0755);
        deep[i] = keep;
        if (keep == 0)
            break;
    }
    snprintf(file, sizeof file, "%s/file", deep);
    snprintf(log, sizeof log, "%s/log", dir);
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(sched_getcpu(), &one);
    sched_setaffinity(0, sizeof one, &one);
    memset(cell, 'x', sizeof cell);
    pid_t child = fork();
    if (child == 0) {
        close(3);
        if (open(file, O_RDWR | O_CREAT, 0644) != 3)
            _exit(1);
        ptrace(PTRACE_TRACEME, 0, 0, 0);
        raise(SIGSTOP);
        _exit(0);
    }
    int status;
    waitpid(child, &status, 0);
    if (!WIFSTOPPED(status)) {
        fprintf(stderr, "tracer_calls: the child did not stop\n");
        return 1;
    }
    char link[64], fddir[64], mem[64], buf[4096];
    snprintf(link, sizeof link, "/proc/%d/fd/3", child);
    snprintf(fddir, sizeof fddir, "/proc/%d/fd", child);
    snprintf(mem, sizeof mem, "/proc/%d/mem", child);
    int fds = open(fddir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    int memfd = open(mem, O_RDONLY | O_CLOEXEC);
    int pidfd = (int)syscall(SYS_pidfd_open, child, 0);
    int mine = (int)syscall(SYS_pidfd_getfd, pidfd, 3, 0);
    int logfd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_TRUNC | O_CLOEXEC, 0644);
    if (fds < 0 || memfd < 0 || pidfd < 0 || mine < 0 || logfd < 0) {
        perror("tracer_calls");
        return 1;
    }
    struct stat st;
    char record[120];
    memset(record, 'r', sizeof record);
    record[sizeof record - 1] = '\n';
    long orig = offsetof(struct user_regs_struct, orig_rax);
    long r8 = offsetof(struct user_regs_struct, r8);
    long r8_value = ptrace(PTRACE_PEEKUSER, child, r8, 0);
    printf("| call | µs per call |\n|---|---|\n");
    TIME("getpid", syscall(SYS_getpid));
    TIME("readlink /proc/PID/fd/N", readlink(link, buf, sizeof buf));
    TIME("readlinkat(/proc/PID/fd, N)", readlinkat(fds, "3", buf, sizeof buf));
    TIME("fstatat /proc/PID/fd/N (the object)", fstatat(fds, "3", &st, 0));
    TIME("kcmp KCMP_FILE", syscall(SYS_kcmp, getpid(), child, KCMP_FILE, mine, 3));
    TIME("pidfd_getfd + close", close((int)syscall(SYS_pidfd_getfd, pidfd, 3, 0)));
    TIME("pidfd_getfd + fstat + close", dup_stat(pidfd, &st));
    struct iovec small_l = {buf, 64}, small_r = {cell, 64};
    struct iovec page_l = {buf, 4096}, page_r = {cell, 4096};
    TIME("process_vm_readv 64 B", process_vm_readv(child, &small_l, 1, &small_r, 1, 0));
    TIME("process_vm_readv 4 KB", process_vm_readv(child, &page_l, 1, &page_r, 1, 0));
    TIME("pread /proc/PID/mem 64 B", pread(memfd, buf, 64, (off_t)(unsigned long)cell));
    TIME("fstatat of the upper-layer file", fstatat(AT_FDCWD, file, &st, AT_SYMLINK_NOFOLLOW));
    TIME("write 120 B (a log record)", write(logfd, record, sizeof record));
    TIME("PTRACE_PEEKUSER", ptrace(PTRACE_PEEKUSER, child, orig, 0));
    TIME("PTRACE_POKEUSER", ptrace(PTRACE_POKEUSER, child, r8, r8_value));
    struct user_regs_struct regs;
    TIME("PTRACE_GETREGS", ptrace(PTRACE_GETREGS, child, 0, &regs));
    TIME("PTRACE_SETREGS", ptrace(PTRACE_SETREGS, child, 0, &regs));
    kill(child, SIGKILL);
    waitpid(child, &status, 0);
    unlink(log);
    return 0;
}
