/* notify_probe: changes and stats made with raw syscalls whose r9 (a register no such call
 * reads, which the kernel keeps across every call) holds a value of the program's, for
 * appvirt's notified calls (tests/integration/test_fastpath.py): each call's result and
 * whether r9 came back unchanged.
 *
 *   notify_probe HOSTDIR SCRATCH N [MARK]
 *
 * HOSTDIR holds files f0 .. f(N-1); SCRATCH is a directory the program makes. Each round
 * changes a host file twice (a copy-up, then a change of the copy), misses a name, makes and
 * removes a directory of its own, stats, and changes the mode of a file of its own through
 * its fd after removing it (a call the kernel then runs), with r9 set; the same again with
 * r9 = MARK (hex:
 * the value appvirt's filter sends to ptrace), and a SIGALRM handler firing every 200 µs
 * meanwhile makes stats of its own with yet another r9. Three threads run the rounds on
 * their own thirds of the files. Prints one line per thread with its results' sum of
 * errnos and counts, then every file's mode, and "r9 changed" for every call whose r9 did
 * not come back.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

static const char *host, *scratch;
static int files;
static unsigned long mark;
static volatile sig_atomic_t changed_r9;

/* syscall nr(a, b, c, d, e) with r9 = *r9 before it; *r9 after it. */
static long call6(long nr, long a, long b, long c, long d, long e, unsigned long *r9)
{
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register unsigned long r9_ __asm__("r9") = *r9;
    __asm__ volatile("syscall"
                     : "=a"(ret), "+r"(r9_), "+r"(r10), "+r"(r8)
                     : "a"(nr), "D"(a), "S"(b), "d"(c)
                     : "rcx", "r11", "memory");
    *r9 = r9_;
    return ret;
}

static long checked(long nr, long a, long b, long c, long d, long e, unsigned long r9)
{
    unsigned long kept = r9;
    long ret = call6(nr, a, b, c, d, e, &kept);
    if (kept != r9)
        changed_r9++;
    return ret;
}

static void on_alarm(int sig)
{
    (void)sig;
    struct stat st;
    int saved = errno;
    checked(SYS_newfstatat, AT_FDCWD, (long)host, (long)&st, 0, 0, 0x5157a1a5UL);
    errno = saved;
}

struct part { int from, to; long failures, ok; };

static void *rounds(void *arg)
{
    struct part *p = arg;
    char path[4096], dir[4096];
    struct stat st;
    for (int i = p->from; i < p->to; i++) {
        unsigned long r9 = (i & 1) ? mark : 0x1234567800000000UL + (unsigned long)i;
        snprintf(path, sizeof path, "%s/f%d", host, i);
        snprintf(dir, sizeof dir, "%s/d%d", scratch, i);
        long r[8];
        r[0] = checked(SYS_fchmodat, AT_FDCWD, (long)path, 0600 + (i % 8), 0, 0, r9);
        r[1] = checked(SYS_fchmodat, AT_FDCWD, (long)path, 0640 + (i % 8), 0, 0, r9);
        snprintf(path, sizeof path, "%s/missing%d", host, i);
        r[2] = checked(SYS_fchmodat, AT_FDCWD, (long)path, 0600, 0, 0, r9);
        r[3] = checked(SYS_mkdirat, AT_FDCWD, (long)dir, 0755, 0, 0, r9);
        r[4] = checked(SYS_newfstatat, AT_FDCWD, (long)dir, (long)&st, 0, 0, r9);
        r[5] = checked(SYS_unlinkat, AT_FDCWD, (long)dir, AT_REMOVEDIR, 0, 0, r9);
        r[6] = checked(SYS_unlinkat, AT_FDCWD, (long)dir, AT_REMOVEDIR, 0, 0, r9);
        int fd = open(dir, O_CREAT | O_WRONLY | O_EXCL, 0600);
        unlink(dir);
        r[7] = checked(SYS_fchmod, fd, 0604, 0, 0, 0, r9);
        close(fd);
        for (int k = 0; k < 8; k++) {
            if (r[k] < 0)
                p->failures += -r[k];
            else
                p->ok++;
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 4)
        return 2;
    host = argv[1];
    scratch = argv[2];
    files = atoi(argv[3]);
    mark = argc > 4 ? strtoul(argv[4], NULL, 16) : 0x61707076697274UL;
    if (mkdir(scratch, 0755) < 0 && errno != EEXIST)
        return 3;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval every = {{0, 200}, {0, 200}};
    setitimer(ITIMER_REAL, &every, NULL);
    enum { THREADS = 3 };
    pthread_t t[THREADS];
    struct part parts[THREADS];
    for (int k = 0; k < THREADS; k++) {
        parts[k] = (struct part){files * k / THREADS, files * (k + 1) / THREADS, 0, 0};
        pthread_create(&t[k], NULL, rounds, &parts[k]);
    }
    for (int k = 0; k < THREADS; k++)
        pthread_join(t[k], NULL);
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    for (int k = 0; k < THREADS; k++)
        printf("thread %d: %ld ok, errnos %ld\n", k, parts[k].ok, parts[k].failures);
    for (int i = 0; i < files; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/f%d", host, i);
        if (stat(path, &st) == 0)
            printf("f%d %o\n", i, st.st_mode & 07777);
        else
            printf("f%d errno %d\n", i, errno);
    }
    if (changed_r9)
        printf("r9 changed %d times\n", (int)changed_r9);
    return 0;
}
