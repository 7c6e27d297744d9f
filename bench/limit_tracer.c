/* limit_tracer: the physical limit of a ptrace sandbox, for the benchmark.
 *
 *   limit_tracer [--answer-threads N] FILTER.bin PROGRAM [ARGS...]
 *
 * Installs the seccomp filter appvirt would (FILTER.bin: struct sock_filter[], written by
 * limit_filter.py) and follows every process and thread as appvirt does, stopping at exactly
 * the same system calls, but does no work at any stop: what is left is the kernel's cost of
 * the stops themselves. It never asks for a call's exit stop, which the filter's data offers
 * for the calls whose handlers may want one: a tracer that does nothing needs none (appvirt
 * takes next to none, its compiled loop answering at the seccomp stop). Like appvirt, it
 * keeps itself and the program on one CPU. Prints "stops N" on stderr at the end and exits
 * with the program's status.
 * A filter that notifies (appvirt's, where the kernel has seccomp user notification: the
 * calls its compiled loop answers with a result alone, RET_USER_NOTIF) is installed with a
 * listener, whose notifications it answers by letting each call run (CONTINUE), waiting as
 * appvirt does: in poll() on the listener and a signalfd of SIGCHLD (blocked), read when a
 * ptrace stop signals. It then also prints "notified N".
 *
 * With --answer-threads N (N > 0), N threads of its own answer the notifications, each
 * blocked in SECCOMP_IOCTL_NOTIF_RECV, while the main thread only waits for ptrace stops;
 * nothing is pinned. With a filter that notifies every call it traces (limit_filter.py
 * --notify-all) this is the floor of any design that intercepts those calls with seccomp: no
 * ptrace stop on the hot path, no work, and the answers made in parallel on every CPU.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif
#define RET_USER_NOTIF_ 0x7fc00000U

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

static int notifies(const struct sock_fprog *prog)
{
    for (unsigned i = 0; i < prog->len; i++)
        if (prog->filter[i].code == (BPF_RET | BPF_K) && prog->filter[i].k == RET_USER_NOTIF_)
            return 1;
    return 0;
}

/* The listener's number from the child (hand), once written: copied with pidfd_getfd. */
static int take_listener(pid_t pid, int hand)
{
    char text[16];
    ssize_t n = read(hand, text, sizeof text - 1);
    if (n == 0)
        errno = EPIPE;                           /* it never installed one */
    if (n <= 0)
        return -1;
    text[n] = 0;
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    int fd = (int)syscall(SYS_pidfd_getfd, pidfd, atoi(text), 0);
    close(pidfd);
    if (fd < 0) {
        perror("pidfd_getfd");
        kill(pid, SIGKILL);
    }
    return fd;
}

static long notified_by_threads;

/* An answering thread (--answer-threads): every notification let run, at once. */
static void *answer_notifications(void *arg)
{
    int listener = *(const int *)arg;
    for (;;) {
        struct seccomp_notif req;
        memset(&req, 0, sizeof req);
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &req) != 0) {
            if (errno == EINTR || errno == ENOENT)   /* (ENOENT: its caller was killed) */
                continue;
            return NULL;
        }
        struct seccomp_notif_resp resp;
        memset(&resp, 0, sizeof resp);
        resp.id = req.id;
        resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp) == 0)
            __atomic_add_fetch(&notified_by_threads, 1, __ATOMIC_RELAXED);
    }
}

/* N threads answering the listener's notifications (the process's exit ends them). */
static void start_answering(int listener, int threads)
{
    static int shared;
    shared = listener;
    for (int i = 0; i < threads; i++) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, answer_notifications, &shared) != 0) {
            perror("pthread_create");
            exit(125);
        }
        pthread_detach(thread);
    }
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
    int threads = 0;
    if (argc > 2 && strcmp(argv[1], "--answer-threads") == 0) {
        threads = atoi(argv[2]);
        argv += 2;
        argc -= 2;
    }
    if (argc < 3 || threads < 0) {
        fprintf(stderr, "usage: limit_tracer [--answer-threads N] FILTER.bin PROGRAM "
                        "[ARGS...]\n");
        return 2;
    }
    struct sock_fprog prog = load_filter(argv[1]);
    int notify = notifies(&prog), hand[2] = {-1, -1}, listener = -1;
    if (notify && pipe2(hand, O_CLOEXEC) != 0)
        return 125;
    if (threads == 0)
        pin_to_current_cpu();
    pid_t main_pid = fork();
    if (main_pid == 0) {
        ptrace(PTRACE_TRACEME, 0, 0, 0);
        raise(SIGSTOP);
        unsigned flags = SECCOMP_FILTER_FLAG_SPEC_ALLOW
                         | (notify ? SECCOMP_FILTER_FLAG_NEW_LISTENER
                                     | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV : 0);
        long fd = -1;
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || (fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog)) < 0) {
            perror("seccomp");
            _exit(125);
        }
        char text[24];                           /* (no stdio: dprintf would fstat, */
        int len = snprintf(text, sizeof text, "%ld", fd);     /* a notified call) */
        if (notify && write(hand[1], text, (size_t)len) != len)
            _exit(125);
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

    long stops = 0, notified = 0;
    int exit_code = 0, drain = 1, sigfd = -1;
    if (notify) {
        close(hand[1]);
        fcntl(hand[0], F_SETFL, O_NONBLOCK);
        sigset_t chld;
        sigemptyset(&chld);
        sigaddset(&chld, SIGCHLD);
        sigprocmask(SIG_BLOCK, &chld, NULL);
        sigfd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
    }
    for (;;) {
        if (listener >= 0 && !drain) {
            struct pollfd p[2] = {{.fd = listener, .events = POLLIN},
                                  {.fd = sigfd, .events = POLLIN}};
            int n = poll(p, 2, 100);
            if (n > 0 && (p[1].revents & POLLIN)) {   /* one read, as appvirt reads it */
                struct signalfd_siginfo info;
                ssize_t got = read(sigfd, &info, sizeof info);
                (void)got;
            }
            if (n > 0 && (p[0].revents & POLLIN)) {
                struct seccomp_notif req;
                memset(&req, 0, sizeof req);
                if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &req) == 0) {
                    struct seccomp_notif_resp resp;
                    memset(&resp, 0, sizeof resp);
                    resp.id = req.id;
                    resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
                    ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp);
                    notified++;
                }
                continue;
            }
            if (n > 0 && (p[0].revents & (POLLHUP | POLLERR))) {   /* no tracee has the */
                close(listener);                                  /* filter */
                listener = -1;
            }
            drain = 1;
            continue;
        }
        pid_t pid = waitpid(-1, &status, __WALL | (listener >= 0 ? WNOHANG : 0));
        if (pid == 0) {
            drain = 0;
            continue;
        }
        if (pid < 0) {
            if (errno == EINTR)
                continue;
            break;                               /* ECHILD: every tracee is gone */
        }
        if (hand[0] >= 0 && pid == main_pid && WIFSTOPPED(status)) {
            listener = take_listener(main_pid, hand[0]);
            if (listener >= 0 || errno != EAGAIN) {
                close(hand[0]);
                hand[0] = -1;
            }
            if (listener >= 0 && threads > 0) {
                start_answering(listener, threads);
                listener = -1;                   /* this thread waits for stops alone */
            }
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
    if (notify)
        fprintf(stderr, "notified %ld\n",
                notified + __atomic_load_n(&notified_by_threads, __ATOMIC_RELAXED));
    return exit_code;
}
