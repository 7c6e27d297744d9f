/* The `appvirt` executable when a C compiler was there at install time: the warm-start client
 * of appvirt/warm/client.py in C, in front of the Python one.
 *
 * A new interpreter takes 10 to 15 ms to start before it can ask the warm server anything: a
 * third of a warm `appvirt run -- true`. This program asks at once. It hands an `appvirt run`
 * line to the server as the Python client does (same socket, the same marshalled request with
 * fds 0-2 but for its kind, same answers, same signals forwarded, same death), and for every
 * other command line, or when there is no server or it refuses, it becomes the Python
 * `appvirt` installed beside it (`appvirt-py`, the script whose first line pip made the
 * install's interpreter).
 *
 * Its origin is ("c1", that interpreter): the server runs the line only if the interpreter is
 * its own (same real file, same venv), so the run is the one the cold path would start.
 *
 * It asks for a "run-here": the server's tracer has this process fork the program, which so is
 * in this process's session and under its terminal, if it has one, as a cold appvirt's
 * program is in appvirt's (appvirt/tracer/clientspawn.py gives the exchange). The child does
 * what the launcher's own child does (appvirt/tracer/launcher.py: _child), and this process
 * does what a cold appvirt does for the terminal: the program's group in the foreground,
 * Ctrl-Z passed on to the shell. (The tracer then never forks: its pages are not shared with
 * a child it writes them under, 2 ms of a warm `true`.)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#ifndef PR_SET_PTRACER
#define PR_SET_PTRACER 0x59616d61
#endif
#define SECCOMP_SET_MODE_FILTER 1

#define COLD_SCRIPT "appvirt-py"
#define ORIGIN_TAG "c1"             /* appvirt/warm/client.py: C_ORIGIN */
#define SOCKET_NAME "server.sock"   /* appvirt/warm/wire.py */
#define MAX_MESSAGE (16 << 20)
#define INTERNAL 125                /* appvirt/errors.py: ExitStatus */
#define NOT_EXECUTABLE 126
#define NOT_FOUND 127
#define ASKED_ENV "_APPVIRT_SERVER_ASKED"   /* appvirt/entry.py: not to ask twice */

static const int FORWARDED[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
#define N_FORWARDED (sizeof FORWARDED / sizeof FORWARDED[0])

/* -- the cold path: the Python appvirt beside this file ------------------------------------ */

static char script[PATH_MAX];

static void find_script(void) {
    ssize_t room = sizeof script - sizeof COLD_SCRIPT - 1;
    ssize_t n = readlink("/proc/self/exe", script, room);
    char *slash = n > 0 && n < room ? memrchr(script, '/', n) : NULL;
    if (slash) strcpy(slash + 1, COLD_SCRIPT);
    else script[0] = 0;                             /* none, or cut short */
}

static _Noreturn void cold(char **argv) {
    if (script[0]) {
        argv[0] = script;
        execv(script, argv);
    }
    fprintf(stderr, "appvirt: cannot start %s: %s\n", script[0] ? script : COLD_SCRIPT,
            strerror(script[0] ? errno : ENOENT));
    exit(INTERNAL);
}

/* The interpreter pip wrote into the script's first line (wheel.py fix_script: "#!" and
 * sys.executable); 0 when it is not one path alone. */
static int interpreter(char *out, size_t size) {
    char head[PATH_MAX + 4];
    int fd = open(script, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, head, sizeof head - 1);
    close(fd);
    if (n < 3 || head[0] != '#' || head[1] != '!' || head[2] != '/') return 0;
    head[n] = 0;
    const char *start = head + 2, *end = strchr(start, '\n');
    if (!end || memchr(start, ' ', end - start) || (size_t)(end - start) >= size) return 0;
    memcpy(out, start, end - start);
    out[end - start] = 0;
    return 1;
}

/* -- the server ----------------------------------------------------------------------------- */

/* $APPVIRT_HOME, else $XDG_DATA_HOME/appvirt, else ~/.local/share/appvirt (homepath.py). */
static int socket_path(char *out, size_t size) {
    const char *home = getenv("APPVIRT_HOME"), *data = getenv("XDG_DATA_HOME");
    int n;
    if (home && *home) {
        n = snprintf(out, size, "%s/run/" SOCKET_NAME, home);
    } else if (data && *data) {
        n = snprintf(out, size, "%s/appvirt/run/" SOCKET_NAME, data);
    } else {
        const char *user = getenv("HOME");
        if (!user) user = "/root";
        n = snprintf(out, size, "%s%s.local/share/appvirt/run/" SOCKET_NAME, user,
                     *user ? "/" : "");
    }
    return n > 0 && (size_t)n < size;
}

static int connect_server(void) {
    char path[PATH_MAX + 64];
    if (!socket_path(path, sizeof path)) return -1;
    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0) return -1;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int dir = -1;
    if (strlen(path) >= sizeof addr.sun_path) {     /* reach it through its directory */
        char *slash = strrchr(path, '/');
        *slash = 0;
        dir = open(path, O_PATH | O_CLOEXEC);
        *slash = '/';
        if (dir < 0) goto fail;
        snprintf(addr.sun_path, sizeof addr.sun_path, "/proc/self/fd/%d/" SOCKET_NAME, dir);
    } else {
        strcpy(addr.sun_path, path);
    }
    int ok = connect(sock, (struct sockaddr *)&addr, sizeof addr) == 0;
    if (dir >= 0) close(dir);
    if (ok) return sock;
fail:
    close(sock);
    return -1;
}

