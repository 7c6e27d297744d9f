/* Containment probes (threat model): each prints "NAME: RESULT" where RESULT is "ok" or the
 * errno name. Run one with `probes NAME`, or several with `probes NAME...`. Calls that must
 * never reach the kernel use harmless arguments where one exists (reboot's CAD_OFF command,
 * an empty module image), so a bug shows as a result, not as damage. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/reboot.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <sys/ioctl.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#define SLOT_BASE 0x6FFF00000000UL

/* Where the raw openat below returns to (set before each call; rcx is the syscall's). */
static volatile unsigned long syscall_return;

/* A raw openat with a known value in every register the syscall ABI preserves: whatever the
 * tracer rewrote to run the call (the path, the call itself), the program must get back.
 * Returns the call's result, *changed the name of a register that changed (or NULL). */
static long open_keeping_regs(const char *path, const char **changed) {
    static const char *names[] = {"rdi", "rsi", "rdx", "r10", "r8", "r9", "rbx", "r12",
                                  "r13", "r14", "r15", "flags"};
    register long r10 __asm__("r10") = 0;
    register long r8 __asm__("r8") = 0x0123456789abcdefL;
    register long r9 __asm__("r9") = 0x7edcba9876543210L;
    register long r12 __asm__("r12") = 0x1212121212121212L;
    register long r13 __asm__("r13") = 0x1313131313131313L;
    register long r14 __asm__("r14") = 0x1414141414141414L;
    register long r15 __asm__("r15") = 0x1515151515151515L;
    long rax = SYS_openat, rdi = AT_FDCWD, rsi = (long)path, rdx = O_RDONLY;
    long rbx = 0x0b0b0b0b0b0b0b0bL, flags = 0x8d5;      /* CF PF AF ZF SF OF set */
    const long want[] = {rdi, rsi, rdx, r10, r8, r9, rbx, r12, r13, r14, r15, flags};
    __asm__ volatile("lea 1f(%%rip), %%rcx\n\t"
                     "mov %%rcx, %[ret]\n\t"
                     "pushfq\n\t"
                     "orq $0x8d5, (%%rsp)\n\t"
                     "popfq\n\t"
                     "syscall\n"
                     "1:\n\t"
                     "pushfq\n\t"
                     "popq %[flags]\n\t"
                     "andq $0x8d5, %[flags]"
                     : "+a"(rax), "+D"(rdi), "+S"(rsi), "+d"(rdx), "+r"(r10), "+r"(r8),
                       "+r"(r9), "+b"(rbx), "+r"(r12), "+r"(r13), "+r"(r14), "+r"(r15),
                       [ret] "=m"(syscall_return), [flags] "=m"(flags)
                     : : "rcx", "r11", "memory", "cc");
    const long got[] = {rdi, rsi, rdx, r10, r8, r9, rbx, r12, r13, r14, r15, flags};
    *changed = NULL;
    for (unsigned i = 0; i < sizeof want / sizeof want[0]; i++)
        if (got[i] != want[i] && *changed == NULL)
            *changed = names[i];
    return rax;
}

/* Prints "regs_kept: ok", the errno name, or which register changed. */
static void regs_kept(const char *path) {
    const char *changed;
    long rax = open_keeping_regs(path, &changed);
    if (rax < 0) {
        printf("regs_kept: %s\n", strerrorname_np((int)-rax));
        return;
    }
    close((int)rax);
    if (changed)
        printf("regs_kept: %s changed\n", changed);
    else
        printf("regs_kept: ok\n");
}

/* Signals delivered where a handler sees RIP: at the open's return, or in the 4 GiB window of
 * the slot area (never natively: where a tracer's code would show through). */
static volatile long at_return, in_window;

static void note_rip(int sig, siginfo_t *si, void *ctx) {
    (void)sig; (void)si;
    unsigned long rip = (unsigned long)((ucontext_t *)ctx)->uc_mcontext.gregs[REG_RIP];
    if (rip == syscall_return)
        at_return++;
    if (rip >> 32 == SLOT_BASE >> 32)
        in_window++;
}

