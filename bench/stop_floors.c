/* stop_floors: what one intercepted call costs the program under each way a tracer can
 * answer it, for choosing where appvirt's compiled loop goes next (never run by the tests).
 *
 *   cc -O2 -o stop_floors bench/stop_floors.c && ./stop_floors MODE [unpinned]
 *
 * A child makes 100,000 calls of one kind, newfstatat("/usr/bin/env") or, with a MODE
 * ending in "-open", openat("/usr/bin/env") + close, and prints the microseconds per call.
 * Tracer and child share one CPU, as appvirt keeps them, unless "unpinned".
 *   native             no filter
 *   ptrace             seccomp RET_TRACE; the tracer only resumes (the physical limit)
 *   ptrace-emulate     ... and answers as appvirt's compiled loop does: GET_SYSCALL_INFO,
 *                      the path read, its own openat2(RESOLVE_NO_SYMLINKS) + fstat, the stat
 *                      written back, the call skipped with two POKEUSERs
 *   ptrace-emulate-regs  the same with GETREGS and one SETREGS instead of GET_SYSCALL_INFO and
 *                      two POKEUSERs (slower: SETREGS checks every register it sets)
 *   ptrace-open        an open as appvirt makes it from the slot: registers rewritten at the
 *                      seccomp stop, restored at the exit stop (two stops)
 *   ptrace-open-tramp  the same rewrite (the path from a "slot" page), its registers put back
 *                      with no exit stop: the seccomp stop also points RIP at a trampoline in
 *                      a page the program can execute but not write, which reloads the four
 *                      argument registers saved beside it and jumps back (an -ELOOP goes back
 *                      to the program's syscall instruction instead, with rax the call's
 *                      number, using only rcx, which the syscall clobbers anyway, and no
 *                      flags); the program checks its registers came back (one stop)
 *   unotify            seccomp RET_USER_NOTIF; the supervisor only lets the call continue
 *   unotify-emulate    ... and answers it as ptrace-emulate does, checking the notification
 *                      is still alive before answering
 *   unotify-emulate-open  the supervisor opens the file itself (openat2) and installs the fd
 *                      as the call's result (SECCOMP_IOCTL_NOTIF_ADDFD, ADDFD_FLAG_SEND)
 * The mixed modes: one process is both the ptrace tracer (PTRACE_SEIZE) and the supervisor of
 * the child's notifications, waiting for either in poll() (the listener and a signalfd for
 * SIGCHLD), as a tracer that answers its hot calls by notification and the rest by ptrace
 * would. Their stats are made with r9 set, which must come back unchanged.
 *   mixed-emulate      the stat answered by notification, as unotify-emulate does
 *   mixed-fallback     the stat handed back to ptrace, as a call the compiled code cannot
 *                      answer would be: PTRACE_INTERRUPT ends the notification's wait
 *                      (-ERESTARTSYS), at the PTRACE_EVENT_STOP that follows r9 (an argument
 *                      newfstatat does not have) gets a mark, the kernel restarts the call,
 *                      the filter sends a marked call to RET_TRACE, and at that seccomp stop
 *                      it is answered as ptrace-emulate does, the program's r9 put back
 *   mixed-fallback-killable  the same from a filter whose notifications wait killably once
 *                      received (SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, as a supervisor that
 *                      makes changes itself needs: a signal must not restart a call whose
 *                      change is made), which PTRACE_INTERRUPT alone does not end: the
 *                      supervisor then answers -ERESTARTNOINTR, and the kernel restarts the call
 *                      after the PTRACE_EVENT_STOP as before
 *   mixed-open         the open traced as ptrace-open does, in the mixed loop
 * The same two without poll(): mixed-sig-emulate and mixed-sig-open. The tracer waits in the
 * listener's RECV alone; a ptrace stop's SIGCHLD (a handler without SA_RESTART) ends that
 * wait (EINTR), and one that comes just before it, between the check of pending SIGCHLDs and
 * the syscall instruction, moves the interrupted code past the syscall (the handler sets the
 * saved RIP, as musl's cancellation points do), so no wake-up is lost: a notification costs
 * one ioctl to receive, a ptrace stop a signal delivery more.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#define CALLS 100000
#define MARK 0x6170707669727421ULL      /* args[5] of a call handed back to ptrace */
#define R9 0x0123456789abcdefULL        /* the r9 of the mixed modes' stats */
static const char *TARGET = "/usr/bin/env";
static int opens;             /* the call measured: openat (else newfstatat) */
static int mixed;             /* a mixed mode */
static int tramp_mode;        /* ptrace-open-tramp */
/* ptrace-open-tramp's page, shared by tracer and child: the trampoline's code, the saved
 * registers it reloads (TRAMP_DATA: rdi, rsi, rdx, r10, return address, the call's number,
 * its syscall instruction), and the rewritten path (TRAMP_SLOT). */