/* -- the request: marshal format 4, the types marshal.loads needs --------------------------- */

struct buf { char *data; size_t len, cap; int failed; };

static void put(struct buf *b, const void *data, size_t n) {
    if (b->failed) return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        char *grown = realloc(b->data, cap);
        if (!grown) { b->failed = 1; return; }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
}

static void put_u32(struct buf *b, uint32_t v) {
    unsigned char le[4] = {v, v >> 8, v >> 16, v >> 24};
    put(b, le, 4);
}

static void put_head(struct buf *b, char type, size_t n) {
    put(b, &type, 1);
    put_u32(b, n);
}

static void put_str(struct buf *b, const char *ascii) {     /* a str */
    put_head(b, 'u', strlen(ascii));
    put(b, ascii, strlen(ascii));
}

static void put_bytes(struct buf *b, const char *data, size_t n) {     /* a bytes */
    put_head(b, 's', n);
    put(b, data, n);
}

static int finish(struct buf *b) {         /* the length in front */
    if (b->failed || b->len - 4 > MAX_MESSAGE) return 0;
    uint32_t size = b->len - 4;
    unsigned char le[4] = {size, size >> 8, size >> 16, size >> 24};
    memcpy(b->data, le, 4);
    return 1;
}

/* ("run-here", ("c1", interpreter), [arg bytes...], {name bytes: value bytes}) */
static int request(struct buf *b, const char *interp, char **args) {
    put_u32(b, 0);                          /* the length, filled in by finish */
    put_head(b, '(', 4);
    put_str(b, "run-here");
    put_head(b, '(', 2);
    put_str(b, ORIGIN_TAG);
    put_bytes(b, interp, strlen(interp));
    size_t n = 0;
    while (args[n]) n++;
    put_head(b, '[', n);
    for (size_t i = 0; i < n; i++) put_bytes(b, args[i], strlen(args[i]));
    put(b, "{", 1);
    for (char **e = environ; *e; e++) {
        char *eq = strchr(*e, '=');
        if (!eq) continue;                  /* as os.environb reads environ */
        put_bytes(b, *e, eq - *e);
        put_bytes(b, eq + 1, strlen(eq + 1));
    }
    put(b, "0", 1);
    return finish(b);
}

/* Sends b's bytes from `done` on; 0 if the connection failed. */
static int send_rest(int sock, const struct buf *b, size_t done) {
    while (done < b->len) {
        ssize_t sent = send(sock, b->data + done, b->len - done, MSG_NOSIGNAL);
        if (sent < 0 && errno == EINTR) continue;
        if (sent <= 0) return 0;
        done += sent;
    }
    return 1;
}

