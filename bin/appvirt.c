/* The `appvirt` executable when a C compiler was there at install time: the warm-start client
 * of appvirt/warm/client.py in C, in front of the Python one.
 *
 * A new interpreter takes 10 to 15 ms to start before it can ask the warm server anything: a
 * third of a warm `appvirt run -- true`. This program asks at once. It hands an `appvirt run`
 * line to the server exactly as the Python client does (same socket, same marshalled request
 * with fds 0-2, same answers, same signals forwarded, same death), and for every other command
 * line, or when there is no server or it refuses, it becomes the Python `appvirt` installed
 * beside it (`appvirt-py`, the script whose first line pip made the install's interpreter).
 *
 * Its origin is ("c1", that interpreter): the server runs the line only if the interpreter is
 * its own (same real file, same venv), so the run is the one the cold path would start.
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
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define COLD_SCRIPT "appvirt-py"
#define ORIGIN_TAG "c1"             /* appvirt/warm/client.py: C_ORIGIN */
#define SOCKET_NAME "server.sock"   /* appvirt/warm/wire.py */
#define MAX_MESSAGE (16 << 20)
#define INTERNAL 125                /* ExitStatus.INTERNAL */
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

/* -- when to ask ---------------------------------------------------------------------------- */

static int has_terminal(void) {
    char buf[1024];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return 0;
    p += 2;                                 /* state ppid pgrp session tty_nr */
    for (int field = 0; field < 4 && p; field++) {
        p = strchr(p, ' ');
        if (p) p++;
    }
    return p && strtol(p, NULL, 10) != 0;
}

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

/* ("run", ("c1", interpreter), [arg bytes...], {name bytes: value bytes}) */
static int request(struct buf *b, const char *interp, char **args) {
    put_u32(b, 0);                          /* the length, filled in below */
    put_head(b, '(', 4);
    put_str(b, "run");
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
    if (b->failed || b->len - 4 > MAX_MESSAGE) return 0;
    uint32_t size = b->len - 4;
    unsigned char le[4] = {size, size >> 8, size >> 16, size >> 24};
    memcpy(b->data, le, 4);
    return 1;
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
    if (sent < 0) return 0;
    for (size_t done = sent; done < b->len; done += sent) {
        do sent = send(sock, b->data + done, b->len - done, MSG_NOSIGNAL);
        while (sent < 0 && errno == EINTR);
        if (sent <= 0) return 0;
    }
    return 1;
}

/* -- the answers: (str, int) ---------------------------------------------------------------- */

static int read_exactly(int sock, unsigned char *to, size_t n) {
    while (n) {
        ssize_t got = recv(sock, to, n, 0);
        if (got < 0 && errno == EINTR) continue;    /* a forwarded signal */
        if (got <= 0) return 0;
        to += got;
        n -= got;
    }
    return 1;
}

/* One answer ("kind", int): 1 with kind (NUL-ended) and value; 0 at the end of the stream or
 * on anything else (a "refused" carries a str). */
static int answer(int sock, char *kind, size_t kind_size, long *value) {
    unsigned char head[4], msg[256];
    if (!read_exactly(sock, head, 4)) return 0;
    uint32_t size = head[0] | head[1] << 8 | head[2] << 16 | (uint32_t)head[3] << 24;
    if (size > sizeof msg || !read_exactly(sock, msg, size)) return 0;
    const unsigned char *p = msg, *end = msg + size;
    int type = *p++ & 0x7f;                         /* without FLAG_REF */
    if (type == ')' && p < end && *p == 2) p += 1;
    else if (type == '(' && end - p >= 4 && p[0] == 2 && !p[1] && !p[2] && !p[3]) p += 4;
    else return 0;
    if (p >= end) return 0;
    type = *p++ & 0x7f;
    size_t len;
    if ((type == 'z' || type == 'Z') && p < end) len = *p++;
    else if ((type == 'a' || type == 'A' || type == 'u' || type == 't') && end - p >= 4) {
        len = p[0] | p[1] << 8 | p[2] << 16 | (size_t)p[3] << 24;
        p += 4;
    } else return 0;
    if ((size_t)(end - p) < len || len >= kind_size) return 0;
    memcpy(kind, p, len);
    kind[len] = 0;
    p += len;
    if (end - p != 5 || (*p & 0x7f) != 'i') return 0;
    *value = (int32_t)(p[1] | p[2] << 8 | p[3] << 16 | (uint32_t)p[4] << 24);
    return 1;
}

/* -- while the run goes on ------------------------------------------------------------------ */

static volatile pid_t tracer;
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
    char kind[16];
    long value;
    if (!request(&b, interp, args) || !send_request(sock, &b) ||
            !answer(sock, kind, sizeof kind, &value) || strcmp(kind, "pid") != 0) {
        free(b.data);
        close(sock);
        return -1;
    }
    free(b.data);
    tracer = value;
    forward_signals();
    if (!answer(sock, kind, sizeof kind, &value)) {
        fputs("appvirt: internal error: the warm server's tracer ended without a status\n",
              stderr);
        return INTERNAL;
    }
    if (strcmp(kind, "exit") == 0) return value & 0xff;
    int status = value;
    if (WIFSIGNALED(status)) {
        close(sock);
        die_of(WTERMSIG(status));
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : INTERNAL;
}

int main(int argc, char **argv) {
    find_script();
    const char *server = getenv("APPVIRT_SERVER");
    if (argc > 1 && strcmp(argv[1], "run") == 0 && !getenv("_APPVIRT_COMPLETE") && script[0]
            && !(server && strcmp(server, "off") == 0) && !has_terminal()) {
        int status = run_warm(argv + 1);
        if (status >= 0) return status;
        if (asked) setenv(ASKED_ENV, "1", 1);
    }
    cold(argv);
}
