/* The tracer's wait loop for the stops whose answer needs no Python (see fastpath.py).
 *
 * Engine.wait() waits for the next stop of any tracee. A seccomp stop of an eligible thread
 * for a read of a name in a directory the Python side has declared "plain" (the program's
 * view of it and of its children is the host's own, see OverlayFS.plain_dir) is answered
 * here, exactly as the Python handlers would answer it:
 *   newfstatat  the tracer looks the object up itself (openat2 RESOLVE_NO_SYMLINKS, fstat)
 *               and writes the struct stat into the program's buffer; the call never runs;
 *   openat      for reading: openat2(AT_FDCWD, path, RESOLVE_NO_SYMLINKS|NO_MAGICLINKS)
 *               from the thread's slot, its registers restored at the exit stop and the
 *               call re-run when a symlink was swapped in meanwhile (ELOOP);
 *   getdents64  of a plain directory: the kernel's own listing.
 * In an *owned* directory (the view of it is one upper-layer directory alone, see
 * OverlayFS.owned_dir) the names are that directory's:
 *   newfstatat  of a name that is not a directory: as above, on the upper object;
 *   openat      any open but O_TMPFILE of a name that exists, or a creation: openat2 of the
 *               upper path from the slot, as the handlers make it; Python writes the log
 *               record first (opening) and, at the exit stop, records a created file in the
 *               overlay's index and the result in the log (opened);
 *   unlink(at), mkdir(at), fchmod(at), fchown(at), utimensat(fd, NULL, ...)
 *               of a name there (or of an fd's object there), link(at) and rename(at)(2)
 *               of a name that is not a directory between two names there: Python makes
 *               the change with the call's handler's own `do` and logs it (changing); the
 *               result is emulated.
 * access, faccessat and faccessat2 are answered too, the tracer asking the kernel about the
 * host or upper object (in a plain directory only without W_OK: read-only rules deny it).
 * A directory met for the first time is decided by the Python side (learn(dir), which also
 * remembers the answer in the `plain` dict: True plain; (canonical,) a path whose walk in the
 * view reaches the plain directory `canonical` through symlinks, as /lib/x86_64-linux-gnu on
 * a merged-/usr system, whose names are canonical's; bytes the upper directory of an owned
 * one; 0 its names are decided one by one, in the `names` dict (learn_name(path): True when
 * the object is the host's own, an existing file answered as in a plain directory); False
 * neither). A directory fd or cwd inside the upper layer names the guest
 * directory below the upper root. Everything else (other stops, a symlink on the way, a
 * directory that is neither, any error the Python handlers would explain) returns to Python
 * unchanged.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#define PATH_MAX_ 4096
#define NAME_MAX_ 255
#define AUDIT_ARCH_X86_64_ 0xC000003E
#define SYSCALL_TRAP (SIGTRAP | 0x80)
#define AT_FDCWD_ (-100)
#define AT_SYMLINK_NOFOLLOW_ 0x100
#define AT_NO_AUTOMOUNT_ 0x800
#define AT_EMPTY_PATH_ 0x1000
#define AT_SYMLINK_FOLLOW_ 0x400
#define O_TMPFILE_BIT 020000000
#define VALID_OPEN_FLAGS 037777703
#define O_PATH_FLAGS (O_DIRECTORY | O_NOFOLLOW | O_PATH | O_CLOEXEC)
#define OPEN_HOW_SIZE 24
#define MAX_RESTARTS 16
#define MAXSYMLINKS_ 40                /* the kernel's, and the resolver's */
#define NR_MAX 512

enum { ANSWERED, FALLBACK };
enum { NEITHER, PLAIN, OWNED, NAMES, NAME };   /* what a directory (a name) is to the engine */
enum Change { UNLINK, UNLINKAT, MKDIR, MKDIRAT, FCHMOD, FCHOWN, FCHMODAT, FCHOWNAT, UTIMENSAT,
              LINK, LINKAT, RENAME, RENAMEAT, RENAMEAT2, N_CHANGES };

typedef struct {
    pid_t tid;                       /* 0: free */
    int restarts;
    unsigned long long nr, args[4];  /* the program's own call, restored at its exit */
    int owned;                       /* an open in an owned directory: tell Python its end */
    long long seq;                   /* its log record (0: none) */
    PyObject *created;               /* the guest path it creates (NULL: none) */
} Pending;

/* A path operand: as the program passed it, and where it lies (guest and host). */
typedef struct {
    char path[PATH_MAX_];
    Py_ssize_t path_len;
    char guest[PATH_MAX_], host[PATH_MAX_];   /* dir/name; the host one is the upper object */
    Py_ssize_t guest_dir, host_dir;           /* the directories' lengths in them */
    int kind;                                 /* PLAIN or OWNED */
} Operand;

typedef struct {
    PyObject_HEAD
    PyObject *plain;                 /* dict: directory -> True/upper dir/False, Python's */
    PyObject *learn;                 /* learn(dir): decides a directory not in it */
    PyObject *names, *learn_name;    /* path -> bool, and its learn (None: no names) */
    PyObject *opening, *opened, *changing;    /* compiled.py (None: no owned directories) */
    char upper[PATH_MAX_];           /* the upper layer's root: host paths below it are */
    Py_ssize_t upper_len;            /* the guest paths below "/" (0: none) */
    int nr_access, nr_faccessat, nr_faccessat2;
    int nr_change[N_CHANGES];        /* fastpath.CHANGES, in the order of enum Change */
    Py_buffer area;                  /* the tracer's writable view of the slot area */
    unsigned long long slot_base, slot_size;
    int nr_newfstatat, nr_openat, nr_getdents64, nr_openat2;
    int stat_ok;                     /* stat answers need no recorded owners patched in */
    int32_t *slot_of;                /* tid -> its slot index + 1; 0: none known */
    uint8_t *eligible;               /* tid -> its reads may be answered here */
    Py_ssize_t tids;
    Pending *pending;                /* by slot index */
    Py_ssize_t slots;
    unsigned long long answered[NR_MAX], seccomp_stops, exit_stops;
    pid_t held_pid;                  /* a stop not handed over yet (learn raised) */
    int held_status;
} Engine;