/* (kind, value): what this process tells a run-here's tracer */
static int send_int(int sock, const char *kind, long value) {
    struct buf b = {0};
    put_u32(&b, 0);
    put_head(&b, '(', 2);
    put_str(&b, kind);
    put(&b, "i", 1);
    put_u32(&b, (uint32_t)value);
    int ok = finish(&b) && send_rest(sock, &b, 0);
    free(b.data);
    return ok;
}

static int send_request(int sock, struct buf *b) {
    int fds[3] = {0, 1, 2};
    char control[CMSG_SPACE(sizeof fds)] = {0};
    struct iovec iov = {b->data, b->len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                         .msg_controllen = sizeof control};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof fds);
    memcpy(CMSG_DATA(c), fds, sizeof fds);
    ssize_t sent;
    do sent = sendmsg(sock, &msg, MSG_NOSIGNAL); while (sent < 0 && errno == EINTR);
    return sent >= 0 && send_rest(sock, b, sent);
}

/* -- the answers: (str, int) or (str, bytes), fds riding on them ---------------------------- */

struct answer {
    char kind[16];
    long value;                             /* an int's */
    const unsigned char *data;              /* a bytes' (in raw) */
    size_t data_len;
    int fds[3], nfds;
    unsigned char *raw;
};

/* Reads n bytes; fds sent with them are kept in a (close-on-exec), those past room closed. */
static int read_exactly(int sock, unsigned char *to, size_t n, struct answer *a) {
    while (n) {
        char control[CMSG_SPACE(sizeof a->fds)];
        struct iovec iov = {to, n};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                             .msg_controllen = sizeof control};
        ssize_t got = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
        if (got < 0 && errno == EINTR) continue;    /* a forwarded signal */
        if (got <= 0) return 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
            size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < count; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(c) + i * sizeof fd, sizeof fd);
                if (a->nfds < 3) a->fds[a->nfds++] = fd;
                else close(fd);
            }
        }
        to += got;
        n -= got;
    }
    return 1;
}

static void release(struct answer *a) {
    for (int i = 0; i < a->nfds; i++) close(a->fds[i]);
    a->nfds = 0;
    free(a->raw);
    a->raw = NULL;
}

/* One answer (kind, int) or (kind, bytes): 1 with a filled in (release it); 0 at the end of
 * the stream or on anything else (a "refused" carries a str). */
static int answer(int sock, struct answer *a) {
    unsigned char head[4];
    memset(a, 0, sizeof *a);
    if (!read_exactly(sock, head, 4, a)) goto bad;
    uint32_t size = head[0] | head[1] << 8 | head[2] << 16 | (uint32_t)head[3] << 24;
    if (size > MAX_MESSAGE || !(a->raw = malloc(size ? size : 1))
            || !read_exactly(sock, a->raw, size, a)) goto bad;
    const unsigned char *p = a->raw, *end = a->raw + size;
    int type = *p++ & 0x7f;                         /* without FLAG_REF */
    if (type == ')' && p < end && *p == 2) p += 1;
    else if (type == '(' && end - p >= 4 && p[0] == 2 && !p[1] && !p[2] && !p[3]) p += 4;
    else goto bad;
    if (p >= end) goto bad;
    type = *p++ & 0x7f;
    size_t len;
    if ((type == 'z' || type == 'Z') && p < end) len = *p++;
    else if ((type == 'a' || type == 'A' || type == 'u' || type == 't') && end - p >= 4) {
        len = p[0] | p[1] << 8 | p[2] << 16 | (size_t)p[3] << 24;
        p += 4;
    } else goto bad;
    if ((size_t)(end - p) < len || len >= sizeof a->kind) goto bad;
    memcpy(a->kind, p, len);
    a->kind[len] = 0;
    p += len;
    if (end - p == 5 && (*p & 0x7f) == 'i') {
        a->value = (int32_t)(p[1] | p[2] << 8 | p[3] << 16 | (uint32_t)p[4] << 24);
        return 1;
    }
    if (end - p >= 5 && (*p & 0x7f) == 's') {
        a->data_len = p[1] | p[2] << 8 | p[3] << 16 | (size_t)p[4] << 24;
        a->data = p + 5;
        if ((size_t)(end - a->data) == a->data_len) return 1;
    }
bad:
    release(a);
    return 0;
}

