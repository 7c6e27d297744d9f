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
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define SLOT_BASE 0x6FFF00000000UL

/* A raw openat with a known value in every register the syscall ABI preserves: whatever the
 * tracer rewrote to run the call (the path, the call itself), the program must get back.
 * Prints "regs_kept: ok", the errno name, or which register changed. */
static void regs_kept(const char *path) {
    static const char *names[] = {"rdi", "rsi", "rdx", "r10", "r8", "r9", "rbx", "r12",
                                  "r13", "r14", "r15"};
    register long r10 __asm__("r10") = 0;
    register long r8 __asm__("r8") = 0x0123456789abcdefL;
    register long r9 __asm__("r9") = 0x7edcba9876543210L;
    register long r12 __asm__("r12") = 0x1212121212121212L;
    register long r13 __asm__("r13") = 0x1313131313131313L;
    register long r14 __asm__("r14") = 0x1414141414141414L;
    register long r15 __asm__("r15") = 0x1515151515151515L;
    long rax = SYS_openat, rdi = AT_FDCWD, rsi = (long)path, rdx = O_RDONLY;
    long rbx = 0x0b0b0b0b0b0b0b0bL;
    const long want[] = {rdi, rsi, rdx, r10, r8, r9, rbx, r12, r13, r14, r15};
    __asm__ volatile("syscall"
                     : "+a"(rax), "+D"(rdi), "+S"(rsi), "+d"(rdx), "+r"(r10), "+r"(r8),
                       "+r"(r9), "+b"(rbx), "+r"(r12), "+r"(r13), "+r"(r14), "+r"(r15)
                     : : "rcx", "r11", "memory");
    const long got[] = {rdi, rsi, rdx, r10, r8, r9, rbx, r12, r13, r14, r15};
    if (rax < 0) {
        printf("regs_kept: %s\n", strerrorname_np((int)-rax));
        return;
    }
    close((int)rax);
    for (unsigned i = 0; i < sizeof want / sizeof want[0]; i++)
        if (got[i] != want[i]) {
            printf("regs_kept: %s changed\n", names[i]);
            return;
        }
    printf("regs_kept: ok\n");
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
