/* The tracee's strings, and where a call's path operands lie: in a plain, an owned or a
 * NAMES directory (see _fastpath.c), as the program's guest path and as the host path the
 * engine acts on. (What the engine writes into a tracee is _fastpath_answer.c's.) */
#include "_fastpath.h"

/* Read a NUL-terminated string at addr into buf (PATH_MAX_ bytes); its length, or -1. Reads
 * up to page ends only, so a string next to an unmapped page is still read. */
Py_ssize_t read_cstring(pid_t tid, unsigned long long addr, char *buf)
{
    Py_ssize_t got = 0;
    while (got < PATH_MAX_) {
        size_t chunk = 4096 - ((addr + got) & 4095);
        if (chunk > (size_t)(PATH_MAX_ - got))
            chunk = PATH_MAX_ - got;
        struct iovec local = {buf + got, chunk};
        struct iovec remote = {(void *)(uintptr_t)(addr + got), chunk};
        ssize_t n = process_vm_readv(tid, &local, 1, &remote, 1, 0);
        if (n <= 0)
            return -1;
        char *nul = memchr(buf + got, 0, (size_t)n);
        if (nul != NULL)
            return nul - buf;
        got += n;
    }
    return -1;                       /* ENAMETOOLONG: Python says so */
}

long openat2_(const char *path, unsigned long long flags)
{
    struct open_how how = {.flags = flags, .resolve = RESOLVE_NO_SYMLINKS |
                           RESOLVE_NO_MAGICLINKS};
    return syscall(SYS_openat2, AT_FDCWD_, path, &how, sizeof how);
}

/* -- plain directories -------------------------------------------------------------------- */

/* A /proc link to a removed directory: its text no longer names it. */
static int deleted(const char *link, ssize_t n)
{
    return n >= 10 && memcmp(link + n - 10, " (deleted)", 10) == 0;
}

/* The object a thread's fd or cwd (dirfd AT_FDCWD_) is, as a guest path in dir: a host
 * path, or below the upper layer's root the guest path it holds (then *in_upper, unless
 * NULL, is set); its length, or -1. */
Py_ssize_t fd_path(const char *upper, Py_ssize_t upper_len, pid_t tid, long dirfd,
                          char *dir, int *in_upper)
{
    if (in_upper != NULL)
        *in_upper = 0;
    char link[64];
    if (dirfd == AT_FDCWD_)
        snprintf(link, sizeof link, "/proc/%d/cwd", tid);
    else if (dirfd >= 0)
        snprintf(link, sizeof link, "/proc/%d/fd/%ld", tid, dirfd);
    else
        return -1;
    ssize_t n = readlink(link, dir, PATH_MAX_ - 1);
    if (n <= 0 || dir[0] != '/' || deleted(dir, n))
        return -1;
    if (upper_len > 0 && n >= upper_len && memcmp(dir, upper, (size_t)upper_len) == 0
            && (n == upper_len || dir[upper_len] == '/')) {
        memmove(dir, dir + upper_len, (size_t)(n - upper_len));
        n -= upper_len;
        if (n == 0)
            dir[n++] = '/';
        if (in_upper != NULL)
            *in_upper = 1;
    }
    dir[n] = 0;
    return n;
}

static int real_dir(Engine *self, const char *dir, Py_ssize_t len, int *fails);

/* The directory a path call names its object in, and the name: (dir, name), the directory's
 * path being the one the kernel's walk of the view reaches. A "." before a name changes
 * nothing; a ".." goes to the parent of a directory the view shows as itself (real_dir), and
 * leaves the path to Python otherwise, or without an engine (self NULL), *fails (unless
 * NULL) then telling where the kernel's walk fails (real_dir). The base of a relative path
 * is the thread's cwd or dirfd. -1: Python's (an exception may be set). */