/* -- a run-here's program: this process's child ----------------------------------------------- */

struct spawn_head {                         /* clientspawn.py: SPAWN_HEAD */
    uint32_t flags, seccomp_flags, insns, prot, argc, envc;
    uint64_t slot_base, area_size, cell_base, cells_size;
};
#define SPAWN_LISTENER 1

struct spawn {
    struct spawn_head head;
    const unsigned char *filter;
    char *path, **argv, **envp;
    int area, report, hand;                 /* the fds that came with it */
};

static volatile pid_t tracer;
static pid_t program;                       /* the run-here's child, once forked */
static int go = -1;                         /* its go pipe's write end */
static int tty = -1;                        /* the terminal whose foreground it has */

/* Where the spawn blob's parts are; 0 if it is not one (the strings must all end in it). */
static int unpack(struct answer *a, struct spawn *s) {
    if (a->nfds != 3 || a->data_len < sizeof s->head) return 0;
    memcpy(&s->head, a->data, sizeof s->head);
    const unsigned char *p = a->data + sizeof s->head, *end = a->data + a->data_len;
    if (s->head.insns == 0 || s->head.insns > 4096 || (size_t)(end - p) < s->head.insns * 8u
            || s->head.argc == 0 || s->head.argc > (1u << 20) || s->head.envc > (1u << 20))
        return 0;
    s->filter = p;
    p += s->head.insns * 8u;
    size_t n = 1 + s->head.argc + s->head.envc;
    char **strings = calloc(n + 2, sizeof *strings);        /* two NULL ends */
    if (!strings) return 0;
    for (size_t i = 0; i < n; i++) {
        const unsigned char *nul = p < end ? memchr(p, 0, end - p) : NULL;
        if (!nul) { free(strings); return 0; }
        strings[i + (i > s->head.argc)] = (char *)p;       /* argv's NULL after its last */
        p = nul + 1;
    }
    s->path = strings[0];
    s->argv = strings + 1;
    s->envp = strings + 2 + s->head.argc;
    s->area = a->fds[0];
    s->report = a->fds[1];
    s->hand = a->fds[2];
    return 1;
}

static _Noreturn void child_failed(int report, int err) {
    char text[16];
    int n = snprintf(text, sizeof text, "%d", err);
    ssize_t ignored = write(report, text, n);
    (void)ignored;
    _exit(err == EACCES || err == ENOEXEC ? NOT_EXECUTABLE : err == ENOENT ? NOT_FOUND
          : INTERNAL);
}

/* Close every fd but 0-2 and these two (close_range between them, else one by one). */
static void close_others(int a, int b) {
    int keep[5] = {0, 1, 2, a < b ? a : b, a < b ? b : a};
    unsigned low = 0;
    for (int i = 0; i < 5; i++) {
        if ((unsigned)keep[i] > low)
            if (syscall(SYS_close_range, low, keep[i] - 1, 0) != 0)
                for (int fd = low; fd < keep[i]; fd++) close(fd);
        if ((unsigned)keep[i] + 1 > low) low = keep[i] + 1;
    }
    if (syscall(SYS_close_range, low, ~0u, 0) != 0) {
        long max = sysconf(_SC_OPEN_MAX);
        for (long fd = low; fd < (max > 0 ? max : 1024); fd++) close(fd);
    }
}

