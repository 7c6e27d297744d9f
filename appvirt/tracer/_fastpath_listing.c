/* getdents64, answered by the engine (see _fastpath.c).
 *
 * Of a plain directory the kernel's own listing is the view's: the call runs. Of an owned
 * directory the program's fd is the upper directory itself, whose listing also holds the
 * overlay's own names (.wh.*); the engine serves the listing the handlers serve (listing.py,
 * fs/dirents.py): "." and "..", then the upper directory's names but the overlay's, sorted;
 * of a merged one, the upper directory's names and the host's it neither has nor whites out;
 * entry i at position i, d_off the next one's, the position kept in the fd's own offset
 * (moved through a copy of the program's fd, pidfd_getfd), so that lseek, rewinddir, telldir
 * and seekdir behave as on any directory, whichever loop serves the next call.
 */
#include "_fastpath.h"

#include <dirent.h>

#define DIRENT64_HEAD 19                 /* d_ino, d_off, d_reclen, d_type */

typedef struct {
    uint64_t ino;
    unsigned char type;
    size_t name;                     /* its offset in the names buffer */
    unsigned short len;
} Name;

typedef struct {
    Name *at;
    size_t n, cap;
    char *names;
    size_t used, room;
} Names;

static void free_names(Names *l)
{
    PyMem_Free(l->at);
    PyMem_Free(l->names);
}

static int add_name(Names *l, const char *name, size_t len, unsigned char type, uint64_t ino)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        Name *at = PyMem_Realloc(l->at, cap * sizeof *at);
        if (at == NULL)
            return -1;
        l->at = at;
        l->cap = cap;
    }
    if (l->used + len + 1 > l->room) {
        size_t room = l->room ? 2 * l->room : 4096;
        while (room < l->used + len + 1)
            room *= 2;
        char *names = PyMem_Realloc(l->names, room);
        if (names == NULL)
            return -1;
        l->names = names;
        l->room = room;
    }
    memcpy(l->names + l->used, name, len + 1);
    l->at[l->n++] = (Name){ino, type, l->used, (unsigned short)len};
    l->used += len + 1;
    return 0;
}

static int by_name(const void *a, const void *b, void *names)
{
    const Name *x = a, *y = b;
    /* Python's order of bytes: the common prefix, then the shorter first */
    int c = memcmp((const char *)names + x->name, (const char *)names + y->name,
                   x->len < y->len ? x->len : y->len);
    return c ? c : (int)x->len - (int)y->len;
}

/* The names of a directory (read from dfd) but the overlay's (.wh.*), as hostio.scan and
 * OverlayView.listdir see them, sorted; a whiteout's name, without its prefix, goes to
 * `whiteouts` instead (unless NULL). 0, or -1. */
static int dir_names(int dfd, Names *out, Names *whiteouts)
{
    char buf[32768];
    for (;;) {
        long n = syscall(SYS_getdents64, dfd, buf, sizeof buf);
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        for (long at = 0; at < n; ) {
            uint64_t ino;
            unsigned short reclen;
            memcpy(&ino, buf + at, 8);
            memcpy(&reclen, buf + at + 16, 2);
            unsigned char type = (unsigned char)buf[at + 18];
            const char *name = buf + at + DIRENT64_HEAD;
            at += reclen;
            size_t len = strlen(name);
            if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
                continue;
            if (len >= 4 && memcmp(name, ".wh.", 4) == 0) {
                if (whiteouts != NULL && len > 4
                        && add_name(whiteouts, name + 4, len - 4, 0, 0) < 0)
                    return -1;
                continue;
            }
            if (type == DT_UNKNOWN) {
                struct stat st;
                if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW_) < 0)
                    continue;            /* gone meanwhile, as scan skips it */
                type = (unsigned char)((st.st_mode & S_IFMT) >> 12);
            }
            if (add_name(out, name, len, type, ino) < 0)
                return -1;
        }
    }
    qsort_r(out->at, out->n, sizeof *out->at, by_name, out->names);
    if (whiteouts != NULL)
        qsort_r(whiteouts->at, whiteouts->n, sizeof *whiteouts->at, by_name, whiteouts->names);
    return 0;
}