static unsigned char *tramp;
#define TRAMP_DATA 512
#define TRAMP_SLOT 1024
static int killable;          /* its notifications wait killably once received */

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* The child's filter: the measured call traced or notified, everything else allowed. The
 * listener of a notifying filter goes to the parent through fd 3 (its number; the parent
 * takes it with pidfd_getfd). */
static void install(unsigned ret)
{
    /* mixed: newfstatat notified unless args[5] holds MARK (then traced), openat traced */
    struct sock_filter m[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_newfstatat, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[5])),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)MARK, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[5]) + 4),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)(MARK >> 32), 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
    };
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, opens ? SYS_openat : SYS_newfstatat, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, ret),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {4, f};
    if (mixed)
        prog = (struct sock_fprog){sizeof m / sizeof *m, m};
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    long fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
                      ret != SECCOMP_RET_USER_NOTIF ? 0 : SECCOMP_FILTER_FLAG_NEW_LISTENER
                      | (killable ? SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV : 0), &prog);
    if (fd < 0) {
        perror("seccomp");
        _exit(1);
    }
    char n = (char)fd;
    if (ret == SECCOMP_RET_USER_NOTIF && write(3, &n, 1) != 1)
        _exit(1);
}

/* newfstatat(AT_FDCWD, path, st, 0) with r9 = R9: its result, and *r9 after the call. */
static long stat_keeping_r9(const char *path, struct stat *st, unsigned long long *r9)
{
    register long r10 __asm__("r10") = 0;
    register unsigned long long r9_ __asm__("r9") = R9;
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret), "+r"(r9_)
                     : "0"((long)SYS_newfstatat), "D"((long)AT_FDCWD), "S"(path), "d"(st),
                       "r"(r10)
                     : "rcx", "r11", "memory");
    *r9 = r9_;
    return ret;
}

/* ptrace-open-tramp's code (see the top). */
static void build_tramp(void)
{
    unsigned long long *data = (unsigned long long *)(tramp + TRAMP_DATA);
    unsigned char *p = tramp;
    const unsigned char loads[][3] = {{0x48, 0x8b, 0x3d}, {0x48, 0x8b, 0x35},   /* rdi, rsi */
                                      {0x48, 0x8b, 0x15}, {0x4c, 0x8b, 0x15}};  /* rdx, r10 */
#define RIP_REL(target) do { int d = (int)((unsigned char *)(target) - (p + 4)); \
                             memcpy(p, &d, 4); p += 4; } while (0)
    for (int i = 0; i < 4; i++) {
        memcpy(p, loads[i], 3);                                 /* mov reg, [rip + data] */
        p += 3;
        RIP_REL(&data[i]);
    }
    const unsigned char lea_jrcxz[] = {0x48, 0x8d, 0x48, 0x28, 0xe3, 0x06};
    memcpy(p, lea_jrcxz, sizeof lea_jrcxz);     /* lea rcx, [rax + ELOOP]; jrcxz restart */
    p += sizeof lea_jrcxz;
    *p++ = 0xff; *p++ = 0x25; RIP_REL(&data[4]);                /* jmp [return address] */
    *p++ = 0x48; *p++ = 0x8b; *p++ = 0x05; RIP_REL(&data[5]);   /* restart: mov rax, nr */
    *p++ = 0xff; *p++ = 0x25; RIP_REL(&data[6]);                /* jmp [syscall insn] */
#undef RIP_REL
    strcpy((char *)tramp + TRAMP_SLOT, TARGET);
}

/* openat(AT_FDCWD, path, O_RDONLY|O_CLOEXEC) with r10 set too: its result; *same whether
 * the four argument registers came back unchanged. */