/* launcher.py's _child, here: waits for the tracer's seize, then sets itself up and execs. */
static _Noreturn void be_program(struct spawn *s, int ready, int go_r) {
    setpgid(0, 0);
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigemptyset(&dfl.sa_mask);
    for (int sig = 1; sig < NSIG; sig++)        /* the program starts with every default */
        if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, NULL);
    prctl(PR_SET_PTRACER, tracer, 0, 0, 0);     /* (Yama) the tracer is no ancestor of ours */
    char c = 'r';
    if (write(ready, &c, 1) != 1) _exit(INTERNAL);
    close(ready);
    if (read(go_r, &c, 1) != 1 || c != 'x') _exit(INTERNAL);  /* not seized: the run failed */
    close(go_r);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    void *base = (void *)(uintptr_t)s->head.slot_base;
    if (mmap(base, s->head.area_size, s->head.prot, MAP_SHARED | MAP_FIXED_NOREPLACE,
             s->area, 0) != base) child_failed(s->report, errno);
    void *cells = (void *)(uintptr_t)s->head.cell_base;
    if (s->head.cells_size && mmap(cells, s->head.cells_size, PROT_READ | PROT_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) != cells)
        child_failed(s->report, errno);
    struct rlimit none_at_all = {0, 0};
    setrlimit(RLIMIT_CORE, &none_at_all);
    close_others(s->report, s->hand);       /* (both close on exec) */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) child_failed(s->report, errno);
    struct { unsigned short len; const void *filter; } prog = {s->head.insns, s->filter};
    long listener = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, s->head.seccomp_flags, &prog);
    if (listener < 0) child_failed(s->report, errno);
    if (s->head.flags & SPAWN_LISTENER) {
        char text[16];
        int n = snprintf(text, sizeof text, "%ld", listener);
        if (write(s->hand, text, n) != n) child_failed(s->report, errno);
    }
    execve(s->path, s->argv, s->envp);
    child_failed(s->report, errno);
}

/* Reaps what ends: the program after its tracer has seen it end, and the orphans of its tree
 * that come to this process (a subreaper, as a cold appvirt is). */
static void reap(int sig) {
    (void)sig;
    int saved = errno;
    while (waitpid(-1, NULL, WNOHANG) > 0) {}
    errno = saved;
}

/* An fd of the controlling terminal when this process's group is in its foreground. */
static int foreground_tty(void) {
    for (int fd = 0; fd < 3; fd++)
        if (isatty(fd) && tcgetpgrp(fd) == getpgrp()) return fd;
    return -1;
}

/* The program forked, in a group of its own (the terminal's foreground one if ours was),
 * waiting for go; its pid, or 0. */
static pid_t spawn_program(struct answer *a) {
    struct spawn s;
    if (program || !unpack(a, &s)) return 0;
    int ready[2], go_pipe[2];
    if (pipe2(ready, O_CLOEXEC) != 0) return 0;
    if (pipe2(go_pipe, O_CLOEXEC) != 0) {
        close(ready[0]);
        close(ready[1]);
        return 0;
    }
    struct sigaction sa = {.sa_handler = reap, .sa_flags = SA_RESTART | SA_NOCLDSTOP};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGCHLD, &sa, NULL);
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    tty = foreground_tty();
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);       /* no handler of ours runs in the child */
    pid_t pid = fork();
    if (pid == 0) {
        close(ready[0]);
        close(go_pipe[1]);
        be_program(&s, ready[1], go_pipe[0]);
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    free(s.argv - 1);
    close(ready[1]);
    close(go_pipe[0]);
    char c;
    ssize_t got;
    do got = pid > 0 ? read(ready[0], &c, 1) : 0; while (got < 0 && errno == EINTR);
    close(ready[0]);
    if (got != 1) {
        close(go_pipe[1]);
        return 0;
    }
    program = pid;
    go = go_pipe[1];
    setpgid(pid, pid);                          /* (both sides, as a shell does) */
    if (tty >= 0 && tcsetpgrp(tty, pid) != 0) tty = -1;     /* Ctrl-C goes to its group */
    return pid;
}

/* The program stopped for the terminal: give the terminal back and stop, so the shell sees a
 * stopped job; when continued, resume the program (launcher.py: _suspend_like_the_program). */