/* The first n names of l (sorted): name's entry, or NULL. */
static Name *holds(const Names *l, size_t n, const char *name, size_t len)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const Name *m = &l->at[mid];
        int c = memcmp(l->names + m->name, name, m->len < len ? m->len : len);
        if (c == 0)
            c = (int)m->len - (int)len;
        if (c == 0)
            return &l->at[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Whether the upper directory's subdirectory name (in dfd) is opaque (names.OPAQUE_MARKER). */
static int opaque(int dfd, const char *name, size_t len)
{
    char marker[NAME_MAX_ + 16];
    struct stat st;
    if (len + 14 > sizeof marker)
        return 1;
    memcpy(marker, name, len);
    memcpy(marker + len, "/.wh..wh..opq", 14);
    return fstatat(dfd, marker, &st, AT_SYMLINK_NOFOLLOW_) == 0 || errno != ENOENT;
}

/* The view's names of a merged directory, as OverlayView.listdir merges them: the upper
 * directory's (pinned as dfd), then the host's (read from lower) that it neither has nor
 * whites out; sorted. A directory in both layers that is not opaque keeps the host's inode
 * (OverlayFS.kept_identity). 0, or -1. */
static int merged_names(int dfd, int lower, Names *out)
{
    Names whiteouts = {0}, host = {0};
    int rc = -1;
    if (dir_names(dfd, out, &whiteouts) < 0 || dir_names(lower, &host, NULL) < 0)
        goto done;
    size_t mine = out->n;            /* the upper directory's, sorted: searched below */
    for (size_t i = 0; i < host.n; i++) {
        const Name *h = &host.at[i];
        const char *name = host.names + h->name;
        Name *up = holds(out, mine, name, h->len);
        if (up != NULL) {
            if (up->type == DT_DIR && h->type == DT_DIR && !opaque(dfd, name, h->len))
                up->ino = h->ino;
        } else if (!holds(&whiteouts, whiteouts.n, name, h->len)
                   && add_name(out, name, h->len, h->type, h->ino) < 0) {
            goto done;
        }
    }
    if (out->n > mine)
        qsort_r(out->at, out->n, sizeof *out->at, by_name, out->names);
    rc = 0;
done:
    free_names(&whiteouts);
    free_names(&host);
    return rc;
}

/* Entries from position pos (of ".", "..", then names) that fit in count bytes, packed as
 * pack_dirents64 packs them into data; their size, and *next the position after them. */
static size_t pack(const Names *l, uint64_t dot, uint64_t dotdot, long long pos, size_t count,
                   char *data, long long *next)
{
    size_t used = 0;
    long long i = pos > 0 ? pos : 0, total = (long long)l->n + 2;
    for (; i < total; i++) {
        const char *name = i == 0 ? "." : i == 1 ? ".." : l->names + l->at[i - 2].name;
        size_t len = i < 2 ? (size_t)i + 1 : l->at[i - 2].len;
        uint64_t ino = i == 0 ? dot : i == 1 ? dotdot : l->at[i - 2].ino;
        unsigned char type = i < 2 ? DT_DIR : l->at[i - 2].type;
        unsigned short reclen = (unsigned short)((DIRENT64_HEAD + len + 1 + 7) & ~(size_t)7);
        if (used + reclen > count)
            break;
        int64_t off = i + 1;
        char *e = data + used;
        memset(e, 0, reclen);
        memcpy(e, &ino, 8);
        memcpy(e + 8, &off, 8);
        memcpy(e + 16, &reclen, 2);
        e[18] = (char)type;
        memcpy(e + DIRENT64_HEAD, name, len);
        used += reclen;
    }
    *next = i;
    return used;
}

/* The listing of an owned or merged directory dir (n bytes), read through fd, as the handlers
 * serve it: "." and ".." the view's inodes of the directory and its parent (an owned
 * directory's own, its decision holding its parent's; a merged one and its parent, an upper
 * directory too below "/", keep the host's: OverlayFS.kept_identity). `copy`: a copy of the
 * program's fd (the same open file: its offset is the program's) the caller holds, or -1 for
 * one taken here. */
static int layered_listing(Engine *self, pid_t tid, long fd, int copy, const char *dir,
                           Py_ssize_t n, const uint64_t *a)
{
    Operand info;
    char host[PATH_MAX_];
    Py_ssize_t host_len;
    int kind = dir_kind(self, dir, n, host, &host_len, &info);
    uint64_t dotdot = 0;
    if (kind == OWNED) {
        dotdot = info.dotdot;
    } else if (kind == MERGED) {
        const char *slash = memrchr(dir, '/', (size_t)n);
        char parent[PATH_MAX_];
        struct stat up;
        if (slash == NULL || slash == dir)
            return FALLBACK;             /* (a merged directory in "/": Python's) */
        memcpy(parent, dir, (size_t)(slash - dir));
        parent[slash - dir] = 0;
        if (lstat(parent, &up) < 0)
            return FALLBACK;
        dotdot = up.st_ino;
    } else {
        return FALLBACK;
    }
    size_t count = (size_t)(a[2] & 0xFFFFFFFFu);
    int dfd = (int)openat2_(host, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return FALLBACK;
    int lower = kind == MERGED ? (int)openat2_(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    int mine = copy, rc = FALLBACK;
    Names names = {0};
    char *data = NULL;
    struct stat me;
    long long pos, next;
    if ((kind == MERGED && lower < 0) || fstat(kind == MERGED ? lower : dfd, &me) < 0
            || (kind == MERGED ? merged_names(dfd, lower, &names) : dir_names(dfd, &names, NULL))
               < 0
            || (mine < 0 && (mine = program_fd(self->fds, tid, fd)) < 0)
            || (pos = lseek(mine, 0, SEEK_CUR)) < 0)
        goto out;
    size_t room = count < (1u << 20) ? count : (1u << 20);  /* more than any listing here */
    if ((data = PyMem_Malloc(room ? room : 1)) == NULL)
        goto out;
    size_t len = pack(&names, me.st_ino, dotdot, pos, room, data, &next);
    long result = (long)len;
    if (len == 0 && next < (long long)names.n + 2) {
        result = -EINVAL;                /* the buffer cannot hold one entry */
    } else if ((len && write_mem(tid, a[1], data, len) < 0) || lseek(mine, next, SEEK_SET) < 0) {
        goto out;                        /* EFAULT ...: the handlers explain */
    }
    emulate(self, tid, result);
    rc = ANSWERED;
out:
    PyMem_Free(data);
    free_names(&names);
    if (mine >= 0 && mine != copy)
        close(mine);
    if (lower >= 0)
        close(lower);
    close(dfd);
    return rc;
}

int do_getdents64(Engine *self, pid_t tid, const struct __ptrace_syscall_info *in)
{
    long fd = (long)(int)in->seccomp.args[0];
    if (fd < 0)
        return FALLBACK;
    char dir[PATH_MAX_], host[PATH_MAX_];
    Py_ssize_t host_len;
    int in_upper, copy;              /* (the copy of a kept fd's check, or -1) */
    Py_ssize_t n = fd_path_of(self, tid, fd, dir, &in_upper, &copy);
    if (n < 0)
        return FALLBACK;
    if (in_upper) {                  /* (at log level all, only plain listings are answered) */
        int rc = self->owned && !self->log_reads
                 ? layered_listing(self, tid, fd, copy, dir, n, in->seccomp.args) : FALLBACK;
        if (copy >= 0)
            close(copy);
        return rc;
    }
    int kind = dir_kind(self, dir, n, host, &host_len, NULL);
    if (kind == MERGED)              /* the host's directory, merged since it was opened */
        return self->log_reads ? FALLBACK : layered_listing(self, tid, fd, -1, dir, n,
                                                            in->seccomp.args);
    if (kind != PLAIN || (self->log_reads && read_record(self, tid, in, -1, NULL, 0, 0) < 0))
        return FALLBACK;
    let_run(self, tid);
    return ANSWERED;
}