/* regs_kept 2000 times under a 200 us interval timer (SA_RESTART): "regs_kept_under_signals:
 * ok" when every open succeeded with every register kept, no handler saw RIP in the slot
 * area's window, and some signals came at an open's return (the delivery to check). */
static void regs_kept_under_signals(const char *path) {
    struct sigaction sa = {.sa_sigaction = note_rip, .sa_flags = SA_SIGINFO | SA_RESTART};
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval every = {{0, 200}, {0, 200}}, off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &every, NULL);
    const char *changed = NULL;
    long rax = 0;
    int i;
    for (i = 0; i < 2000 && changed == NULL && rax >= 0; i++) {
        rax = open_keeping_regs(path, &changed);
        if (rax >= 0)
            close((int)rax);
    }
    setitimer(ITIMER_REAL, &off, NULL);
    if (rax < 0)
        printf("regs_kept_under_signals: %s\n", strerrorname_np((int)-rax));
    else if (changed)
        printf("regs_kept_under_signals: %s changed at open %d\n", changed, i);
    else if (in_window || !at_return)
        printf("regs_kept_under_signals: %ld signals in the window, %ld at a return\n",
               in_window, at_return);
    else
        printf("regs_kept_under_signals: ok\n");
}

/* The kernel's restart of an open rewritten by the tracer, as the kernel makes it when it has
 * no signal to deliver (a freezer): RIP two bytes back, on the syscall instruction before the
 * trampoline, and the rewritten call run again from the slot. The probe finds its slot's
 * trampoline (the one whose data holds its return address), opens path, and makes that
 * restart itself: "NAME: ok" when both opens give the same file and every register comes
 * back; "no trampoline" when the tracer used none. `forged`: the restart's open_how is read
 * 8 bytes further (the path's bytes as flags): a call the program made up, not the restart. */
#define TRAMP_BASE (SLOT_BASE + 4096UL * 3 * 4096)

/* The slot whose trampoline returns to `ret` (and, unless NULL, saved `path` as the
 * program's rsi): this thread's, after an open rewritten from it; -1 when none does. */
static long trampoline_slot(unsigned long ret, const char *path) {
    for (long i = 0; i < 4096; i++) {
        const unsigned long *data = (const unsigned long *)(TRAMP_BASE + i * 256 + 128);
        if (data[4] == ret && (path == NULL || data[1] == (unsigned long)path))
            return i;
    }
    return -1;
}