static void suspend_like_the_program(void) {
    if (tty < 0) return;
    tcsetpgrp(tty, getpgrp());
    kill(getpid(), SIGSTOP);
    if (tcgetpgrp(tty) == getpgrp()) tcsetpgrp(tty, program);
    killpg(program, SIGCONT);
}

/* The run-here's end: the terminal back, the program (ended, or never let go) reaped. */
static void end_program(void) {
    if (!program) return;
    if (tty >= 0) tcsetpgrp(tty, getpgrp());
    if (go >= 0) close(go);                     /* a child never seized ends at once */
    while (waitpid(program, NULL, 0) < 0 && errno == EINTR) {}
    reap(0);
}

/* -- while the run goes on ------------------------------------------------------------------ */

static int asked;                           /* the server was asked (or there is none) */

static void forward(int sig) {
    int saved = errno;
    kill(tracer, sig);                      /* the tracer passes it on to its program */
    errno = saved;
}

static void forward_signals(void) {
    struct sigaction sa = {.sa_handler = forward, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < N_FORWARDED; i++) sigaction(FORWARDED[i], &sa, NULL);
}

static _Noreturn void die_of(int sig) {      /* the tracer was killed: die the same way */
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigemptyset(&dfl.sa_mask);
    for (size_t i = 0; i < N_FORWARDED; i++) sigaction(FORWARDED[i], &dfl, NULL);
    if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, NULL);
    sigset_t only;
    sigemptyset(&only);
    sigaddset(&only, sig);
    sigprocmask(SIG_UNBLOCK, &only, NULL);
    kill(getpid(), sig);
    _exit(128 + sig);
}

/* The run's exit status, or -1 when it is to start cold (no server, or refused). */
static int run_warm(char **args) {
    char interp[PATH_MAX];
    if (!interpreter(interp, sizeof interp)) return -1;     /* the Python client may ask */
    asked = 1;
    int sock = connect_server();
    if (sock < 0) return -1;
    struct buf b = {0};
    struct answer a;
    if (!request(&b, interp, args) || !send_request(sock, &b) ||
            !answer(sock, &a) || strcmp(a.kind, "pid") != 0) {
        if (b.data) free(b.data);
        close(sock);
        return -1;
    }
    free(b.data);
    tracer = a.value;
    release(&a);
    forward_signals();
    signal(SIGTTOU, SIG_IGN);               /* the terminal's group is set from behind */
    for (;;) {
        if (!answer(sock, &a)) {
            end_program();
            fputs("appvirt: internal error: the warm server's tracer ended without a status\n",
                  stderr);
            return INTERNAL;
        }
        if (strcmp(a.kind, "spawn") == 0) {
            pid_t pid = spawn_program(&a);
            release(&a);
            send_int(sock, "child", pid);   /* 0: the tracer reports the failure */
            continue;
        }
        release(&a);
        if (strcmp(a.kind, "seized") == 0 && go >= 0) {
            char c = 'x';
            if (write(go, &c, 1) != 1) {}   /* its end says what it saw */
            close(go);
            go = -1;
        } else if (strcmp(a.kind, "stopped") == 0) {
            suspend_like_the_program();
        } else if (strcmp(a.kind, "exit") == 0) {
            end_program();
            return a.value & 0xff;
        } else if (strcmp(a.kind, "status") == 0) {
            end_program();
            int status = a.value;
            if (WIFSIGNALED(status)) {
                close(sock);
                die_of(WTERMSIG(status));
            }
            return WIFEXITED(status) ? WEXITSTATUS(status) : INTERNAL;
        }
    }
}

int main(int argc, char **argv) {
    find_script();
    const char *server = getenv("APPVIRT_SERVER");
    if (argc > 1 && strcmp(argv[1], "run") == 0 && !getenv("_APPVIRT_COMPLETE") && script[0]
            && !(server && strcmp(server, "off") == 0)) {
        int status = run_warm(argv + 1);
        if (status >= 0) return status;
        if (asked) setenv(ASKED_ENV, "1", 1);
    }
    cold(argv);
}