int split_path(Engine *self, const char *upper, Py_ssize_t upper_len, pid_t tid, long dirfd,
               const char *path, Py_ssize_t len, char *dir, Py_ssize_t *dir_len,
               const char **name, int *fails)
{
    if (len == 0 || path[len - 1] == '/')
        return -1;
    const char *slash = memrchr(path, '/', (size_t)len);
    const char *nm = slash ? slash + 1 : path;
    Py_ssize_t nlen = len - (nm - path);
    if (nlen > NAME_MAX_ || (nm[0] == '.' && (nlen == 1 || (nlen == 2 && nm[1] == '.'))))
        return -1;
    if (nlen >= 4 && memcmp(nm, ".wh.", 4) == 0)
        return -1;                   /* the overlay's reserved names */
    if (slash && slash > path && slash[-1] == '/')
        return -1;                   /* "a//b", "//a": left to Python */
    Py_ssize_t dl = 0;
    if (path[0] != '/') {
        dl = self != NULL ? fd_path_of(self, tid, dirfd, dir, NULL, NULL)
                          : fd_path(upper, upper_len, tid, dirfd, dir, NULL);
        if (dl < 0)
            return -1;
        if (dl == 1)
            dl = 0;                  /* "/": joined below */
    }
    if (slash) {                     /* the path's own directory part, name by name */
        const char *c = path[0] == '/' ? path + 1 : path;
        while (c < slash) {
            const char *e = memchr(c, '/', (size_t)(slash - c));
            if (e == NULL)
                e = slash;
            Py_ssize_t cl = e - c;
            if (cl == 0)
                return -1;
            if (cl == 2 && c[0] == '.' && c[1] == '.') {
                if (dl > 0) {            /* (the parent of "/" is "/") */
                    if (self == NULL || real_dir(self, dir, dl, fails) != 1)
                        return -1;
                    while (dir[--dl] != '/')
                        ;                /* drop the last name and its slash */
                }
            } else if (!(cl == 1 && c[0] == '.')) {
                if (dl + 1 + cl >= PATH_MAX_)
                    return -1;
                dir[dl++] = '/';
                memcpy(dir + dl, c, (size_t)cl);
                dl += cl;
            }
            c = e + 1;
        }
    }
    if (dl == 0)
        dir[dl++] = '/';
    if (dl + 1 + nlen >= PATH_MAX_)
        return -1;
    dir[dl] = 0;
    *dir_len = dl;
    *name = nm;
    return 0;
}

/* A directory `key` decided here from its parent's decision alone, as FastPath._decide
 * decides it (0: so, and remembered; 1: not so, or not known here: learn decides; -1: an
 * exception is set):
 * - below a plain directory (True): plain too, as OverlayFS.plain_dir(d, parent_plain) says,
 *   when its name is not one of the overlay's reserved names and it is not a symlink (absent:
 *   every name in it is ENOENT, in the view as on the host). find meets each directory of a
 *   tree this way; only while nothing the engine made waits for Python (`made`), so that
 *   the index it was decided with is current;
 * - in an owned one, where neither the host nor the owned one's upper directory has anything
 *   (git probes each objects/XX before making it): plain (absent), as _below_upper decides. */
static int decided_by_parent(Engine *self, PyObject *key)
{
    const char *d = PyBytes_AS_STRING(key);
    Py_ssize_t len = PyBytes_GET_SIZE(key);
    const char *slash = memrchr(d, '/', (size_t)len);
    if (slash == NULL || slash + 1 == d + len
            || (len - (slash + 1 - d) >= 4 && memcmp(slash + 1, ".wh.", 4) == 0)
            || PyDict_Size(self->plain) >= MAX_DIRS_)
        return 1;                    /* (the overlay's reserved names) */
    PyObject *parent_key = PyBytes_FromStringAndSize(d, slash == d ? 1 : slash - d);
    if (parent_key == NULL)
        return -1;
    PyObject *parent = PyDict_GetItemWithError(self->plain, parent_key);     /* borrowed */
    Py_DECREF(parent_key);
    if (parent == NULL)
        return PyErr_Occurred() ? -1 : 1;
    struct stat st;
    if (parent == Py_True) {         /* (not ITSELF, 1: only that directory is the host's) */
        if ((self->made != Py_None && PyList_GET_SIZE(self->made) > 0)
                || (lstat(d, &st) == 0 ? S_ISLNK(st.st_mode) : errno != ENOENT))
            return 1;
    } else {
        PyObject *upper = PyTuple_Check(parent) && PyTuple_GET_SIZE(parent) == 3
                          ? PyTuple_GET_ITEM(parent, 0) : NULL;
        char path[PATH_MAX_];
        if (slash == d || upper == NULL || !PyBytes_Check(upper)
                || PyBytes_GET_SIZE(upper) + (len - (slash - d)) >= PATH_MAX_)
            return 1;                /* ("/" is never owned) */
        if (lstat(d, &st) == 0 || (errno != ENOENT && errno != ENOTDIR))
            return 1;                /* the host's (an opaque directory above hides it) */
        memcpy(path, PyBytes_AS_STRING(upper), (size_t)PyBytes_GET_SIZE(upper));
        memcpy(path + PyBytes_GET_SIZE(upper), slash, (size_t)(len - (slash - d)));
        path[PyBytes_GET_SIZE(upper) + len - (slash - d)] = 0;
        if (lstat(path, &st) == 0 || errno != ENOENT)
            return 1;
    }
    if (PyDict_SetItem(self->plain, key, Py_True) < 0)
        return -1;
    self->decided++;
    return 0;
}

/* What the `plain` dict says of directory `key`, deciding it first (learn) when it says
 * nothing: a new reference, or NULL with an exception set. */
static PyObject *decision_of(Engine *self, PyObject *key)
{
    PyObject *v = PyDict_GetItemWithError(self->plain, key);    /* borrowed */
    if (v != NULL) {
        Py_INCREF(v);
    } else if (!PyErr_Occurred()) {
        int by_parent = decided_by_parent(self, key);
        if (by_parent == 0)
            v = Py_NewRef(Py_True);
        else if (by_parent > 0)
            v = PyObject_CallOneArg(self->learn, key);         /* it records the answer */
    }
    return v;
}

