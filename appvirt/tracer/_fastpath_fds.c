/* The guest paths of the program's fds to upper-layer objects, so that a call naming one
 * (fchown, fchmod and futimens of a file it writes, an *at call relative to a directory fd)
 * need not readlink /proc/TID/fd/N at each stop: 3.9 µs here, the dearest call of tar's stops
 * (bench/results/2026-12-06-tracer-calls.md).
 *
 * The tracer sees neither close nor dup2, so an entry is a guess of what fd N of a thread is.
 * It holds when a duplicate of the fd (pidfd_getfd) is the entry's inode, and that inode has
 * no other name (a directory, or a link count of 1): 2.1 µs. Its path stays that inode's name
 * while nothing renames or removes it, and only this run changes the upper layer: the
 * engine's own removals and moves drop the entries at and below the names they change
 * (note_made), and every stop Python handles drops them all (Engine_wait). An entry is made
 * when an open the engine made creates a file (note_created: the lstat it makes anyway), or
 * from a path read of the fd's link, once the fd's next use finds that path naming the fd's
 * inode. Fds to the host's objects are never kept: other processes may rename those.
 */
#include "_fastpath.h"

#define FD_ENTRIES 64                /* a power of two */
#define FD_PIDFDS 16
#define FD_PATH_MAX 1024             /* longer guest paths are read each time */

typedef struct {
    pid_t tid;                       /* 0: free */
    int fd;
    int checked;                     /* dev and ino are the object's: else a candidate */
    dev_t dev;
    ino_t ino;
    unsigned short len;
    char guest[FD_PATH_MAX];
} FdEntry;

typedef struct {
    pid_t tid;                       /* 0: free */
    int pidfd;
} ThreadFd;

struct FdCache {
    FdEntry entry[FD_ENTRIES];
    ThreadFd pidfd[FD_PIDFDS];       /* the threads' pidfds, replaced in turn */
    int next_pidfd;
};

FdCache *fds_new(void)
{
    return PyMem_Calloc(1, sizeof(FdCache));
}

static void drop_pidfd(ThreadFd *t)
{
    if (t->tid)
        close(t->pidfd);
    t->tid = 0;
}

void fds_free(FdCache *c)
{
    if (c == NULL)
        return;
    for (int i = 0; i < FD_PIDFDS; i++)
        drop_pidfd(&c->pidfd[i]);
    PyMem_Free(c);
}

static FdEntry *slot(FdCache *c, pid_t tid, long fd)
{
    return &c->entry[((unsigned)tid * 31u + (unsigned)fd) & (FD_ENTRIES - 1)];
}

/* A pidfd of the thread itself, held; -1. */
static int thread_pidfd(FdCache *c, pid_t tid)
{
    for (int i = 0; i < FD_PIDFDS; i++)
        if (c->pidfd[i].tid == tid)
            return c->pidfd[i].pidfd;
    int pidfd = (int)syscall(SYS_pidfd_open, tid, PIDFD_THREAD_);
    if (pidfd < 0)
        return -1;
    ThreadFd *t = &c->pidfd[c->next_pidfd];
    c->next_pidfd = (c->next_pidfd + 1) % FD_PIDFDS;
    drop_pidfd(t);
    t->tid = tid;
    t->pidfd = pidfd;
    return pidfd;
}

/* A copy of the thread's fd (the same open file), or -1. A held pidfd of a thread gone
 * (ESRCH: its tid may be another's now) is replaced once. */
int program_fd(FdCache *c, pid_t tid, long fd)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        int pidfd = thread_pidfd(c, tid);
        if (pidfd < 0)
            return -1;
        int mine = (int)syscall(SYS_pidfd_getfd, pidfd, (int)fd, 0);
        if (mine >= 0 || errno != ESRCH)
            return mine;
        for (int i = 0; i < FD_PIDFDS; i++)
            if (c->pidfd[i].tid == tid)
                drop_pidfd(&c->pidfd[i]);
    }
    return -1;
}

/* A copy of the thread's fd and its object's stat; -1 (no such fd, or thread). */
int fd_object(FdCache *c, pid_t tid, long fd, struct stat *st)
{
    int mine = program_fd(c, tid, fd);
    if (mine >= 0 && fstat(mine, st) < 0) {
        close(mine);
        return -1;
    }
    return mine;
}

/* (a directory removed has no link left) */
static int sole_name(const struct stat *st)
{
    return S_ISDIR(st->st_mode) ? st->st_nlink != 0 : st->st_nlink == 1;
}