static void restart_from_trampoline(const char *name, const char *path, int forged) {
    const char *changed;
    long fd = open_keeping_regs(path, &changed);      /* finds syscall_return's trampoline */
    if (fd < 0 || changed) {
        printf("%s: %s\n", name, changed ? changed : strerrorname_np((int)-fd));
        return;
    }
    close((int)fd);
    long slot = trampoline_slot(syscall_return, path);
    if (slot < 0) {
        printf("%s: no trampoline\n", name);
        return;
    }
    const char *host = (const char *)(SLOT_BASE + slot * 3 * 4096);
    unsigned long how = (unsigned long)host + (forged ? 8 : (strlen(host) + 1 + 7) & ~7UL);
    unsigned long restart = TRAMP_BASE + slot * 256;       /* its syscall instruction */
    register long r10 __asm__("r10") = 0;
    register long r12 __asm__("r12") = 0;                  /* 0: the first call's return */
    register long r13 __asm__("r13") = -1;                 /* the first call's result */
    long rax = SYS_openat, rdi = AT_FDCWD, rsi = (long)path, rdx = O_RDONLY;
    __asm__ volatile("lea 1f(%%rip), %%rcx\n\t"
                     "mov %%rcx, %[ret]\n\t"
                     "syscall\n"
                     "1:\n\t"
                     "test %%r12, %%r12\n\t"
                     "jnz 2f\n\t"
                     "mov $1, %%r12\n\t"
                     "mov %%rax, %%r13\n\t"
                     "mov $437, %%eax\n\t"              /* openat2, as rewritten */
                     "mov $-100, %%rdi\n\t"
                     "mov %[host], %%rsi\n\t"
                     "mov %[how], %%rdx\n\t"
                     "mov $24, %%r10\n\t"
                     "jmp *%[restart]\n"
                     "2:\n\t"
                     : "+a"(rax), "+D"(rdi), "+S"(rsi), "+d"(rdx), "+r"(r10), "+r"(r12),
                       "+r"(r13), [ret] "=m"(syscall_return)
                     : [host] "m"(host), [how] "m"(how), [restart] "m"(restart)
                     : "rcx", "r11", "memory", "cc");
    struct stat first, again;
    if (r13 < 0 || rax < 0) {
        printf("%s: %s\n", name, strerrorname_np((int)-(r13 < 0 ? r13 : rax)));
    } else if (rdi != AT_FDCWD || rsi != (long)path || rdx != O_RDONLY || r10 != 0) {
        printf("%s: registers changed\n", name);
    } else if (fstat((int)r13, &first) < 0 || fstat((int)rax, &again) < 0
               || first.st_ino != again.st_ino || first.st_dev != again.st_dev) {
        printf("%s: another file\n", name);
    } else {
        printf("%s: ok\n", name);
    }
    if (r13 >= 0) close((int)r13);
    if (rax >= 0) close((int)rax);
}

/* An openat whose return address is a symbol (eloop_return): the trampoline's data names it.
 * eloop_fake(entry) enters a trampoline as the kernel would return ELOOP to it: the
 * trampoline re-runs the program's own openat, which returns to eloop_return and so to the
 * caller of eloop_fake. */
long eloop_open(const char *path);
long eloop_fake(unsigned long entry);
extern char eloop_return[];
__asm__(".text\n"
        "eloop_open:\n\t"
        "mov %rdi, %rsi\n\t"
        "mov $-100, %rdi\n\t"
        "xor %edx, %edx\n\t"
        "xor %r10d, %r10d\n\t"
        "mov $257, %eax\n\t"
        "syscall\n"
        "eloop_return:\n\t"
        "ret\n"
        "eloop_fake:\n\t"
        "mov $-40, %rax\n\t"
        "jmp *%rdi\n");

/* ELOOP 20 times in a row, as a symlink swapped in after each check would make the kernel
 * return it: the tracer re-runs the open each time, and after MAX_RESTARTS in a row (16) lets
 * the next one's result through an exit stop (the kernel's, here an fd: the ELOOPs are made
 * up). Prints "NAME: N opened" (every re-run open succeeds). */
static void eloop_restarts(const char *name, const char *path) {
    long fd = eloop_open(path);
    if (fd < 0) {
        printf("%s: %s\n", name, strerrorname_np((int)-fd));
        return;
    }
    close((int)fd);
    long slot = trampoline_slot((unsigned long)eloop_return, NULL);
    if (slot < 0) {
        printf("%s: no trampoline\n", name);
        return;
    }
    int opened = 0;
    for (int i = 0; i < 20; i++) {
        long r = eloop_fake(TRAMP_BASE + slot * 256 + 2);
        if (r >= 0) {
            opened++;
            close((int)r);
        }
    }
    printf("%s: %d opened\n", name, opened);
}

static void nothing(int sig) { (void)sig; }

/* Make a FIFO in dir and open it for reading, a SIGALRM arriving while it waits for a writer
 * (100 ms; SA_RESTART when `restart`), a child opening it for writing at 300 ms: prints
 * "NAME: ok" and what was read, or the errno name (EINTR without SA_RESTART). */