static PyObject *decision(Engine *self, const char *dir, Py_ssize_t len)
{
    PyObject *key = PyBytes_FromStringAndSize(dir, len);
    if (key == NULL)
        return NULL;
    PyObject *v = decision_of(self, key);
    Py_DECREF(key);
    return v;
}

/* -- decided directories held open --------------------------------------------------------
 * A directory the engine answers names in is opened once (O_PATH, reached without a symlink,
 * as every walk here) and held while its decision stands: a name in it is then looked up
 * with one fstatat of that name, not a walk of its whole path twice (the object, then its
 * directory when the name is missing), and changes are made relative to it. Its fd goes
 * with its decision (note_made, forget_dirs); at most DIRFDS_MAX are held (then all go, as
 * the decisions do at fastpath.MAX_DIRS). A forgotten fd is closed only between stops
 * (close_forgotten): an operand of the stop in hand may still hold it, and its number must
 * not name another directory before that stop is answered. */
#define DIRFDS_MAX 256

/* fd to `closing` (the engine's own fds must not leak: when even that fails, it stays open,
 * which is only a leak). */
static void close_later(Engine *self, PyObject *fd)
{
    if (PyList_Append(self->closing, fd) < 0)
        PyErr_Clear();
}

void forget_dirs(Engine *self)
{
    PyObject *key, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(self->dirfds, &pos, &key, &v))
        close_later(self, v);
    PyDict_Clear(self->dirfds);
}

void close_forgotten(Engine *self)
{
    Py_ssize_t n = PyList_GET_SIZE(self->closing);
    if (n == 0)
        return;
    for (Py_ssize_t i = 0; i < n; i++)
        close((int)PyLong_AsLong(PyList_GET_ITEM(self->closing, i)));
    PyList_SetSlice(self->closing, 0, n, NULL);
}

/* The fd of decided directory `key`, whose host path is host: held, or opened now; -1 when
 * it cannot be opened (absent, not a directory, no fd left: the walk of the path does), and
 * *err then the open's errno (0: it failed otherwise). */
static int dir_fd(Engine *self, PyObject *key, const char *host, int *err)
{
    *err = 0;
    PyObject *v = PyDict_GetItemWithError(self->dirfds, key);  /* borrowed */
    if (v != NULL)
        return (int)PyLong_AsLong(v);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    long fd = openat2_(host, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        *err = errno;
        return -1;
    }
    if (PyDict_GET_SIZE(self->dirfds) >= DIRFDS_MAX)
        forget_dirs(self);
    PyObject *n = PyLong_FromLong(fd);
    if (n == NULL || PyDict_SetItem(self->dirfds, key, n) < 0) {
        Py_XDECREF(n);
        PyErr_Clear();
        close((int)fd);
        return -1;
    }
    Py_DECREF(n);
    return (int)fd;
}

/* Directory `key` changed (the engine removed it, or made it anew): its fd goes. */
static void forget_dir(Engine *self, PyObject *key)
{
    PyObject *v = PyDict_GetItemWithError(self->dirfds, key);  /* borrowed */
    if (v == NULL) {
        PyErr_Clear();
        return;
    }
    close_later(self, v);
    if (PyDict_DelItem(self->dirfds, key) < 0)
        PyErr_Clear();
}

/* 1 when dir (len bytes, not "/") is a directory the view shows as itself, reached without a
 * symlink, so that its ".." is its parent by name: an owned or a merged directory (reached
 * through upper-layer directories only), one whose names are decided one by one or that
 * alone is the host's (NAMES, ITSELF), or a plain one that is a directory on the host now (a
 * plain directory may be absent or a file: the view has nothing in it then, and its ".."
 * fails: then *fails, unless NULL, is the kernel's ENOENT or ENOTDIR there). 0: not (an
 * alias reached through a symlink, anything else); -1: an exception is set. */
static int real_dir(Engine *self, const char *dir, Py_ssize_t len, int *fails)
{
    PyObject *v = decision(self, dir, len);
    if (v == NULL)
        return -1;
    int real = PyLong_CheckExact(v) || (self->owned && PyTuple_Check(v)
                                        && PyTuple_GET_SIZE(v) >= 2);
    if (v == Py_True) {
        char host[PATH_MAX_];
        struct stat st;
        memcpy(host, dir, (size_t)len);
        host[len] = 0;
        int there = lstat(host, &st) == 0;
        real = there && S_ISDIR(st.st_mode);
        if (!real && fails != NULL)
            *fails = !there ? (errno == ENOENT || errno == ENOTDIR ? errno : 0)
                     : S_ISLNK(st.st_mode) ? 0 : ENOTDIR;
    }
    Py_DECREF(v);
    return real;
}