static long open_keeping_args(const char *path, int *same)
{
    register long rdi asm("rdi") = AT_FDCWD;
    register const char *rsi asm("rsi") = path;
    register long rdx asm("rdx") = O_RDONLY | O_CLOEXEC;
    register long r10 asm("r10") = 0x5a5a5a5a;
    long ret = SYS_openat;
    asm volatile("syscall" : "+a"(ret), "+r"(rdi), "+r"(rsi), "+r"(rdx), "+r"(r10)
                 : : "rcx", "r11", "memory");
    *same = rdi == AT_FDCWD && rsi == path && rdx == (O_RDONLY | O_CLOEXEC)
            && r10 == 0x5a5a5a5a;
    return ret;
}

static void measure(void)
{
    struct stat st;
    unsigned long long r9;
    double t = now();
    for (int i = 0; i < CALLS; i++) {
        if (mixed && !opens) {
            if (stat_keeping_r9(TARGET, &st, &r9) != 0 || !st.st_size || r9 != R9) {
                fprintf(stderr, "stat wrong or r9 changed\n");
                _exit(1);
            }
        } else if (tramp_mode) {
            int same;
            long fd = open_keeping_args(TARGET, &same);
            if (fd < 0 || !same) {
                fprintf(stderr, "open failed or its registers changed\n");
                _exit(1);
            }
            close((int)fd);
        } else if (opens) {
            long fd = syscall(SYS_openat, AT_FDCWD, TARGET, O_RDONLY | O_CLOEXEC);
            if (fd < 0)
                _exit(1);
            close((int)fd);
        } else if (syscall(SYS_newfstatat, AT_FDCWD, TARGET, &st, 0) != 0 || !st.st_size) {
            _exit(1);
        }
    }
    printf("%.2f\n", (now() - t) / CALLS * 1e6);
    fflush(stdout);
}

/* The tracer's own stat of the path at addr, written to the program's buffer. */
static int stat_for(pid_t pid, unsigned long long addr, unsigned long long buf)
{
    char path[4096];
    struct iovec l = {path, sizeof path}, r = {(void *)addr, sizeof path};
    if (process_vm_readv(pid, &l, 1, &r, 1, 0) <= 0)
        return -EFAULT;
    path[sizeof path - 1] = 0;
    struct open_how how = {.flags = O_PATH | O_NOFOLLOW | O_CLOEXEC,
                           .resolve = RESOLVE_NO_SYMLINKS};
    long fd = syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how);
    if (fd < 0)
        return -errno;
    struct stat st;
    int rc = fstat((int)fd, &st);
    close((int)fd);
    if (rc < 0)
        return -EIO;
    struct iovec l2 = {&st, sizeof st}, r2 = {(void *)buf, sizeof st};
    return process_vm_writev(pid, &l2, 1, &r2, 1, 0) == sizeof st ? 0 : -EFAULT;
}

/* An open at its seccomp stop as appvirt makes it from the slot: the registers rewritten,
 * the call run to its exit stop (*status), the program's registers put back. */
static void open_from_slot(pid_t c, int *status)
{
    struct __ptrace_syscall_info info;
    struct user_regs_struct regs;
    ptrace(PTRACE_GET_SYSCALL_INFO, c, sizeof info, &info);
    ptrace(PTRACE_GETREGS, c, 0, &regs);
    ptrace(PTRACE_SETREGS, c, 0, &regs);               /* the rewrite to the slot */
    ptrace(PTRACE_SYSCALL, c, 0, 0);
    waitpid(c, status, __WALL);                       /* the exit stop */
    ptrace(PTRACE_GETREGS, c, 0, &regs);
    ptrace(PTRACE_SETREGS, c, 0, &regs);               /* the program's registers back */
}

/* An open at its seccomp stop rewritten as open_from_slot does (the path from the slot),
 * its registers put back by the trampoline, with no exit stop. */