static void fifo_open(const char *name, const char *dir, int restart) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.fifo", dir, name);
    if (mkfifo(path, 0600) < 0) {
        printf("%s: mkfifo %s\n", name, strerrorname_np(errno));
        return;
    }
    struct sigaction sa = {.sa_handler = nothing, .sa_flags = restart ? SA_RESTART : 0};
    sigaction(SIGALRM, &sa, NULL);
    pid_t child = fork();
    if (child == 0) {
        usleep(300000);
        int fd = -1;
        for (int i = 0; i < 100 && fd < 0; i++) {   /* (no reader any more: ENXIO) */
            fd = open(path, O_WRONLY | O_NONBLOCK);
            if (fd < 0)
                usleep(10000);
        }
        if (fd >= 0)
            (void)!write(fd, "hi", 2);
        _exit(0);
    }
    struct itimerval once = {{0, 0}, {0, 100000}};
    setitimer(ITIMER_REAL, &once, NULL);
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        printf("%s: %s\n", name, strerrorname_np(errno));
    } else {
        char buf[8] = "";
        ssize_t n = read(fd, buf, sizeof buf - 1);
        printf("%s: ok %s\n", name, n > 0 ? buf : "(nothing)");
        close(fd);
    }
    waitpid(child, NULL, 0);
    unlink(path);
}

static void report(const char *name, long rv) {
    if (rv < 0) printf("%s: %s\n", name, strerrorname_np(errno));
    else printf("%s: ok\n", name);
    fflush(stdout);
}

static char *page_edge_string(const char *s, int with_nul) {
    /* s ends exactly at the end of a page followed by an unmapped page */
    char *p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(p + 4096, 4096);
    size_t n = strlen(s) + (with_nul ? 1 : 0);
    memcpy(p + 4096 - n, s, n);
    return p + 4096 - n;
}