/* What dir (len bytes, then a NUL) is (PLAIN, NAMES or ITSELF with its host path in host,
 * OWNED or MERGED with its upper directory there, NEITHER), as the `plain` dict says or
 * learn() decides; for an OWNED
 * or MERGED one, the JSON text of the rule deciding its names (and for an OWNED one the
 * view's inode of its parent) go to info (unless NULL), and to info->dfd the fd of a PLAIN,
 * OWNED, NAMES or MERGED one (dir_fd; for a MERGED one that of its upper directory, and to
 * info->lower_dfd that of the host's) or -1. -1: an exception is set (the stop then goes to
 * Python after it). */
int dir_kind(Engine *self, const char *dir, Py_ssize_t len, char *host, Py_ssize_t *host_len,
             Operand *info)
{
    int kind = NEITHER;
    if (info != NULL) {
        info->dfd = info->lower_dfd = -1;
        info->dfd_errno = 0;
    }
    PyObject *key = PyBytes_FromStringAndSize(dir, len);
    if (key == NULL)
        return -1;
    PyObject *v = decision_of(self, key);
    if (v == NULL) {
        Py_DECREF(key);
        return -1;
    }
    PyObject *first = PyTuple_Check(v) && PyTuple_GET_SIZE(v) > 0 ? PyTuple_GET_ITEM(v, 0)
                                                                  : NULL;
    if (first != NULL && !(PyBytes_Check(first) && PyBytes_GET_SIZE(first) < PATH_MAX_))
        first = NULL;
    if (PyLong_CheckExact(v)) {      /* 0: NAMES, 1: ITSELF (fastpath.ITSELF) */
        kind = PyLong_AsLong(v) == 0 ? NAMES : ITSELF;
        memcpy(host, dir, (size_t)len + 1);     /* a real directory reached without a */
        *host_len = len;                        /* symlink: its host path is its path */
    } else if (v == Py_True) {
        kind = PLAIN;
        memcpy(host, dir, (size_t)len + 1);
        *host_len = len;
    } else if (first != NULL && PyTuple_GET_SIZE(v) == 1) {
        kind = PLAIN;                /* (canonical,): another path of a plain directory */
        *host_len = PyBytes_GET_SIZE(first);
        memcpy(host, PyBytes_AS_STRING(first), (size_t)*host_len + 1);
    } else if (first != NULL && self->owned && (PyTuple_GET_SIZE(v) == 2 || (
                   PyTuple_GET_SIZE(v) == 3 && PyLong_Check(PyTuple_GET_ITEM(v, 2))))
               && PyBytes_Check(PyTuple_GET_ITEM(v, 1))
               && PyBytes_GET_SIZE(PyTuple_GET_ITEM(v, 1)) < RULE_MAX) {
        /* (upper directory, rule, inode of ".."): owned; (upper directory, rule): merged
         * with the host's directory */
        kind = PyTuple_GET_SIZE(v) == 3 ? OWNED : MERGED;
        *host_len = PyBytes_GET_SIZE(first);
        memcpy(host, PyBytes_AS_STRING(first), (size_t)*host_len + 1);
        if (info != NULL) {
            PyObject *rule = PyTuple_GET_ITEM(v, 1);
            info->rule_len = PyBytes_GET_SIZE(rule);
            memcpy(info->rule, PyBytes_AS_STRING(rule), (size_t)info->rule_len);
            if (kind == OWNED)
                info->dotdot = PyLong_AsUnsignedLongLongMask(PyTuple_GET_ITEM(v, 2));
        }
    }
    Py_DECREF(v);
    if (info != NULL && (kind == PLAIN || kind == OWNED || kind == NAMES || kind == MERGED))
        info->dfd = dir_fd(self, key, host, &info->dfd_errno);
    if (info != NULL && kind == MERGED) {
        /* The host's directory is held too, under a key no path is (it starts with NUL). */
        PyObject *lower_key = PyBytes_FromStringAndSize(NULL, len + 1);
        if (lower_key != NULL) {
            PyBytes_AS_STRING(lower_key)[0] = 0;
            memcpy(PyBytes_AS_STRING(lower_key) + 1, dir, (size_t)len);
            int err;
            info->lower_dfd = dir_fd(self, lower_key, dir, &err);
            Py_DECREF(lower_key);
        } else {
            PyErr_Clear();
        }
    }
    Py_DECREF(key);
    return kind;
}

/* key goes from dict, if there: 0, or -1 with an exception set. (Looked up first: a KeyError
 * made and cleared at each change costs more than the lookup.) */
static int discard(PyObject *dict, PyObject *key)
{
    int there = PyDict_Contains(dict, key);
    return there > 0 ? PyDict_DelItem(dict, key) : there;
}

/* What `names` says of the first len bytes of path is forgotten. 0, or -1 with an exception
 * set. */
int forget_name(Engine *self, const char *path, Py_ssize_t len)
{
    if (PyDict_GET_SIZE(self->names) == 0)
        return 0;                    /* (most runs decide no name one by one) */
    PyObject *key = PyBytes_FromStringAndSize(path, len);
    int rc = key != NULL ? discard(self->names, key) : -1;
    Py_XDECREF(key);
    return rc;
}