static void open_by_tramp(pid_t c)
{
    struct __ptrace_syscall_info info;
    struct user_regs_struct regs;
    unsigned long long *data = (unsigned long long *)(tramp + TRAMP_DATA);
    ptrace(PTRACE_GET_SYSCALL_INFO, c, sizeof info, &info);
    ptrace(PTRACE_GETREGS, c, 0, &regs);
    data[0] = regs.rdi; data[1] = regs.rsi; data[2] = regs.rdx; data[3] = regs.r10;
    data[4] = regs.rip; data[5] = regs.orig_rax; data[6] = regs.rip - 2;
    regs.rsi = (unsigned long long)(tramp + TRAMP_SLOT);
    regs.rip = (unsigned long long)tramp;
    ptrace(PTRACE_SETREGS, c, 0, &regs);
}

/* The program's exit status, once it has run under the tracer. */
static int trace(pid_t c, int emulate)
{
    int status;
    waitpid(c, &status, 0);
    ptrace(PTRACE_SETOPTIONS, c, 0, PTRACE_O_TRACESECCOMP | PTRACE_O_EXITKILL);
    ptrace(PTRACE_CONT, c, 0, 0);
    while (waitpid(c, &status, __WALL) == c && !WIFEXITED(status)) {
        int seccomp = (status >> 8) == (SIGTRAP | (PTRACE_EVENT_SECCOMP << 8));
        struct __ptrace_syscall_info info;
        struct user_regs_struct regs;
        if (seccomp && tramp_mode) {
            open_by_tramp(c);
        } else if (seccomp && opens) {
            open_from_slot(c, &status);
        } else if (seccomp && emulate == 2) {
            ptrace(PTRACE_GETREGS, c, 0, &regs);
            regs.rax = (unsigned long long)stat_for(c, regs.rsi, regs.rdx);
            regs.orig_rax = (unsigned long long)-1;
            ptrace(PTRACE_SETREGS, c, 0, &regs);
        } else if (seccomp && emulate) {
            ptrace(PTRACE_GET_SYSCALL_INFO, c, sizeof info, &info);
            long rc = stat_for(c, info.seccomp.args[1], info.seccomp.args[2]);
            ptrace(PTRACE_POKEUSER, c, offsetof(struct user_regs_struct, orig_rax), -1L);
            ptrace(PTRACE_POKEUSER, c, offsetof(struct user_regs_struct, rax), rc);
        }
        ptrace(PTRACE_CONT, c, 0, 0);
    }
    return status;
}

static void supervise(pid_t c, int channel, int emulate)
{
    char n;
    if (read(channel, &n, 1) != 1)
        return;
    int pidfd = (int)syscall(SYS_pidfd_open, c, 0);
    int listener = (int)syscall(SYS_pidfd_getfd, pidfd, (int)n, 0);
    struct seccomp_notif_sizes sizes;
    syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes);
    struct seccomp_notif *req = calloc(1, sizes.seccomp_notif);
    struct seccomp_notif_resp *resp = calloc(1, sizes.seccomp_notif_resp);
    for (;;) {
        memset(req, 0, sizes.seccomp_notif);
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, req) < 0)
            break;                                     /* the child is gone */
        memset(resp, 0, sizes.seccomp_notif_resp);
        resp->id = req->id;
        if (emulate && opens) {
            char path[4096];
            struct iovec l = {path, sizeof path}, r = {(void *)req->data.args[1], sizeof path};
            if (process_vm_readv(req->pid, &l, 1, &r, 1, 0) <= 0)
                continue;
            path[sizeof path - 1] = 0;
            if (ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &req->id) < 0)
                continue;
            struct open_how how = {.flags = O_RDONLY | O_CLOEXEC,
                                   .resolve = RESOLVE_NO_SYMLINKS};
            int fd = (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how);
            struct seccomp_notif_addfd add = {.id = req->id, .flags = SECCOMP_ADDFD_FLAG_SEND,
                                              .srcfd = (unsigned)fd,
                                              .newfd_flags = O_CLOEXEC};
            ioctl(listener, SECCOMP_IOCTL_NOTIF_ADDFD, &add);
            close(fd);
            continue;
        }
        if (emulate) {
            int rc = stat_for(req->pid, req->data.args[1], req->data.args[2]);
            if (ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &req->id) < 0)
                continue;
            resp->error = rc;
        } else {
            resp->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
        }
        ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, resp);
    }
}

/* The mixed modes' start: the child seized, told to go on, and its listener taken (its fd
 * number comes back through the channel); -1 when the child is gone. */