static int run(const char *name, const char *arg) {
    if (!strcmp(name, "reboot"))
        report(name, syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2,
                             LINUX_REBOOT_CMD_CAD_OFF, 0));
    else if (!strcmp(name, "init_module"))
        report(name, syscall(SYS_init_module, "", 0, ""));
    else if (!strcmp(name, "finit_module"))
        report(name, syscall(SYS_finit_module, -1, "", 0));
    else if (!strcmp(name, "mount"))
        report(name, mount("none", "/tmp", "tmpfs", 0, ""));
    else if (!strcmp(name, "settimeofday")) {
        struct timeval tv; gettimeofday(&tv, NULL);
        report(name, settimeofday(&tv, NULL));
    } else if (!strcmp(name, "clock_settime")) {
        struct timespec ts; clock_gettime(CLOCK_REALTIME, &ts);
        report(name, clock_settime(CLOCK_REALTIME, &ts));
    } else if (!strcmp(name, "io_uring_setup"))
        report(name, syscall(SYS_io_uring_setup, 1, calloc(1, 120)));
    else if (!strcmp(name, "userfaultfd"))
        report(name, syscall(SYS_userfaultfd, 0));
    else if (!strcmp(name, "ptrace"))
        report(name, ptrace(PTRACE_TRACEME, 0, 0, 0));
    else if (!strcmp(name, "unshare"))
        report(name, unshare(CLONE_NEWNS));
    else if (!strcmp(name, "clone_untraced")) {
        long pid = syscall(SYS_clone, CLONE_UNTRACED | SIGCHLD, 0, 0, 0, 0);
        if (pid == 0) _exit(0);
        if (pid > 0) waitpid(pid, NULL, 0);
        report(name, pid);
    } else if (!strcmp(name, "clone3"))
        report(name, syscall(SYS_clone3, calloc(1, 88), 88));
    else if (!strcmp(name, "seccomp_listener"))
        report(name, syscall(SYS_seccomp, 1, 1 << 3, NULL));
    else if (!strcmp(name, "personality"))
        report(name, personality(ADDR_NO_RANDOMIZE));
    else if (!strcmp(name, "rlimit_core")) {
        struct rlimit r = {RLIM_INFINITY, RLIM_INFINITY};
        report(name, setrlimit(RLIMIT_CORE, &r));
    } else if (!strcmp(name, "kill_outside"))
        report(name, kill(atoi(arg), 0));
    else if (!strcmp(name, "kill_all"))
        report(name, kill(-1, SIGUSR1));
    else if (!strcmp(name, "tiocsti")) {
        char c = 'x';
        report(name, ioctl(0, 0x5412, &c));
    } else if (!strcmp(name, "munmap_slots"))
        report(name, munmap((void *)SLOT_BASE, 4096));
    else if (!strcmp(name, "map_over_slots"))
        report(name, (long)mmap((void *)SLOT_BASE, 4096, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == -1 ? -1 : 0);
    else if (!strcmp(name, "write_slots")) {
        int fd = open("/proc/self/mem", O_RDWR);
        long rv = fd < 0 ? -1 : pwrite(fd, "x", 1, SLOT_BASE);
        report(name, rv);
    } else if (!strcmp(name, "mprotect_slots"))
        report(name, mprotect((void *)SLOT_BASE, 4096, PROT_READ | PROT_WRITE));
    else if (!strcmp(name, "x32"))
        report(name, syscall(0x40000000 | 39));          /* x32 getpid: the process dies */
    else if (!strcmp(name, "int80")) {
        long rv;                                           /* i386 getpid: the process dies */
        __asm__ volatile("int $0x80" : "=a"(rv) : "a"(20) : "memory");
        report(name, rv);
    } else if (!strcmp(name, "unknown_syscall"))
        report(name, syscall(600));
    else if (!strcmp(name, "open_null"))
        report(name, syscall(SYS_open, NULL, O_RDONLY));
    else if (!strcmp(name, "open_bad_pointer"))
        report(name, open((char *)1, O_RDONLY));
    else if (!strcmp(name, "open_page_edge_no_nul"))
        report(name, open(page_edge_string("/etc/hostname", 0), O_RDONLY));
    else if (!strcmp(name, "open_page_edge_nul"))
        report(name, open(page_edge_string("/etc/hostname", 1), O_RDONLY));
    else if (!strcmp(name, "open_too_long")) {
        char *p = malloc(5000); memset(p, 'a', 4999); p[0] = '/'; p[4999] = 0;
        report(name, open(p, O_RDONLY));
    } else if (!strcmp(name, "stat_bad_buffer"))
        report(name, syscall(SYS_newfstatat, AT_FDCWD, "/etc/hostname", (void *)1, 0));
    else if (!strcmp(name, "write_file"))
        report(name, open(arg, O_WRONLY | O_CREAT | O_TRUNC, 0644));
    else if (!strcmp(name, "read_file"))
        report(name, open(arg, O_RDONLY));
    else if (!strcmp(name, "regs_kept"))
        regs_kept(arg);
    else if (!strcmp(name, "regs_kept_under_signals"))
        regs_kept_under_signals(arg);
    else if (!strcmp(name, "restart_from_trampoline"))
        restart_from_trampoline(name, arg, 0);
    else if (!strcmp(name, "restart_forged"))
        restart_from_trampoline(name, arg, 1);
    else if (!strcmp(name, "eloop_restarts"))
        eloop_restarts(name, arg);
    else if (!strcmp(name, "fifo_restart"))
        fifo_open(name, arg, 1);
    else if (!strcmp(name, "fifo_eintr"))
        fifo_open(name, arg, 0);
    else if (!strcmp(name, "proc_mem_outside")) {
        char path[64]; snprintf(path, sizeof path, "/proc/%s/mem", arg);
        report(name, open(path, O_RDONLY));
    } else if (!strcmp(name, "proc_stat_outside")) {
        char path[64]; snprintf(path, sizeof path, "/proc/%s/stat", arg);
        report(name, open(path, O_RDONLY));
    } else {
        fprintf(stderr, "unknown probe %s\n", name);
        return 2;
    }
    return 0;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (eq) *eq++ = 0;
        if (run(argv[i], eq)) return 2;
    }
    return 0;
}