/* guest, a name in an owned directory the engine just made, removed or moved: the index
 * learns what its upper object is now ((guest, S_IFMT or 0 for nothing) appended to `made`,
 * applied in order by fastpath.FastPath.drain), and what was decided of the name is
 * forgotten, with the stat answer of its directory (whose link count it may change). `kind`:
 * that S_IFMT or 0, when the caller knows it (what it removed is gone, what it made or moved
 * is what it made or moved: another thread's change of the name waits for this stop's end),
 * else KIND_UNKNOWN, and the upper object is looked at. 0, or -1 with an exception set. */
int note_made(Engine *self, const char *guest, int kind)
{
    return note_made_at(self, guest, kind, -1, -1);
}

/* The host path of guest (len bytes) in the upper layer, into host (PATH_MAX_ bytes): 0, or
 * -1 when it is longer than PATH_MAX. */
int upper_path(const Engine *self, const char *guest, size_t len, char *host)
{
    if ((size_t)self->upper_len + len >= PATH_MAX_)
        return -1;
    memcpy(host, self->upper, (size_t)self->upper_len);
    memcpy(host + self->upper_len, guest, len + 1);
    return 0;
}

/* lstat of guest's object in the upper layer (len bytes; its upper path fits in PATH_MAX_,
 * see upper_path): one fstatat of its name in its directory when the engine
 * holds that one open as an owned or a merged directory's upper directory (dirfds follow the
 * decisions), else a walk of its whole upper path. */
int upper_lstat(Engine *self, const char *guest, size_t len, struct stat *st)
{
    const char *slash = memrchr(guest, '/', len);
    if (slash != NULL && slash > guest && len - (size_t)(slash - guest) <= NAME_MAX_ + 1) {
        PyObject *key = PyBytes_FromStringAndSize(guest, slash - guest);
        PyObject *v = key != NULL ? PyDict_GetItemWithError(self->plain, key) : NULL;
        PyObject *fd = v != NULL && PyTuple_Check(v) && PyTuple_GET_SIZE(v) >= 2
                       ? PyDict_GetItemWithError(self->dirfds, key) : NULL;   /* borrowed */
        Py_XDECREF(key);
        if (fd != NULL && PyLong_Check(fd))
            return fstatat((int)PyLong_AsLong(fd), slash + 1, st, AT_SYMLINK_NOFOLLOW_);
        PyErr_Clear();
    }
    char host[PATH_MAX_];
    return upper_path(self, guest, len, host) == 0 ? lstat(host, st) : -1;
}

/* note_made of what a thread's open created (KIND_UNKNOWN), whose fd is `fd` (-1: not known):
 * the fd's entry (_fastpath_fds.c) from the same look at the upper object. */
int note_made_at(Engine *self, const char *guest, int kind, pid_t tid, long fd)
{
    size_t len = strlen(guest);
    unsigned ifmt = (unsigned)kind;
    fds_forget_path(self, guest, (Py_ssize_t)len);
    if (kind == KIND_UNKNOWN) {
        struct stat st;
        if ((size_t)self->upper_len + len >= PATH_MAX_) {
            PyErr_SetString(PyExc_OSError, "an upper path longer than PATH_MAX");
            return -1;
        }
        ifmt = upper_lstat(self, guest, len, &st) == 0 ? (unsigned)(st.st_mode & S_IFMT) : 0;
        if (ifmt != 0 && fd >= 0)
            fds_opened(self, tid, fd, guest, &st);
    }
    PyObject *key = PyBytes_FromStringAndSize(guest, (Py_ssize_t)len);
    PyObject *entry = key != NULL ? Py_BuildValue("(OI)", key, ifmt) : NULL;
    int rc = entry != NULL ? PyList_Append(self->made, entry) : -1;
    if (rc == 0)
        forget_dir(self, key);
    if (rc == 0)
        rc = discard(self->plain, key);
    const char *slash = strrchr(guest, '/');
    if (rc == 0)
        rc = forget_name(self, guest, (Py_ssize_t)len);
    if (rc == 0 && slash != NULL)
        rc = forget_name(self, guest, slash > guest ? slash - guest : 1);
    Py_XDECREF(entry);
    Py_XDECREF(key);
    return rc;
}

/* What the `names` dict says of path (learn_name deciding it first): 1 the host's own object
 * (a name in a NAMES directory); DEVICE_PASSED that, and a device a passthrough rule opens
 * for writing too; 2 a directory of the upper layer whose stat is answered from its upper
 * object (OverlayFS.upper_dir_stat), *shown (unless NULL) then a new reference to
 * that tuple; 0 neither; -1 an exception is set. */