static int seize_and_listen(pid_t c, int channel)
{
    ptrace(PTRACE_SEIZE, c, 0, PTRACE_O_TRACESECCOMP | PTRACE_O_EXITKILL);
    char go = 1, n;
    if (write(channel, &go, 1) != 1 || read(channel, &n, 1) != 1)
        return -1;
    int pidfd = (int)syscall(SYS_pidfd_open, c, 0);
    return (int)syscall(SYS_pidfd_getfd, pidfd, (int)n, 0);
}

/* mixed-sig: a SIGCHLD the loop has not looked at yet; and the window of recv_ioctl in which
 * one must not let the RECV start (its labels). */
volatile int chld_pending;
extern const char recv_window[], recv_syscall[], recv_bail[];

/* ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, req), or -EINTR without it when a SIGCHLD is pending
 * or comes before the syscall instruction runs. */
static long recv_ioctl(int fd, void *req)
{
    register long a0 __asm__("rdi") = fd;
    register long a1 __asm__("rsi") = (long)SECCOMP_IOCTL_NOTIF_RECV;
    register long a2 __asm__("rdx") = (long)req;
    long ret;
    __asm__ volatile(".globl recv_window\nrecv_window:\n\t"
                     "cmpl $0, chld_pending(%%rip)\n\t"
                     "jne recv_bail\n\t"
                     ".globl recv_syscall\nrecv_syscall:\n\t"
                     "syscall\n\t"
                     "jmp 1f\n"
                     ".globl recv_bail\nrecv_bail:\n\t"
                     "movq $-4, %%rax\n"                 /* -EINTR */
                     "1:\n"
                     : "=a"(ret)
                     : "0"((long)SYS_ioctl), "r"(a0), "r"(a1), "r"(a2)
                     : "rcx", "r11", "memory");
    return ret;
}

static void on_chld(int sig, siginfo_t *si, void *ctx)
{
    (void)sig;
    (void)si;
    ucontext_t *uc = ctx;
    greg_t rip = uc->uc_mcontext.gregs[REG_RIP];
    chld_pending = 1;
    if (rip >= (greg_t)recv_window && rip <= (greg_t)recv_syscall)
        uc->uc_mcontext.gregs[REG_RIP] = (greg_t)recv_bail;
}

/* The mixed-sig modes' loop (see the top); the child's wait status. */
static int supervise_mixed_sig(pid_t c, int channel)
{
    int status = 0;
    int listener = seize_and_listen(c, channel);
    if (listener < 0)
        return status;
    struct sigaction sa = {.sa_sigaction = on_chld, .sa_flags = SA_SIGINFO};  /* no restart */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGCHLD, &sa, NULL);
    struct seccomp_notif_sizes sizes;
    syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes);
    struct seccomp_notif *req = calloc(1, sizes.seccomp_notif);
    struct seccomp_notif_resp *resp = calloc(1, sizes.seccomp_notif_resp);
    chld_pending = 1;
    for (;;) {
        if (chld_pending) {
            chld_pending = 0;
            pid_t w;
            while ((w = waitpid(c, &status, __WALL | WNOHANG)) == c) {
                if (WIFEXITED(status) || WIFSIGNALED(status))
                    return status;
                int event = status >> 16, sig = event ? 0 : WSTOPSIG(status);
                if (event == PTRACE_EVENT_SECCOMP && opens)
                    open_from_slot(c, &status);
                ptrace(PTRACE_CONT, c, 0, sig);
            }
            if (w < 0)
                return status;
        }
        memset(req, 0, sizes.seccomp_notif);
        if (recv_ioctl(listener, req) < 0)
            continue;
        memset(resp, 0, sizes.seccomp_notif_resp);
        resp->id = req->id;
        int rc = stat_for(req->pid, req->data.args[1], req->data.args[2]);
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &req->id) < 0)
            continue;
        resp->error = rc;
        ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, resp);
    }
}