/* -- tracee access ------------------------------------------------------------------------ */

/* Read a NUL-terminated string at addr into buf (PATH_MAX_ bytes); its length, or -1. Reads
 * up to page ends only, so a string next to an unmapped page is still read. */
static Py_ssize_t read_cstring(pid_t tid, unsigned long long addr, char *buf)
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

static int write_mem(pid_t tid, unsigned long long addr, const void *data, size_t len)
{
    struct iovec local = {(void *)data, len};
    struct iovec remote = {(void *)(uintptr_t)addr, len};
    return process_vm_writev(tid, &local, 1, &remote, 1, 0) == (ssize_t)len ? 0 : -1;
}

/* The call does not run: the program sees `result`. */
static void emulate(pid_t tid, long result)
{
    ptrace(PTRACE_POKEUSER, tid, offsetof(struct user_regs_struct, orig_rax), (void *)-1L);
    ptrace(PTRACE_POKEUSER, tid, offsetof(struct user_regs_struct, rax), (void *)result);
    ptrace(PTRACE_CONT, tid, 0, 0);
}

static long openat2_(const char *path, unsigned long long flags)
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
static Py_ssize_t fd_path(const char *upper, Py_ssize_t upper_len, pid_t tid, long dirfd,
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

/* The directory a path call names its object in, and the name: (dir, name) when the path is
 * a name in a directory reached without ".." (so the directory's path is the one the kernel
 * would walk; a "." before a name changes nothing); the base of a relative path is the
 * thread's cwd or dirfd. */
static int split_path(const char *upper, Py_ssize_t upper_len, pid_t tid, long dirfd,
                      const char *path, Py_ssize_t len, char *dir, Py_ssize_t *dir_len,
                      const char **name)
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
        dl = fd_path(upper, upper_len, tid, dirfd, dir, NULL);
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
            if (cl == 0 || (cl == 2 && c[0] == '.' && c[1] == '.'))
                return -1;
            if (!(cl == 1 && c[0] == '.')) {
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

/* What dir is (PLAIN, OWNED with its upper directory in host, NEITHER); -1: an exception is
 * set (the stop then goes to Python after it). */
static int dir_kind(Engine *self, const char *dir, Py_ssize_t len, char *host,
                    Py_ssize_t *host_len)
{
    PyObject *key = PyBytes_FromStringAndSize(dir, len);
    if (key == NULL)
        return -1;
    PyObject *v = PyDict_GetItemWithError(self->plain, key);    /* borrowed */
    int kind = NEITHER;
    if (v != NULL) {
        Py_INCREF(v);
    } else if (!PyErr_Occurred()) {
        v = PyObject_CallOneArg(self->learn, key);             /* it records the answer */
    }
    Py_DECREF(key);
    if (v == NULL)
        return -1;
    if (PyLong_CheckExact(v) && self->learn_name != Py_None) {
        kind = NAMES;
    } else if (v == Py_True) {
        kind = PLAIN;
        memcpy(host, dir, (size_t)len + 1);
        *host_len = len;
    } else if (PyTuple_Check(v) && PyTuple_GET_SIZE(v) == 1
               && PyBytes_Check(PyTuple_GET_ITEM(v, 0))
               && PyBytes_GET_SIZE(PyTuple_GET_ITEM(v, 0)) < PATH_MAX_) {
        kind = PLAIN;                /* another path of a plain directory */
        PyObject *canonical = PyTuple_GET_ITEM(v, 0);
        *host_len = PyBytes_GET_SIZE(canonical);
        memcpy(host, PyBytes_AS_STRING(canonical), (size_t)*host_len + 1);
    } else if (PyBytes_Check(v) && self->opening != Py_None
               && PyBytes_GET_SIZE(v) < PATH_MAX_) {
        kind = OWNED;
        *host_len = PyBytes_GET_SIZE(v);
        memcpy(host, PyBytes_AS_STRING(v), (size_t)*host_len + 1);
    }
    Py_DECREF(v);
    return kind;
}

/* 1: the object at path (a name in a NAMES directory) is the host's own; 0: not; -1: an
 * exception is set. */
static int name_is_host(Engine *self, const char *path)
{
    PyObject *key = PyBytes_FromString(path);
    if (key == NULL)
        return -1;
    PyObject *v = PyDict_GetItemWithError(self->names, key);    /* borrowed */
    int host;
    if (v != NULL)
        host = v == Py_True;
    else if (PyErr_Occurred())
        host = -1;
    else {
        v = PyObject_CallOneArg(self->learn_name, key);        /* it records the answer */
        host = v == NULL ? -1 : v == Py_True;
        Py_XDECREF(v);
    }
    Py_DECREF(key);
    return host;
}

static int append_name(char *buf, Py_ssize_t dir_len, const char *name, Py_ssize_t nlen)
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
 * else -1 (the stop is Python's). */
static int place(Engine *self, pid_t tid, long dirfd, const char *path, Py_ssize_t len,
                 Operand *op)
{
    const char *name;
    if (split_path(self->upper, self->upper_len, tid, dirfd, path, len, op->guest,
                   &op->guest_dir, &name) < 0)
        return -1;
    op->kind = dir_kind(self, op->guest, op->guest_dir, op->host, &op->host_dir);
    if (op->kind == NAMES) {         /* the name alone may be the host's */
        memcpy(op->host, op->guest, (size_t)op->guest_dir + 1);
        op->host_dir = op->guest_dir;
    } else if (op->kind != PLAIN && op->kind != OWNED) {
        return -1;
    }
    Py_ssize_t nlen = len - (name - path);
    if (append_name(op->guest, op->guest_dir, name, nlen) < 0 ||
            append_name(op->host, op->host_dir, name, nlen) < 0)
        return -1;
    if (op->kind == NAMES) {
        int host = name_is_host(self, op->guest);
        if (host != 1)
            return -1;
        op->kind = NAME;
    }
    return 0;
}

/* A call's path operand (dirfd, the string at addr) in a plain or owned directory: 0, or -1
 * (the stop is Python's). */
static int operand(Engine *self, pid_t tid, long dirfd, unsigned long long addr, Operand *op)
{
    op->path_len = read_cstring(tid, addr, op->path);
    if (op->path_len < 0)
        return -1;
    return place(self, tid, dirfd, op->path, op->path_len, op);
}

/* The object at dir/name, as a walk that crosses no symlink finds it: 0 and *st; -ENOENT when
 * it is missing (*parent_ok: dir is there), -ENOENT/-ENOTDIR when dir is missing or not a
 * directory (a plain directory may be absent: its plain parent shows that it is); 1 for
 * anything the Python side must explain. */
static int lookup(const char *full, Py_ssize_t dir_len, struct stat *st, int *parent_ok)
{
    *parent_ok = 0;
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

/* The object a call names by (dirfd, path at addr) in a plain or owned directory, *op then
 * where it lies: 0 and *st; -ENOENT/-ENOTDIR as the kernel would answer (see lookup); 1
 * (FALLBACK) when Python must decide. With `follow`, a symlink is followed as the view's
 * walk follows it (its text read from its host object, relative to its guest directory),
 * while each step lands in a plain or owned directory; without, it is the object. */
static int find_object(Engine *self, pid_t tid, long dirfd, unsigned long long addr,
                       int follow, Operand *op, struct stat *st, int *parent_ok)
{
    if (operand(self, tid, dirfd, addr, op) < 0)
        return FALLBACK;
    int rc = lookup(op->host, op->host_dir, st, parent_ok);
    if (op->kind == NAME && rc != 0)
        return FALLBACK;             /* gone since: only its directory could say so */
    for (int links = 0; rc == 0 && S_ISLNK(st->st_mode) && follow; ) {
        char target[PATH_MAX_], next[PATH_MAX_];
        ssize_t n = readlink(op->host, target, sizeof target - 1);
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
        if (place(self, tid, AT_FDCWD_, next, len, op) < 0)
            return FALLBACK;
        rc = lookup(op->host, op->host_dir, st, parent_ok);
        if (op->kind == NAME && rc != 0)
            return FALLBACK;
    }
    return rc;
}

/* -- the calls ---------------------------------------------------------------------------- */

static PyObject *args_of(const uint64_t *a)
{
    return Py_BuildValue("(KKKKKK)", (unsigned long long)a[0], (unsigned long long)a[1],
                         (unsigned long long)a[2], (unsigned long long)a[3],
                         (unsigned long long)a[4], (unsigned long long)a[5]);
}

static void clear_pending(Pending *p)
{
    Py_CLEAR(p->created);
    memset(p, 0, sizeof(Pending));
}

static int do_newfstatat(Engine *self, pid_t tid, const struct __ptrace_syscall_info *in)
{
    const uint64_t *a = in->seccomp.args;
    if (!self->stat_ok || a[3] & ~(unsigned long long)(AT_SYMLINK_NOFOLLOW_ | AT_NO_AUTOMOUNT_
                                                       | AT_EMPTY_PATH_))
        return FALLBACK;
    if (a[3] & AT_EMPTY_PATH_) {
        char first;
        struct iovec local = {&first, 1}, remote = {(void *)(uintptr_t)a[1], 1};
        if (process_vm_readv(tid, &local, 1, &remote, 1, 0) == 1 && first == 0) {
            ptrace(PTRACE_CONT, tid, 0, 0);   /* fstat of the fd's own object: the kernel's */
            return ANSWERED;
        }
    }
    Operand op;
    struct stat st;
    int parent_ok;
    int rc = find_object(self, tid, (long)(int)a[0], a[1], !(a[3] & AT_SYMLINK_NOFOLLOW_), &op,
                         &st, &parent_ok);
    if (rc > 0)
        return FALLBACK;
    /* In an owned directory: a directory's link count may be the view's own (merged_nlink),
     * and a missing name is only known missing in a directory that is there. */
    if (op.kind == OWNED && ((rc == 0 && S_ISDIR(st.st_mode)) || (rc < 0 && !parent_ok)))
        return FALLBACK;
    long result = rc;
    if (rc == 0 && write_mem(tid, a[2], &st, sizeof st) < 0)
        result = -EFAULT;
    emulate(tid, result);
    return ANSWERED;
}

static int do_openat(Engine *self, pid_t tid, int slot, const struct __ptrace_syscall_info *in)
{
    const uint64_t *a = in->seccomp.args;
    unsigned long long flags = (a[2] & 0xFFFFFFFFULL) | O_LARGEFILE;   /* build_open_how() */
    flags &= VALID_OPEN_FLAGS;
    if (flags & O_PATH)
        flags &= O_PATH_FLAGS;
    if (flags & O_TMPFILE_BIT)
        return FALLBACK;
    Operand op;
    struct stat st;
    int parent_ok;
    int follow = !(flags & O_NOFOLLOW) && !(flags & O_CREAT && flags & O_EXCL);
    int rc = find_object(self, tid, (long)(int)a[0], a[1], follow, &op, &st, &parent_ok);
    if (rc > 0 || (rc == 0 && S_ISLNK(st.st_mode)))  /* a symlink not followed: ELOOP, */
        return FALLBACK;                               /* EEXIST or O_PATH: Python's */
    unsigned long long mode = 0;
    int create = 0;
    if (op.kind == PLAIN || op.kind == NAME) {
        if ((flags & O_ACCMODE) != O_RDONLY || flags & (O_CREAT | O_TRUNC))
            return FALLBACK;
        if (rc < 0) {
            emulate(tid, rc);
            return ANSWERED;
        }
    } else {
        /* As do_open() makes it: a creation, a write or a read of the upper object. A
         * missing name without O_CREAT and O_EXCL on an existing one are Python's to log. */
        if (rc < 0 && !(rc == -ENOENT && parent_ok))
            return FALLBACK;
        int exists = rc == 0;
        if ((!exists && !(flags & O_CREAT)) || (exists && flags & O_CREAT && flags & O_EXCL))
            return FALLBACK;
        create = !exists;
        if (flags & O_CREAT)
            mode = a[3] & 07777;
        if (!create && (flags & O_ACCMODE) == O_RDONLY && !(flags & O_TRUNC)) {
            flags &= ~(unsigned long long)O_CREAT;      /* only read: never made here */
            mode = 0;
        }
    }
    /* The checked path and its open_how go to the kernel from the thread's slot. */
    size_t plen = strlen(op.host) + 1, how_off = (plen + 7) & ~(size_t)7;
    if (how_off + OPEN_HOW_SIZE > self->slot_size)
        return FALLBACK;
    long long seq = 0;
    PyObject *created = NULL;
    if (op.kind == OWNED) {
        PyObject *args = args_of(a);
        if (args == NULL)
            return FALLBACK;
        PyObject *r = PyObject_CallFunction(self->opening, "iiNy#yy", tid, (int)in->seccomp.nr,
                                            args, op.path, op.path_len, op.guest, op.host);
        if (r == NULL)
            return FALLBACK;
        seq = PyLong_AsLongLong(r);
        Py_DECREF(r);
        if (seq < 0) {
            PyErr_Clear();
            return FALLBACK;         /* Python's loop takes it: nothing was done */
        }
        if (create && (created = PyBytes_FromString(op.guest)) == NULL)
            return FALLBACK;
    }
    char *mine = (char *)self->area.buf + (size_t)slot * self->slot_size;
    unsigned long long at = self->slot_base + (unsigned long long)slot * self->slot_size;
    struct open_how how = {.flags = flags, .mode = mode,
                           .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
    memcpy(mine, op.host, plen);
    memcpy(mine + how_off, &how, sizeof how);
    struct user_regs_struct regs;
    Pending *p = &self->pending[slot];
    if (ptrace(PTRACE_GETREGS, tid, 0, &regs) < 0) {
        Py_XDECREF(created);
        return ANSWERED;             /* gone: its exit report follows */
    }
    clear_pending(p);
    p->tid = tid;
    p->nr = in->seccomp.nr;
    p->args[0] = regs.rdi; p->args[1] = regs.rsi; p->args[2] = regs.rdx; p->args[3] = regs.r10;
    p->owned = op.kind == OWNED;
    p->seq = seq;
    p->created = created;
    regs.rdi = (unsigned long long)AT_FDCWD_;
    regs.rsi = at;
    regs.rdx = at + how_off;
    regs.r10 = OPEN_HOW_SIZE;
    regs.orig_rax = (unsigned long long)self->nr_openat2;
    if (ptrace(PTRACE_SETREGS, tid, 0, &regs) < 0) {
        clear_pending(p);
        return ANSWERED;
    }
    ptrace(PTRACE_SYSCALL, tid, 0, 0);
    return ANSWERED;
}

/* access(path, mode), faccessat(dirfd, path, mode), faccessat2(..., flags): the tracer asks
 * the kernel about the object it found, as the handler's faccessat2 on the host path does. */
static int do_access(Engine *self, pid_t tid, const struct __ptrace_syscall_info *in)
{
    const uint64_t *a = in->seccomp.args;
    int nr = (int)in->seccomp.nr, plain_call = nr == self->nr_access;
    long dirfd = plain_call ? AT_FDCWD_ : (long)(int)a[0];
    unsigned long long addr = plain_call ? a[0] : a[1];
    int mode = (int)((plain_call ? a[1] : a[2]) & 7);
    int flags = nr == self->nr_faccessat2 ? (int)a[3] : 0;
    if (flags & ~(AT_EACCESS | AT_SYMLINK_NOFOLLOW_))
        return FALLBACK;
    int follow = !(flags & AT_SYMLINK_NOFOLLOW_);
    Operand op;
    struct stat st;
    int parent_ok;
    int rc = find_object(self, tid, dirfd, addr, follow, &op, &st, &parent_ok);
    if (rc > 0 || ((op.kind == PLAIN || op.kind == NAME) && mode & W_OK)
            || (op.kind == OWNED && rc < 0 && !parent_ok))
        return FALLBACK;
    long result = rc;
    if (rc == 0)
        result = syscall(SYS_faccessat2, AT_FDCWD_, op.host, mode,
                         (flags & AT_EACCESS) | (follow ? 0 : AT_SYMLINK_NOFOLLOW_)) < 0
                 ? -errno : 0;
    emulate(tid, result);
    return ANSWERED;
}

static int call_change(Engine *self, pid_t tid, const struct __ptrace_syscall_info *in,
                       PyObject *paths, PyObject *guests);

/* link(at), rename(at)(2) of a name that is not a directory to a name that is not one
 * either (or not there), both in owned directories: nothing but those two names changes. */
static int do_change2(Engine *self, pid_t tid, int c, const struct __ptrace_syscall_info *in)
{
    const uint64_t *a = in->seccomp.args;
    int two_dirfds = c == LINKAT || c == RENAMEAT || c == RENAMEAT2;
    int follow = c == LINKAT && a[4] == AT_SYMLINK_FOLLOW_;
    if ((c == LINKAT || c == RENAMEAT2) && a[4] != 0 && !follow)
        return FALLBACK;             /* AT_EMPTY_PATH, RENAME_* flags */
    Operand src, dst;
    struct stat sst, dstst;
    int sp, dp;
    int src_rc = find_object(self, tid, two_dirfds ? (long)(int)a[0] : AT_FDCWD_,
                             two_dirfds ? a[1] : a[0], follow, &src, &sst, &sp);
    if (src_rc != 0 || src.kind != OWNED || S_ISDIR(sst.st_mode))
        return FALLBACK;
    int dst_rc = find_object(self, tid, two_dirfds ? (long)(int)a[2] : AT_FDCWD_,
                             two_dirfds ? a[3] : a[1], 0, &dst, &dstst, &dp);
    if (dst_rc > 0 || dst.kind != OWNED || (dst_rc < 0 && !dp)
            || (dst_rc == 0 && (c == LINK || c == LINKAT || S_ISDIR(dstst.st_mode))))
        return FALLBACK;             /* EEXIST, ENOENT ...: Python explains */
    PyObject *paths = Py_BuildValue("(y#y#)", src.path, src.path_len, dst.path, dst.path_len);
    PyObject *guests = Py_BuildValue("(yy)", src.guest, dst.guest);
    return call_change(self, tid, in, paths, guests);
}

/* A changing call on a name in an owned directory, or on an fd's object there (c: its
 * enum Change): Python makes it with the handler's own `do` and logs it; the result is
 * emulated. Only the forms whose operand needs no more deciding: the name not a symlink
 * (unlink removes the link itself), present, except for mkdir (absent, in a directory that is
 * there) and unlink (a missing name is the handler's ENOENT). */
static int do_change(Engine *self, pid_t tid, int c, const struct __ptrace_syscall_info *in)
{
    const uint64_t *a = in->seccomp.args;
    long dirfd = AT_FDCWD_;
    int path_arg = -1;               /* -1: the object of fd `dirfd` */
    if (c >= LINK)
        return do_change2(self, tid, c, in);
    switch (c) {
    case UNLINK: case MKDIR:
        path_arg = 0;
        break;
    case UNLINKAT:
        if (a[2] != 0)
            return FALLBACK;         /* AT_REMOVEDIR: a directory goes (decisions with it) */
        /* fall through */
    case MKDIRAT: case FCHMODAT:
        dirfd = (long)(int)a[0];
        path_arg = 1;
        break;
    case FCHOWNAT:
        if (a[4] != 0)
            return FALLBACK;
        dirfd = (long)(int)a[0];
        path_arg = 1;
        break;
    case UTIMENSAT:
        if (a[1] != 0 || a[3] != 0)
            return FALLBACK;         /* only futimens(): utimensat(fd, NULL, times, 0) */
        /* fall through */
    case FCHMOD: case FCHOWN:
        dirfd = (long)(int)a[0];
        break;
    default:
        return FALLBACK;
    }
    Operand op;
    PyObject *path, *guests;
    if (path_arg >= 0) {
        struct stat st;
        int parent_ok;
        int rc = find_object(self, tid, dirfd, a[path_arg], 0, &op, &st, &parent_ok);
        if (rc > 0 || op.kind != OWNED)
            return FALLBACK;
        int removes = c == UNLINK || c == UNLINKAT, makes = c == MKDIR || c == MKDIRAT;
        if (makes ? rc == 0 || !parent_ok
                  : rc < 0 ? !removes || !parent_ok : S_ISLNK(st.st_mode) && !removes)
            return FALLBACK;
        path = PyBytes_FromStringAndSize(op.path, op.path_len);
    } else {
        int in_upper;
        Py_ssize_t n = fd_path(self->upper, self->upper_len, tid, dirfd, op.guest,
                               &in_upper);
        const char *slash = n > 1 ? memrchr(op.guest, '/', (size_t)n) : NULL;
        if (n < 0 || !in_upper || slash == NULL || slash[1] == 0)
            return FALLBACK;
        Py_ssize_t dl = slash > op.guest ? slash - op.guest : 1;
        char dir[PATH_MAX_];
        memcpy(dir, op.guest, (size_t)dl);
        dir[dl] = 0;
        if (dir_kind(self, dir, dl, op.host, &op.host_dir) != OWNED)
            return FALLBACK;
        Py_INCREF(Py_None);
        path = Py_None;
    }
    if (path == NULL)
        return FALLBACK;
    guests = Py_BuildValue("(y)", op.guest);
    PyObject *paths = path == Py_None && c != UTIMENSAT ? PyTuple_New(0)
                                                        : PyTuple_Pack(1, path);
    Py_DECREF(path);
    return call_change(self, tid, in, paths, guests);
}

/* Python's side of a change (compiled.CompiledCalls.changing); paths and guests are taken. */
static int call_change(Engine *self, pid_t tid, const struct __ptrace_syscall_info *in,
                       PyObject *paths, PyObject *guests)
{
    PyObject *args = args_of(in->seccomp.args);
    if (args == NULL || paths == NULL || guests == NULL) {
        Py_XDECREF(args); Py_XDECREF(paths); Py_XDECREF(guests);
        return FALLBACK;
    }
    PyObject *r = PyObject_CallFunction(self->changing, "iiNNN", tid, (int)in->seccomp.nr,
                                        args, paths, guests);
    if (r == NULL)
        return FALLBACK;
    if (r == Py_None) {
        Py_DECREF(r);
        return FALLBACK;             /* nothing was done: Python's loop takes it */
    }
    long result = PyLong_AsLong(r);
    Py_DECREF(r);
    if (result == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        result = -EPERM;             /* made or not, never let the call run as well */
    }
    emulate(tid, result);
    return ANSWERED;
}

static int do_getdents64(Engine *self, pid_t tid, const struct __ptrace_syscall_info *in)
{
    long fd = (long)(int)in->seccomp.args[0];
    if (fd < 0)
        return FALLBACK;
    char dir[PATH_MAX_], host[PATH_MAX_];
    Py_ssize_t host_len;
    Py_ssize_t n = fd_path(self->upper, self->upper_len, tid, fd, dir, NULL);
    if (n < 0 || dir_kind(self, dir, n, host, &host_len) != PLAIN)
        return FALLBACK;
    ptrace(PTRACE_CONT, tid, 0, 0);
    return ANSWERED;
}

/* The exit stop of an open made from the slot (the next syscall stop after resuming the
 * seccomp stop with PTRACE_SYSCALL): give the program its registers back; for an open in an
 * owned directory, Python records a created file and the result. */
static void finish_open(Engine *self, Pending *p, pid_t tid)
{
    struct user_regs_struct regs;
    PyObject *created = p->created;
    int owned = p->owned;
    long long seq = p->seq;
    p->created = NULL;
    p->tid = 0;
    if (ptrace(PTRACE_GETREGS, tid, 0, &regs) < 0) {
        Py_XDECREF(created);
        return;                          /* gone: its exit report follows */
    }
    regs.rdi = p->args[0]; regs.rsi = p->args[1]; regs.rdx = p->args[2]; regs.r10 = p->args[3];
    regs.orig_rax = p->nr;               /* a -ERESTART* re-runs the program's own call */
    int restart = (long long)regs.rax == -ELOOP && p->restarts < MAX_RESTARTS;
    if (restart) {
        /* A component became a symlink after the check: re-run the call, re-checked. */
        p->restarts++;
        regs.rip -= 2;
        regs.rax = p->nr;
    } else {
        p->restarts = 0;
    }
    ptrace(PTRACE_SETREGS, tid, 0, &regs);
    if (owned && !restart) {
        PyObject *r = PyObject_CallFunction(self->opened, "LiOL", seq, (int)tid,
                                            created ? created : Py_None, (long long)regs.rax);
        if (r == NULL)
            PyErr_WriteUnraisable(self->opened);    /* it catches all: cannot happen */
        Py_XDECREF(r);
    }
    Py_XDECREF(created);
    ptrace(PTRACE_CONT, tid, 0, 0);
}

static int slot_of(Engine *self, pid_t tid)
{
    return tid > 0 && tid < self->tids ? self->slot_of[tid] - 1 : -1;
}

/* ANSWERED when the stop was dealt with here. */
static int try_stop(Engine *self, pid_t tid, int status)
{
    int slot = slot_of(self, tid);
    if (slot < 0)
        return FALLBACK;
    if ((status >> 8) == SYSCALL_TRAP) {
        Pending *p = &self->pending[slot];
        if (p->tid != tid)
            return FALLBACK;
        self->exit_stops++;
        finish_open(self, p, tid);
        return ANSWERED;
    }
    if ((status >> 8) != (SIGTRAP | (PTRACE_EVENT_SECCOMP << 8)) || !self->eligible[tid])
        return FALLBACK;
    struct __ptrace_syscall_info info;
    if (ptrace(PTRACE_GET_SYSCALL_INFO, tid, sizeof info, &info) <= 0 ||
            info.op != PTRACE_SYSCALL_INFO_SECCOMP || info.arch != AUDIT_ARCH_X86_64_)
        return FALLBACK;
    int nr = (int)info.seccomp.nr, rc = FALLBACK;
    if (nr == self->nr_newfstatat)
        rc = do_newfstatat(self, tid, &info);
    else if (nr == self->nr_openat)
        rc = do_openat(self, tid, slot, &info);
    else if (nr == self->nr_getdents64)
        rc = do_getdents64(self, tid, &info);
    else if (nr == self->nr_access || nr == self->nr_faccessat || nr == self->nr_faccessat2)
        rc = do_access(self, tid, &info);
    else if (self->changing != Py_None) {
        for (int c = 0; c < N_CHANGES; c++)
            if (nr == self->nr_change[c]) {
                rc = do_change(self, tid, c, &info);
                break;
            }
    }
    if (rc == ANSWERED) {
        self->seccomp_stops++;
        if (nr >= 0 && nr < NR_MAX)
            self->answered[nr]++;
    }
    return rc;
}

/* -- the Python type ---------------------------------------------------------------------- */

static PyObject *Engine_wait(Engine *self, PyObject *Py_UNUSED(ignored))
{
    if (self->held_pid > 0) {
        pid_t pid = self->held_pid;
        self->held_pid = 0;
        return Py_BuildValue("(ii)", pid, self->held_status);
    }
    for (;;) {
        if (PyErr_CheckSignals() < 0)
            return NULL;
        int status;
        pid_t pid;
        Py_BEGIN_ALLOW_THREADS
        pid = waitpid(-1, &status, __WALL);
        Py_END_ALLOW_THREADS
        if (pid < 0) {
            if (errno == EINTR)
                continue;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        if (WIFSTOPPED(status) && try_stop(self, pid, status) == ANSWERED)
            continue;
        if (PyErr_Occurred()) {      /* raised while deciding: the next wait() hands it over */
            self->held_pid = pid;
            self->held_status = status;
            return NULL;
        }
        return Py_BuildValue("(ii)", pid, status);
    }
}

static PyObject *Engine_enable(Engine *self, PyObject *args)
{
    int tid, slot;
    if (!PyArg_ParseTuple(args, "ii", &tid, &slot))
        return NULL;
    if (tid <= 0 || tid >= self->tids || slot < 0 || slot >= self->slots)
        Py_RETURN_NONE;
    if (self->pending[slot].tid != tid)     /* a slot freed by a thread that died mid-call */
        clear_pending(&self->pending[slot]);
    self->slot_of[tid] = slot + 1;
    self->eligible[tid] = 1;
    Py_RETURN_NONE;
}

static PyObject *Engine_disable(Engine *self, PyObject *args)
{
    int tid;
    if (!PyArg_ParseTuple(args, "i", &tid))
        return NULL;
    if (tid > 0 && tid < self->tids)
        self->eligible[tid] = 0;     /* an open in flight still finishes here */
    Py_RETURN_NONE;
}

static PyObject *Engine_forget(Engine *self, PyObject *args)
{
    int tid;
    if (!PyArg_ParseTuple(args, "i", &tid))
        return NULL;
    int slot = slot_of(self, tid);
    if (slot >= 0 && self->pending[slot].tid == tid)
        clear_pending(&self->pending[slot]);
    if (tid > 0 && tid < self->tids)
        self->slot_of[tid] = self->eligible[tid] = 0;
    Py_RETURN_NONE;
}

static PyObject *Engine_counts(Engine *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *by_nr = PyDict_New();
    if (by_nr == NULL)
        return NULL;
    for (int nr = 0; nr < NR_MAX; nr++) {
        if (!self->answered[nr])
            continue;
        PyObject *k = PyLong_FromLong(nr), *v = PyLong_FromUnsignedLongLong(self->answered[nr]);
        if (k == NULL || v == NULL || PyDict_SetItem(by_nr, k, v) < 0) {
            Py_XDECREF(k); Py_XDECREF(v); Py_DECREF(by_nr);
            return NULL;
        }
        Py_DECREF(k); Py_DECREF(v);
    }
    return Py_BuildValue("(KKN)", self->seccomp_stops, self->exit_stops, by_nr);
}

static PyObject *Engine_get_stat_ok(Engine *self, void *c) { return PyBool_FromLong(self->stat_ok); }

static int Engine_set_stat_ok(Engine *self, PyObject *v, void *c)
{
    int t = v ? PyObject_IsTrue(v) : 0;
    if (t < 0)
        return -1;
    self->stat_ok = t;
    return 0;
}

static int Engine_init(Engine *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"area", "plain", "learn", "names", "learn_name", "slot_base",
                            "slot_size", "slots",
                            "nr_newfstatat", "nr_openat", "nr_getdents64", "nr_openat2",
                            "nr_access", "nr_faccessat", "nr_faccessat2", "changes", "upper",
                            "opening", "opened", "changing", NULL};
    PyObject *area, *plain, *learn, *opening = Py_None, *opened = Py_None;
    PyObject *name_dict, *learn_name;
    PyObject *changing = Py_None, *changes = NULL;
    unsigned long long base, size;
    Py_ssize_t slots;
    const char *upper = "";
    Py_ssize_t upper_len = 0;
    self->nr_access = self->nr_faccessat = self->nr_faccessat2 = -1;
    for (int c = 0; c < N_CHANGES; c++)
        self->nr_change[c] = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO!OO!OKKniiii|iiiO!y#OOO", names, &area,
                                     &PyDict_Type, &plain, &learn, &PyDict_Type, &name_dict,
                                     &learn_name, &base, &size, &slots,
                                     &self->nr_newfstatat, &self->nr_openat,
                                     &self->nr_getdents64, &self->nr_openat2, &self->nr_access,
                                     &self->nr_faccessat, &self->nr_faccessat2, &PyTuple_Type,
                                     &changes, &upper, &upper_len, &opening, &opened,
                                     &changing))
        return -1;
    if (changes != NULL) {
        if (PyTuple_GET_SIZE(changes) != N_CHANGES) {
            PyErr_SetString(PyExc_ValueError, "changes: one number for each of CHANGES");
            return -1;
        }
        for (int c = 0; c < N_CHANGES; c++) {
            self->nr_change[c] = (int)PyLong_AsLong(PyTuple_GET_ITEM(changes, c));
            if (self->nr_change[c] == -1 && PyErr_Occurred())
                return -1;
        }
    }
    if (upper_len >= PATH_MAX_ || (upper_len > 0 && upper[0] != '/')) {
        PyErr_SetString(PyExc_ValueError, "upper: an absolute path");
        return -1;
    }
    if ((opening != Py_None || opened != Py_None || changing != Py_None) &&
            !(PyCallable_Check(opening) && PyCallable_Check(opened)
              && PyCallable_Check(changing))) {
        PyErr_SetString(PyExc_TypeError, "opening, opened, changing: all callable, or None");
        return -1;
    }
    if (self->area.obj != NULL || self->slot_of != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Engine is initialised once");
        return -1;
    }
    if (PyObject_GetBuffer(area, &self->area, PyBUF_WRITABLE) < 0)
        return -1;
    if ((unsigned long long)self->area.len < size * (unsigned long long)slots) {
        PyErr_SetString(PyExc_ValueError, "the slot area is smaller than its slots");
        return -1;
    }
    long pid_max = 4194304;          /* the kernel's ceiling; /proc tells the setting */
    FILE *f = fopen("/proc/sys/kernel/pid_max", "re");
    if (f != NULL) {
        if (fscanf(f, "%ld", &pid_max) != 1 || pid_max <= 0 || pid_max > 4194304)
            pid_max = 4194304;
        fclose(f);
    }
    self->tids = pid_max + 1;
    self->slot_of = PyMem_Calloc((size_t)self->tids, sizeof(int32_t));
    self->eligible = PyMem_Calloc((size_t)self->tids, 1);
    self->pending = PyMem_Calloc((size_t)slots, sizeof(Pending));
    if (self->slot_of == NULL || self->eligible == NULL || self->pending == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->slots = slots;
    self->slot_base = base;
    self->slot_size = size;
    self->stat_ok = 1;
    Py_INCREF(plain);
    self->plain = plain;
    Py_INCREF(learn);
    self->learn = learn;
    Py_INCREF(name_dict);
    self->names = name_dict;
    Py_INCREF(learn_name);
    self->learn_name = learn_name;
    memcpy(self->upper, upper, (size_t)upper_len);
    self->upper[upper_len] = 0;
    self->upper_len = upper_len == 1 ? 0 : upper_len;     /* "/" maps nothing */
    Py_INCREF(opening);
    self->opening = opening;
    Py_INCREF(opened);
    self->opened = opened;
    Py_INCREF(changing);
    self->changing = changing;
    return 0;
}

static void Engine_dealloc(Engine *self)
{
    if (self->area.obj != NULL)
        PyBuffer_Release(&self->area);
    Py_CLEAR(self->plain);
    Py_CLEAR(self->learn);
    Py_CLEAR(self->names);
    Py_CLEAR(self->learn_name);
    Py_CLEAR(self->opening);
    Py_CLEAR(self->opened);
    Py_CLEAR(self->changing);
    if (self->pending != NULL)
        for (Py_ssize_t i = 0; i < self->slots; i++)
            Py_CLEAR(self->pending[i].created);
    PyMem_Free(self->slot_of);
    PyMem_Free(self->eligible);
    PyMem_Free(self->pending);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Engine_methods[] = {
    {"wait", (PyCFunction)Engine_wait, METH_NOARGS,
     "wait() -> (pid, status): the next stop (or exit) Python must handle."},
    {"enable", (PyCFunction)Engine_enable, METH_VARARGS,
     "enable(tid, slot): its reads in plain directories may be answered here."},
    {"disable", (PyCFunction)Engine_disable, METH_VARARGS,
     "disable(tid): its stops go to Python (an open in flight still finishes here)."},
    {"forget", (PyCFunction)Engine_forget, METH_VARARGS, "forget(tid): it is gone."},
    {"counts", (PyCFunction)Engine_counts, METH_NOARGS,
     "counts() -> (seccomp stops, exit stops, {nr: stops}) answered here."},
    {NULL}
};

static PyGetSetDef Engine_getset[] = {
    {"stat_ok", (getter)Engine_get_stat_ok, (setter)Engine_set_stat_ok,
     "stat answers need nothing patched in (no recorded owners)", NULL},
    {NULL}
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "appvirt.tracer._fastpath.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Answers the stops that need no Python; hands back the others.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
    .tp_getset = Engine_getset,
};

static PyObject *split(PyObject *mod, PyObject *args)
{
    /* split(base, path) -> (dir, name) or None: split_path on a given base, for tests. */
    const char *base, *path;
    Py_ssize_t blen, plen;
    if (!PyArg_ParseTuple(args, "y#y#", &base, &blen, &path, &plen))
        return NULL;
    (void)blen;
    char dir[PATH_MAX_];
    Py_ssize_t dl;
    const char *name;
    if (plen >= PATH_MAX_ || memchr(path, 0, (size_t)plen))
        Py_RETURN_NONE;
    /* A relative path is joined to base as a cwd would be: fake it as absolute. */
    char joined[2 * PATH_MAX_];
    const char *p = path;
    Py_ssize_t len = plen;
    if (plen > 0 && path[0] != '/') {
        if (blen + 1 + plen >= PATH_MAX_)
            Py_RETURN_NONE;
        memcpy(joined, base, (size_t)blen);
        joined[blen] = '/';
        memcpy(joined + blen + 1, path, (size_t)plen);
        p = joined;
        len = blen + 1 + plen;
        if (blen == 1) {             /* base "/" */
            p = joined + 1;
            len--;
        }
    }
    if (split_path(NULL, 0, 0, AT_FDCWD_, p, len, dir, &dl, &name) < 0)
        Py_RETURN_NONE;
    return Py_BuildValue("(y#y#)", dir, dl, name, (Py_ssize_t)(len - (name - p)));
}

static PyMethodDef module_methods[] = {
    {"split", split, METH_VARARGS, "split(base, path) -> (dir, name) or None"},
    {NULL}
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "appvirt.tracer._fastpath",
    "The compiled part of the tracer's wait loop (see fastpath.py).", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastpath(void)
{
    if (PyType_Ready(&EngineType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&EngineType);
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0) {
        Py_DECREF(&EngineType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