int name_entry(Engine *self, const char *path, PyObject **shown)
{
    PyObject *key = PyBytes_FromString(path);
    if (key == NULL)
        return -1;
    PyObject *v = PyDict_GetItemWithError(self->names, key);    /* borrowed */
    if (v != NULL)
        Py_INCREF(v);
    else if (!PyErr_Occurred())
        v = PyObject_CallOneArg(self->learn_name, key);        /* it records the answer */
    Py_DECREF(key);
    if (v == NULL)
        return -1;
    int got = v == Py_True ? 1 : PyTuple_Check(v) ? 2
              : PyLong_CheckExact(v) && PyLong_AsLong(v) == DEVICE_PASSED ? DEVICE_PASSED : 0;
    if (got == 2 && shown != NULL)
        *shown = v;
    else
        Py_DECREF(v);
    return got;
}

/* dir_len bytes of buf (a directory), then "/" and the name: 0, or -1 when too long. */
int append_name(char *buf, Py_ssize_t dir_len, const char *name, Py_ssize_t nlen)
{
    Py_ssize_t at = dir_len > 1 ? dir_len : 0;      /* a name in "/" */
    if (at + 1 + nlen >= PATH_MAX_)
        return -1;
    buf[at++] = '/';
    memcpy(buf + at, name, (size_t)nlen);
    buf[at + nlen] = 0;
    return 0;
}

/* Where `path` (from dirfd) lies, in op's guest and host: 0 in a plain or owned directory,
 * else -1 (the stop is Python's; *fails as split_path sets it). */
static int place(Engine *self, pid_t tid, long dirfd, const char *path, Py_ssize_t len,
                 Operand *op, int *fails)
{
    const char *name;
    op->dfd = -1;
    op->dfd_errno = 0;
    if (split_path(self, self->upper, self->upper_len, tid, dirfd, path, len, op->guest,
                   &op->guest_dir, &name, fails) < 0)
        return -1;
    op->kind = dir_kind(self, op->guest, op->guest_dir, op->host, &op->host_dir, op);
    if (op->kind != PLAIN && op->kind != OWNED && op->kind != NAMES && op->kind != MERGED)
        return -1;                   /* (in a NAMES directory the name alone may be the host's) */
    Py_ssize_t nlen = len - (name - path);
    if (append_name(op->guest, op->guest_dir, name, nlen) < 0 ||
            append_name(op->host, op->host_dir, name, nlen) < 0)
        return -1;
    op->passed = 0;
    if (op->kind == NAMES) {
        int entry = name_entry(self, op->guest, NULL);
        if (entry != 1 && entry != DEVICE_PASSED)
            return -1;
        op->kind = NAME;
        op->passed = entry == DEVICE_PASSED;
    }
    return 0;
}

#define UPPER_DIR 3                  /* lookup: a directory of a merged one's upper layer */

/* lookup in a MERGED directory, as OverlayView._entry finds a name there: the upper
 * directory's object when it has one (a directory there is UPPER_DIR: merged again, or the
 * program's; find_path tells), nothing when it has the name's whiteout, else the host's
 * object, op then naming it in the host's directory. upper_obj tells which; for a name in
 * neither layer, op names the upper directory's (where a creation makes it) and upper_obj
 * is 1; for a name whited out, 0. */
static int merged_lookup(Operand *op, struct stat *st, int *parent_ok)
{
    *parent_ok = 0;
    const char *name = name_of(op);
    size_t nlen = strlen(name);
    if (op->dfd < 0 || op->lower_dfd < 0 || nlen + 4 > NAME_MAX_)
        return 1;
    op->upper_obj = 1;
    if (fstatat(op->dfd, name, st, AT_SYMLINK_NOFOLLOW_ | AT_NO_AUTOMOUNT_) == 0) {
        *parent_ok = 1;
        return S_ISDIR(st->st_mode) ? UPPER_DIR : 0;
    }
    if (errno != ENOENT)
        return 1;
    char whiteout[NAME_MAX_ + 1];
    struct stat ws;
    memcpy(whiteout, ".wh.", 4);     /* overlay/names.py's whiteout_name */
    memcpy(whiteout + 4, name, nlen + 1);
    if (fstatat(op->dfd, whiteout, &ws, AT_SYMLINK_NOFOLLOW_) == 0) {
        *parent_ok = 1;
        op->upper_obj = 0;
        return -ENOENT;
    }
    if (errno != ENOENT)
        return 1;
    if (fstatat(op->lower_dfd, name, st, AT_SYMLINK_NOFOLLOW_ | AT_NO_AUTOMOUNT_) < 0) {
        *parent_ok = errno == ENOENT;
        return errno == ENOENT ? -ENOENT : 1;     /* in neither: op stays the upper's */
    }
    op->upper_obj = 0;               /* the host's: its path is the guest path */
    memcpy(op->host, op->guest, strlen(op->guest) + 1);
    op->host_dir = op->guest_dir;
    op->dfd = op->lower_dfd;
    *parent_ok = 1;
    return 0;
}

/* The object at dir/name, as a walk that crosses no symlink finds it: 0 and *st; -ENOENT when
 * it is missing (*parent_ok: dir is there), -ENOENT/-ENOTDIR when dir is missing or not a
 * directory (a plain directory may be absent: its plain parent shows that it is); 1 for
 * anything the Python side must explain. */