/* The mixed modes' tracer and supervisor (see the top); the child's wait status. */
static int supervise_mixed(pid_t c, int channel, int fallback)
{
    int status = 0;
    int listener = seize_and_listen(c, channel);
    if (listener < 0)
        return status;
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    int sfd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
    struct seccomp_notif_sizes sizes;
    syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes);
    struct seccomp_notif *req = calloc(1, sizes.seccomp_notif);
    struct seccomp_notif_resp *resp = calloc(1, sizes.seccomp_notif_resp);
    unsigned long long program_r9 = 0;
    struct pollfd p[2] = {{listener, POLLIN, 0}, {sfd, POLLIN, 0}};
    for (;;) {
        pid_t w;
        while ((w = waitpid(c, &status, __WALL | WNOHANG)) == c) {
            if (WIFEXITED(status) || WIFSIGNALED(status))
                return status;
            int event = status >> 16, sig = event ? 0 : WSTOPSIG(status);
            struct user_regs_struct regs;
            if (event == PTRACE_EVENT_STOP) {           /* the interrupted notification's */
                ptrace(PTRACE_POKEUSER, c, offsetof(struct user_regs_struct, r9), MARK);
            } else if (event == PTRACE_EVENT_SECCOMP && opens) {
                open_from_slot(c, &status);
            } else if (event == PTRACE_EVENT_SECCOMP) {  /* the marked stat */
                ptrace(PTRACE_GETREGS, c, 0, &regs);
                if (regs.r9 != MARK) {
                    fprintf(stderr, "a traced stat without the mark\n");
                    exit(1);
                }
                regs.rax = (unsigned long long)stat_for(c, regs.rsi, regs.rdx);
                regs.orig_rax = (unsigned long long)-1;
                regs.r9 = program_r9;
                ptrace(PTRACE_SETREGS, c, 0, &regs);
            }
            ptrace(PTRACE_CONT, c, 0, sig);
        }
        if (w < 0)
            return status;
        poll(p, 2, -1);
        if (p[1].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) > 0) {
            }
        }
        if (!(p[0].revents & POLLIN))
            continue;
        memset(req, 0, sizes.seccomp_notif);
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, req) < 0)
            continue;
        memset(resp, 0, sizes.seccomp_notif_resp);
        resp->id = req->id;
        if (fallback) {
            program_r9 = req->data.args[5];
            ptrace(PTRACE_INTERRUPT, c, 0, 0);
            if (killable) {
                resp->error = -513;                 /* -ERESTARTNOINTR */
                ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, resp);
            }
            continue;
        }
        int rc = stat_for(req->pid, req->data.args[1], req->data.args[2]);
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &req->id) < 0)
            continue;
        resp->error = rc;
        ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, resp);
    }
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "native";
    opens = strstr(mode, "-open") != NULL;
    mixed = !strncmp(mode, "mixed", 5);
    killable = strstr(mode, "killable") != NULL;
    int native = !strncmp(mode, "native", 6), traced = !strncmp(mode, "ptrace", 6);
    tramp_mode = strstr(mode, "-tramp") != NULL;
    if (tramp_mode) {           /* before the fork: the child's page is the tracer's */
        tramp = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (tramp == MAP_FAILED) {
            perror("mmap");
            return 1;
        }
        build_tramp();
    }
    if (argc < 3 || strcmp(argv[2], "unpinned")) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(sched_getcpu(), &one);
        sched_setaffinity(0, sizeof one, &one);       /* the child inherits it */
    }
    int channel[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, channel);
    fflush(stdout);
    pid_t c = fork();
    if (c == 0) {
        dup2(channel[1], 3);
        char go;
        if (traced) {
            ptrace(PTRACE_TRACEME, 0, 0, 0);
            raise(SIGSTOP);
            install(SECCOMP_RET_TRACE);
        } else if (mixed) {
            if (read(3, &go, 1) != 1)               /* seized */
                _exit(1);
            install(SECCOMP_RET_USER_NOTIF);
        } else if (!native) {
            install(SECCOMP_RET_USER_NOTIF);
        }
        measure();
        _exit(0);
    }
    int status;
    if (traced) {
        status = trace(c, strstr(mode, "emulate-regs") ? 2 : strstr(mode, "emulate") != NULL);
    } else if (mixed && strstr(mode, "-sig-")) {
        status = supervise_mixed_sig(c, channel[0]);
    } else if (mixed) {
        status = supervise_mixed(c, channel[0], strstr(mode, "fallback") != NULL);
    } else {
        if (!native)
            supervise(c, channel[0], strstr(mode, "emulate") != NULL);
        waitpid(c, &status, 0);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