static void keep(FdEntry *e, pid_t tid, long fd, const struct stat *st, const char *guest,
                 Py_ssize_t len)
{
    e->tid = 0;
    if (len <= 0 || len >= FD_PATH_MAX || !sole_name(st))
        return;
    memmove(e->guest, guest, (size_t)len + 1);
    e->len = (unsigned short)len;
    e->fd = (int)fd;
    e->dev = st->st_dev;
    e->ino = st->st_ino;
    e->checked = 1;
    e->tid = tid;
}

/* Whether guest (len bytes) names, in the upper layer, the object st is. */
static int names_it(Engine *self, const char *guest, Py_ssize_t len, const struct stat *st)
{
    struct stat now;
    return upper_lstat(self, guest, (size_t)len, &now) == 0
           && now.st_dev == st->st_dev && now.st_ino == st->st_ino;
}

/* fd_path with the engine's entries: the guest path of what the thread's fd (or cwd) is. A
 * path read of an upper object is a candidate, checked at the key's next call (its inode the
 * fd's, and the path naming it): a key used once costs nothing more than the readlink.
 * `dup` (unless NULL) is set to the copy of the fd the check made, when the path is an
 * entry's and the object no symlink, else -1: the caller closes it. */
Py_ssize_t fd_path_of(Engine *self, pid_t tid, long dirfd, char *dir, int *in_upper, int *dup)
{
    if (dup != NULL)
        *dup = -1;
    FdCache *c = self->fds;
    if (dirfd < 0 || dirfd > INT32_MAX || c == NULL || self->upper_len == 0)
        return fd_path(self->upper, self->upper_len, tid, dirfd, dir, in_upper);
    FdEntry *e = slot(c, tid, dirfd);
    if (e->tid == tid && e->fd == dirfd) {
        struct stat st;
        int mine = fd_object(c, tid, dirfd, &st);
        int ok = mine >= 0 && sole_name(&st);
        if (ok && e->checked)
            ok = e->dev == st.st_dev && e->ino == st.st_ino;
        else if (ok && (ok = names_it(self, e->guest, e->len, &st)))
            keep(e, tid, dirfd, &st, e->guest, e->len);
        if (ok && dup != NULL && !S_ISLNK(st.st_mode)) {
            *dup = mine;
            mine = -1;
        }
        if (mine >= 0)
            close(mine);
        if (ok) {
            memcpy(dir, e->guest, (size_t)e->len + 1);
            if (in_upper != NULL)
                *in_upper = 1;
            self->fd_paths_known++;
            return e->len;
        }
    }
    int up;
    Py_ssize_t n = fd_path(self->upper, self->upper_len, tid, dirfd, dir, &up);
    if (in_upper != NULL)
        *in_upper = up;
    e->tid = 0;
    if (n > 0 && n < FD_PATH_MAX && up) {            /* a candidate */
        memcpy(e->guest, dir, (size_t)n + 1);
        e->len = (unsigned short)n;
        e->fd = (int)dirfd;
        e->checked = 0;
        e->tid = tid;
    }
    return n;
}

/* The thread's fd `fd` is the upper object `guest`, whose lstat st is (an open the engine
 * made created it: note_created). */
void fds_opened(Engine *self, pid_t tid, long fd, const char *guest, const struct stat *st)
{
    if (self->fds != NULL && fd >= 0 && fd <= INT32_MAX)
        keep(slot(self->fds, tid, fd), tid, fd, st, guest, (Py_ssize_t)strlen(guest));
}

/* The name `guest` (len bytes) was removed, moved or made: the entries at and below it go. */
void fds_forget_path(Engine *self, const char *guest, Py_ssize_t len)
{
    if (self->fds == NULL)
        return;
    for (int i = 0; i < FD_ENTRIES; i++) {
        FdEntry *e = &self->fds->entry[i];
        if (e->tid && e->len >= len && memcmp(e->guest, guest, (size_t)len) == 0
                && (e->len == len || e->guest[len] == '/' || len == 1))
            e->tid = 0;
    }
}

/* Python may have changed anything: every entry goes (the pidfds stay). */
void fds_forget_all(Engine *self)
{
    if (self->fds == NULL)
        return;
    for (int i = 0; i < FD_ENTRIES; i++)
        self->fds->entry[i].tid = 0;
}

/* The thread is gone: its entries and pidfd go. */
void fds_forget_thread(Engine *self, pid_t tid)
{
    if (self->fds == NULL)
        return;
    for (int i = 0; i < FD_ENTRIES; i++)
        if (self->fds->entry[i].tid == tid)
            self->fds->entry[i].tid = 0;
    for (int i = 0; i < FD_PIDFDS; i++)
        if (self->fds->pidfd[i].tid == tid)
            drop_pidfd(&self->fds->pidfd[i]);
}