static int lookup(Operand *op, struct stat *st, int *parent_ok)
{
    if (op->kind == MERGED)
        return merged_lookup(op, st, parent_ok);
    *parent_ok = 0;
    if (op->dfd >= 0) {              /* its directory held open: the name alone */
        if (fstatat(op->dfd, name_of(op), st, AT_SYMLINK_NOFOLLOW_ | AT_NO_AUTOMOUNT_) == 0) {
            *parent_ok = 1;
            return 0;
        }
        *parent_ok = errno == ENOENT;
        return errno == ENOENT ? -ENOENT : 1;
    }
    /* Its directory could not be opened a moment ago, missing or no directory: the path
     * fails at that same step, with no walk of the path and another of its directory below
     * (programs look into absent directories often: ld.so's hwcaps, a locale's aliases) */
    if (op->dfd_errno == ENOENT || op->dfd_errno == ENOTDIR)
        return -op->dfd_errno;
    const char *full = op->host;
    Py_ssize_t dir_len = op->host_dir;
    long fd = openat2_(full, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
        int rc = fstat((int)fd, st);
        close((int)fd);
        *parent_ok = rc == 0;
        return rc == 0 ? 0 : 1;
    }
    if (errno != ENOENT && errno != ENOTDIR)
        return 1;
    char parent[PATH_MAX_];
    memcpy(parent, full, (size_t)dir_len);
    parent[dir_len > 0 ? dir_len : 1] = 0;
    fd = openat2_(parent, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        close((int)fd);
        *parent_ok = 1;
        return -ENOENT;
    }
    return errno == ENOENT || errno == ENOTDIR ? -errno : 1;
}

/* lookup's answer, but for an UPPER_DIR: a directory the program made in a merged directory
 * (tar's or mkdir -p's in the directory it works in) is found, as a name's object in an owned
 * directory, when the host has no such name and it is an owned directory itself (no rule
 * tells its names apart): its upper directory alone is what the view shows, the kernel's
 * link count included. Any other (merged again, opaque over the host's) is Python's. */
static int upper_dir(Engine *self, const Operand *op, int rc)
{
    if (rc != UPPER_DIR)
        return rc;
    struct stat host;
    if (fstatat(op->lower_dfd, name_of(op), &host, AT_SYMLINK_NOFOLLOW_) == 0 || errno != ENOENT)
        return 1;
    return owned_itself(self, op) ? 0 : 1;
}

/* Whether op's object, a directory, is an owned directory itself. */
int owned_itself(Engine *self, const Operand *op)
{
    char host[PATH_MAX_];
    Py_ssize_t host_len;
    return dir_kind(self, op->guest, (Py_ssize_t)strlen(op->guest), host, &host_len, NULL)
           == OWNED;
}

/* readlink of op's object (relative to its directory when that is held open). */
ssize_t readlink_of(const Operand *op, char *buf, size_t size)
{
    return op->dfd >= 0 ? readlinkat(op->dfd, name_of(op), buf, size)
                        : readlink(op->host, buf, size);
}

/* The object a call names by (dirfd, path at addr) in a plain or owned directory, *op then
 * where it lies: 0 and *st; -ENOENT/-ENOTDIR as the kernel would answer (see lookup); 1
 * (FALLBACK) when Python must decide. With `follow`, a symlink is followed as the view's
 * walk follows it (its text read from its host object, relative to its guest directory),
 * while each step lands in a plain or owned directory; without, it is the object. A name
 * missing in an owned directory is -ENOENT only while that directory is there; in a plain
 * one op->dir_there tells whether the directory itself is. `follow` UNLESS_OWNED (a removal):
 * not followed, and a name in an owned directory is not looked at (UNLOOKED: its removal
 * says whether it is there, and what it is). */
int find_object(Engine *self, pid_t tid, long dirfd, unsigned long long addr,
                int follow, Operand *op, struct stat *st)
{
    op->path_len = read_cstring(tid, addr, op->path);
    if (op->path_len < 0)
        return FALLBACK;
    return find_path(self, tid, dirfd, follow, op, st);
}

/* find_object of the path already in op->path (op->path_len). */
int find_path(Engine *self, pid_t tid, long dirfd, int follow, Operand *op, struct stat *st)
{
    int fails = 0;
    if (place(self, tid, dirfd, op->path, op->path_len, op, &fails) < 0) {
        /* A ".." after a plain directory that is not there, or not a directory (gcc's
         * "x86_64-linux-gnu/lib/../lib/."): the kernel's walk fails there, as the handlers
         * fail it (at log level all their record is Python's). */
        if (fails == 0 || self->log_reads)
            return FALLBACK;
        op->kind = PLAIN;
        op->dir_there = 0;
        op->host_only = 1;
        return -fails;
    }
    op->host_only = op->kind == PLAIN || op->kind == NAME;
    if (follow == UNLESS_OWNED) {
        if (op->kind == OWNED)
            return UNLOOKED;
        follow = 0;
    }
    int parent_ok;
    int rc = upper_dir(self, op, lookup(op, st, &parent_ok));
    for (int links = 0; rc == 0 && S_ISLNK(st->st_mode) && follow; ) {
        char target[PATH_MAX_], next[PATH_MAX_];
        ssize_t n = readlink_of(op, target, sizeof target - 1);
        if (++links > MAXSYMLINKS_ || n <= 0)
            return FALLBACK;             /* ELOOP and the rest: Python says it */
        Py_ssize_t len = 0;
        if (target[0] != '/') {          /* relative to the link's own directory */
            len = op->guest_dir > 1 ? op->guest_dir : 0;
            memcpy(next, op->guest, (size_t)len);
            next[len++] = '/';
        }
        if (len + n >= PATH_MAX_)
            return FALLBACK;
        memcpy(next + len, target, (size_t)n);
        len += n;
        if (place(self, tid, AT_FDCWD_, next, len, op, NULL) < 0)
            return FALLBACK;
        op->host_only &= op->kind == PLAIN || op->kind == NAME;
        rc = upper_dir(self, op, lookup(op, st, &parent_ok));
    }
    /* A host name gone since it was decided, or an owned directory gone: only their
     * directories' decisions could explain it, in Python. */
    if (rc < 0 && (op->kind == NAME || ((op->kind == OWNED || op->kind == MERGED)
                                         && !parent_ok)))
        return FALLBACK;
    op->dir_there = parent_ok;
    return rc;
}

/* -- the calls ---------------------------------------------------------------------------- */

/* The guest path (in guest, its length returned) of the directory a path names by itself
 * (".", "/", "dir/.", "dir/", "dir/..", or a name whose own directory is neither, as "/usr"
 * in "/"), *follow set when a trailing "/" or "/." follows a final symlink, as the kernel's
 * walk does; -1: Python's (*fails, unless NULL, as split_path sets it). A final ".." goes
 * up from a directory the view shows as itself (real_dir), as split_path does from one inside
 * a path (gcc's library search stats "lib/gcc/x86_64-linux-gnu/12/../../../." at every
 * compile). */
Py_ssize_t itself_path(Engine *self, pid_t tid, long dirfd, const char *path, Py_ssize_t len,
                       char *guest, int *follow, int *fails)
{
    Py_ssize_t n;
    while (len > 1 && (path[len - 1] == '/' || (path[len - 1] == '.' && path[len - 2] == '/'))) {
        len--;
        *follow = 1;
    }
    if (len >= 2 && path[len - 1] == '.' && path[len - 2] == '.'
            && (len == 2 || path[len - 3] == '/')) {
        int inner = 0;               /* (the parent of a real directory is one itself) */
        n = len == 2 ? itself_path(self, tid, dirfd, ".", 1, guest, &inner, fails)
            : len == 3 ? itself_path(self, tid, dirfd, "/", 1, guest, &inner, fails)
            : itself_path(self, tid, dirfd, path, len - 3, guest, &inner, fails);
        if (n > 1) {                 /* (the parent of "/" is "/") */
            if (real_dir(self, guest, n, fails) != 1)
                return -1;
            while (guest[--n] != '/')
                ;
            n = n > 0 ? n : 1;
            guest[n] = 0;
        }
        *follow = 1;
        return n;
    }
    if (len == 1 && path[0] == '.') {
        n = fd_path_of(self, tid, dirfd, guest, NULL, NULL);
    } else if (len == 1 && path[0] == '/') {
        memcpy(guest, "/", 2);
        n = 1;
    } else {
        const char *name;
        if (split_path(self, self->upper, self->upper_len, tid, dirfd, path, len, guest, &n,
                       &name, fails) < 0 || append_name(guest, n, name, len - (name - path)) < 0)
            return -1;
        n = (Py_ssize_t)strlen(guest);
    }
    return n;
}

/* The plain, owned or name-by-name directory a path names by itself (itself_path): its kind
 * (PLAIN, OWNED, NAMES or ITSELF: the view of those two directories themselves is the
 * host's, OverlayFS.host_names) and its host path (host), or -1 (the stop is Python's;
 * *fails, unless NULL, as itself_path sets it). Without following a final symlink, only a
 * directory reached crossing no symlink (its host path is its guest path) or an owned one.
 * Its existence is not checked. */
int directory_itself(Engine *self, pid_t tid, long dirfd, const char *path, Py_ssize_t len,
                     int follow, char *host, int *fails)
{
    char guest[PATH_MAX_];
    Py_ssize_t host_len, n = itself_path(self, tid, dirfd, path, len, guest, &follow, fails);
    if (n < 0)
        return -1;
    int kind = dir_kind(self, guest, n, host, &host_len, NULL);
    return kind == OWNED || ((kind == PLAIN || kind == NAMES || kind == ITSELF)
                             && (follow || strcmp(host, guest) == 0)) ? kind : -1;
}
