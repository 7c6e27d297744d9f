/* The reads the engine answers (stat, open, access) and the opens it makes from the thread's
 * slot, in plain, NAMES and owned directories (see _fastpath.c). */
#include "_fastpath.h"

#include <sys/vfs.h>


void clear_pending(Pending *p)
{
    pid_t restarts_of = p->restarts_of;
    int restarts = p->restarts;
    Py_CLEAR(p->created);
    memset(p, 0, sizeof(Pending));
    p->restarts_of = restarts_of;
    p->restarts = restarts;
}

/* The open p holds (tid's) ended: in ELOOP, a restart (one more in a row), or otherwise. */
void count_restart(Pending *p, pid_t tid, int restart)
{
    p->restarts = restart ? (p->restarts_of == tid ? p->restarts : 0) + 1 : 0;
    p->restarts_of = tid;
}

/* Whether tid's open has restarted MAX_RESTARTS times in a row: the next ELOOP is the
 * program's. */
int restarted_enough(const Pending *p, pid_t tid)
{
    return p->restarts_of == tid && p->restarts >= MAX_RESTARTS;
}

/* The directory op's path names by itself (directory_itself), a plain, owned or name-by-name
 * one: 0 and its stat; for a plain one that is not there, -ENOENT or -ENOTDIR, as the walk
 * of its host path (its view's) without symlinks fails (gcc stats "lib/12/." and the like
 * in every library directory it might search); 1 otherwise (Python's: a symlink on the way,
 * another kind of directory). */
static int stat_itself(Engine *self, pid_t tid, long dirfd, const Operand *op, int follow,
                       struct stat *st)
{
    char host[PATH_MAX_];
    int fails = 0;
    int kind = op->path_len < 0 ? -1 : directory_itself(self, tid, dirfd, op->path,
                                                         op->path_len, follow, host, &fails);
    if (kind < 0)                    /* (a ".." after a plain directory that is not there) */
        return fails != 0 && !self->log_reads ? -fails : 1;
    long fd = openat2_(host, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return kind == PLAIN && (errno == ENOENT || errno == ENOTDIR) ? -errno : 1;
    int got = fstat((int)fd, st) == 0;
    close((int)fd);
    return got ? 0 : 1;
}

static int stat_shown(Engine *self, pid_t tid, long dirfd, const Operand *op, struct stat *st);

/* readlink(path, buf, size), readlinkat(dirfd, path, buf, size), as the handler mirrors it:
 * the link's own text, cut to the buffer; EINVAL for what is not a link. */
int do_readlink(Engine *self, pid_t tid, const struct __ptrace_syscall_info *in)
{
    const uint64_t *a = in->seccomp.args;
    int at = (int)in->seccomp.nr == self->nr_readlinkat;
    long dirfd = at ? (long)(int)a[0] : AT_FDCWD_;
    uint64_t buf = a[at + 1];
    int size = (int)a[at + 2];
    Operand op;
    struct stat st;
    int rc = find_object(self, tid, dirfd, a[at], 0, &op, &st);
    if (rc > 0) {                    /* a directory named by itself, or one of the upper */
        int itself = stat_itself(self, tid, dirfd, &op, 0, &st);   /* layer: not a link */
        if (itself > 0)              /* (gcc's realpath of $TMPDIR reads each ancestor) */
            itself = stat_shown(self, tid, dirfd, &op, &st) < 0 ? 1 : 0;
        rc = itself > 0 ? FALLBACK : itself < 0 ? itself : -EINVAL;
    }
    else if (rc == 0 && !S_ISLNK(st.st_mode))
        rc = -EINVAL;
    if (rc > 0)
        return FALLBACK;
    long result = rc;
    if (rc == 0) {
        char text[PATH_MAX_];
        ssize_t n = size <= 0 ? -1 : readlink_of(&op, text, sizeof text);
        if (size <= 0)
            result = -EINVAL;
        else if (n < 0)
            result = -errno;
        else if ((result = n < size ? n : size) > 0
                 && write_mem(tid, buf, text, (size_t)result) < 0)
            result = -EFAULT;
    }
    emulate(self, tid, result);
    return ANSWERED;
}

/* getcwd: the working directory's guest path, when it is a plain, an owned or a merged
 * directory (whose guest path is the host's, or the one below the upper layer's root:
 * OverlayView.to_guest's, a directory decided so being neither hidden nor reserved). */
int do_getcwd(Engine *self, pid_t tid, const struct __ptrace_syscall_info *in)
{
    char guest[PATH_MAX_], host[PATH_MAX_];
    Py_ssize_t host_len, n = fd_path(self->upper, self->upper_len, tid, AT_FDCWD_, guest, NULL);
    if (n < 0)
        return FALLBACK;
    int kind = dir_kind(self, guest, n, host, &host_len, NULL);
    if (kind != PLAIN && kind != OWNED && kind != MERGED && kind != NAMES && kind != ITSELF)
        return FALLBACK;
    long result = n + 1;
    if (in->seccomp.args[1] < (uint64_t)n + 1)
        result = -ERANGE;
    else if (write_mem(tid, in->seccomp.args[0], guest, (size_t)n + 1) < 0)
        result = -EFAULT;
    emulate(self, tid, result);
    return ANSWERED;
}

/* Whether the regular file at path starts with "#!" (a script: Python runs its interpreter's
 * checks); -1 when it cannot be read or is no regular file any more (Python says why; opened
 * without blocking, as a FIFO put there meanwhile would block the tracer). */
static int is_script(const char *path)
{
    char head[2];
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0)
        return -1;
    ssize_t n = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? read(fd, head, sizeof head) : -1;
    close(fd);
    return n < 0 ? -1 : n == 2 && head[0] == '#' && head[1] == '!';
}

/* execve of a path that names nothing in a plain directory (a shell's search of $PATH):
 * ENOENT or ENOTDIR, as the handler says it. A program the host has at the very path the
 * program names (a regular file, not a script, in a plain directory reached without a
 * symlink, or through symlinks each in such a directory: /usr/bin/sh, cc), under a policy
 * with no exec rules: run natively, as the handler's Rewrite runs it when the host resolves
 * the path alike, the path the program gave going to the kernel from the slot (the registers
 * restored at the exit stop when the exec fails; PTRACE_EVENT_EXEC, Python's, ends the call
 * otherwise). */
int do_execve(Engine *self, pid_t tid, int slot, const struct __ptrace_syscall_info *in)
{
    Operand op;
    struct stat st;
    int rc = find_object(self, tid, AT_FDCWD_, in->seccomp.args[0], 1, &op, &st);
    if (rc < 0 && op.kind == PLAIN && op.host_only) {
        emulate(self, tid, rc);
        return ANSWERED;
    }
    if (rc != 0 || !self->exec_native || !S_ISREG(st.st_mode) || !op.host_only
            || (op.kind != PLAIN && op.kind != NAME) || strcmp(op.host, op.guest) != 0
            || (size_t)op.path_len + 1 > self->slot_size || is_script(op.host) != 0)
        return FALLBACK;
    char *mine = (char *)self->area.buf + (size_t)slot * self->slot_size;
    memcpy(mine, op.path, (size_t)op.path_len + 1);
    struct user_regs_struct regs;
    Pending *p = hold_call(self, tid, slot, in->seccomp.nr, &regs);
    if (p == NULL)
        return ANSWERED;
    regs.rdi = self->slot_base + (unsigned long long)slot * self->slot_size;
    run_held(p, tid, &regs);
    return ANSWERED;
}

/* A stat answer of OverlayFS.upper_dir_stat (upper directory, link count or -1, host path or
 * b"", its inode, its ctime in ns, whether it keeps the host directory's identity): 0 and
 * *st; 1 when the host's object it depends on has changed since; -1 (Python's). */
static int shown_answer(PyObject *v, struct stat *st)
{
    PyObject *upper = PyTuple_GET_SIZE(v) == 6 ? PyTuple_GET_ITEM(v, 0) : NULL;
    PyObject *lower = upper != NULL ? PyTuple_GET_ITEM(v, 2) : NULL;
    if (upper == NULL || !PyBytes_Check(upper) || !PyBytes_Check(lower))
        return -1;
    long long nlink = PyLong_AsLongLong(PyTuple_GET_ITEM(v, 1));
    unsigned long long ino = PyLong_AsUnsignedLongLongMask(PyTuple_GET_ITEM(v, 3));
    long long ctime = PyLong_AsLongLong(PyTuple_GET_ITEM(v, 4));
    int keeps = PyTuple_GET_ITEM(v, 5) == Py_True;
    if (PyErr_Occurred())
        return -1;
    struct stat host;
    if (nlink >= 0) {                /* merged: while the host's object is what it was */
        unsigned long long now_ino = 0;
        long long now_ctime = 0;
        if (lstat(PyBytes_AS_STRING(lower), &host) == 0) {
            now_ino = host.st_ino;
            now_ctime = host.st_ctim.tv_sec * 1000000000LL + host.st_ctim.tv_nsec;
        } else if (errno != ENOENT && errno != ENOTDIR) {
            return -1;
        }
        if (now_ino != ino || now_ctime != ctime)
            return 1;
    }
    long fd = openat2_(PyBytes_AS_STRING(upper), O_PATH | O_DIRECTORY | O_CLOEXEC);
    int ok = fd >= 0 && fstat((int)fd, st) == 0;
    if (fd >= 0)
        close((int)fd);
    if (ok && nlink >= 0)
        st->st_nlink = (nlink_t)nlink;
    if (ok && nlink >= 0 && keeps && ino != 0) {  /* the host's directory, checked above */
        st->st_dev = host.st_dev;
        st->st_ino = host.st_ino;
    }
    return ok ? 0 : -1;
}

/* The stat of a directory of the upper layer under upper-layer directories (a name learn_name
 * gave its OverlayFS.upper_dir_stat tuple: $TMPDIR's ancestors once the program made something
 * there), answered as the handler answers it: the upper directory's own stat, with the merged
 * link count learnt while the host object it depends on is what it was then (learnt again
 * otherwise). 0 and *st, or -1 (Python's). */
static int stat_shown(Engine *self, pid_t tid, long dirfd, const Operand *op, struct stat *st)
{
    char guest[PATH_MAX_];
    int follow = 0;                  /* (a directory: following changes nothing) */
    if (op->path_len < 0 || PyErr_Occurred()
            || itself_path(self, tid, dirfd, op->path, op->path_len, guest, &follow, NULL) < 0)
        return -1;
    for (int learnt = 0; learnt < 2; learnt++) {
        PyObject *v = NULL;
        if (name_entry(self, guest, &v) != 2)
            return -1;
        int rc = shown_answer(v, st);
        Py_DECREF(v);
        if (rc <= 0)
            return rc;
        if (forget_name(self, guest, (Py_ssize_t)strlen(guest)) < 0)
            return -1;
    }
    return -1;
}

/* The fields of the record of a read of op at log level all that failed with rc: ENOENT
 * where its directory is there, the path (with the rule for a stat, has_rule). -1 for the
 * rest, Python's: a walk that fails before the name is logged with the handlers' detail,
 * which names the first missing directory or the whole path depending on how they looked. */
static int missing_fields(const Operand *op, int rc, int has_rule)
{
    return rc == -ENOENT && op->dir_there ? REC_PATH | REC_RESULT | (has_rule ? REC_RULE : 0)
                                          : -1;
}

/* A stat at log level all of a name in a plain directory (find_object's rc, *st), answered
 * and logged as the handler answers and logs it: 0; -1 when Python must (nothing done). */
static int stat_logged(Engine *self, pid_t tid, const struct __ptrace_syscall_info *in,
                       int path_arg, const Operand *op, int rc, const struct stat *st,
                       uint64_t buf)
{
    int fields = rc == 0 ? REC_RULE | REC_PATH | REC_RESULT : missing_fields(op, rc, 1);
    if (fields < 0 || (rc == 0 && write_mem(tid, buf, st, sizeof *st) < 0))
        return -1;                   /* EFAULT: Python explains */
    if (read_record(self, tid, in, path_arg, op, fields, rc) < 0)
        return -1;
    emulate(self, tid, rc);
    return 0;
}

int do_newfstatat(Engine *self, pid_t tid, const struct __ptrace_syscall_info *in)
{
    const uint64_t *a = in->seccomp.args;
    uint64_t as_at[4];               /* stat(path, buf) and lstat: newfstatat's arguments */
    int nr = (int)in->seccomp.nr;
    if (nr == self->nr_stat || nr == self->nr_lstat) {
        as_at[0] = (uint64_t)(int64_t)AT_FDCWD_;
        as_at[1] = a[0];
        as_at[2] = a[1];
        as_at[3] = nr == self->nr_lstat ? AT_SYMLINK_NOFOLLOW_ : 0;
        a = as_at;
    }
    if (!self->stat_ok || a[3] & ~(unsigned long long)(AT_SYMLINK_NOFOLLOW_ | AT_NO_AUTOMOUNT_
                                                       | AT_EMPTY_PATH_))
        return FALLBACK;
    int path_arg = a == as_at ? 0 : 1;
    if (a[3] & AT_EMPTY_PATH_) {
        char first;
        struct iovec local = {&first, 1}, remote = {(void *)(uintptr_t)a[1], 1};
        if (process_vm_readv(tid, &local, 1, &remote, 1, 0) == 1 && first == 0) {
            if (self->log_reads && read_record(self, tid, in, path_arg, NULL, 0, 0) < 0)
                return FALLBACK;
            let_run(self, tid);            /* fstat of the fd's own object: the kernel's */
            return ANSWERED;
        }
    }
    Operand op;
    struct stat st;
    int follow = !(a[3] & AT_SYMLINK_NOFOLLOW_);
    int rc = find_object(self, tid, (long)(int)a[0], a[1], follow, &op, &st);
    if (self->log_reads)             /* only the records of names in plain directories */
        return rc > 0 || op.kind != PLAIN
               || stat_logged(self, tid, in, path_arg, &op, rc, &st, a[2]) < 0
               ? FALLBACK : ANSWERED;
    if (rc > 0) {                    /* a directory named by itself (".", "/usr"), or one */
        int itself = stat_itself(self, tid, (long)(int)a[0], &op, follow, &st);   /* upper */
        if (itself > 0 && stat_shown(self, tid, (long)(int)a[0], &op, &st) < 0)
            return FALLBACK;
        emulate(self, tid, itself < 0 ? itself : write_mem(tid, a[2], &st, sizeof st) < 0 ? -EFAULT
                                                                                     : 0);
        return ANSWERED;
    }
    /* In an owned directory a directory's link count is the view's own (merged_nlink) when
     * it is owned too (its subdirectories are its upper directory's, counted by the kernel). */
    if (op.kind == OWNED && rc == 0 && S_ISDIR(st.st_mode) && !owned_itself(self, &op))
        return FALLBACK;
    long result = rc;
    if (rc == 0 && write_mem(tid, a[2], &st, sizeof st) < 0)
        result = -EFAULT;
    emulate(self, tid, result);
    return ANSWERED;
}

int do_openat(Engine *self, pid_t tid, int slot, const struct __ptrace_syscall_info *in)
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
    int follow = !(flags & O_NOFOLLOW) && !(flags & O_CREAT && flags & O_EXCL);
    int rc = find_object(self, tid, (long)(int)a[0], a[1], follow, &op, &st);
    if (rc > 0) {
        /* A directory named by itself (".", "dir/", "/usr") opened as opendir opens it: the
         * host's own directory when its view is the host's (plain, name by name, or "/"
         * itself), from the slot as any read, O_DIRECTORY failing what is not a directory
         * as the program's call would; the rest (an owned or merged one) is Python's. */
        if (!(flags & O_DIRECTORY) || (flags & O_ACCMODE) != O_RDONLY
                || flags & (O_CREAT | O_TRUNC) || self->log_reads || op.path_len < 0)
            return FALLBACK;
        int kind = directory_itself(self, tid, (long)(int)a[0], op.path, op.path_len, follow,
                                    op.host, NULL);
        if (kind != PLAIN && kind != NAMES && kind != ITSELF)
            return FALLBACK;
        op.kind = PLAIN;
        rc = 0;
    } else if (rc == 0 && S_ISLNK(st.st_mode)) {   /* a symlink not followed: ELOOP, */
        return FALLBACK;                            /* EEXIST or O_PATH: Python's */
    }
    unsigned long long mode = 0;
    int create = 0;
    int redirected = op.kind == OWNED || (op.kind == MERGED && op.upper_obj);
    if (self->log_reads && !redirected && op.kind != PLAIN)
        return FALLBACK;             /* log level all: the records of plain reads only */
    if (!redirected && rc == 0 && op.kind == NAME && op.passed && !self->log_reads) {
        /* /dev/null & co.: a device a passthrough rule opens for writing too, as on the
         * host (the handlers rewrite the open to the host path, with no record but at level
         * all); a shell's ">/dev/null". */
        if (flags & O_CREAT)
            mode = a[3] & 07777;
    } else if (!redirected) {
        /* The host's object (or, in a merged directory, a name whited out): only reads. A
         * write copies the object up, a creation removes the whiteout: Python does those. */
        if ((flags & O_ACCMODE) != O_RDONLY || flags & (O_CREAT | O_TRUNC)) {
            /* A write or a creation in a plain directory that is itself absent (git's
             * objects/XX before its first object) fails as the kernel fails it, before any
             * mode is asked: the handlers log nothing of it either (but at level all). */
            if (rc < 0 && op.kind == PLAIN && !op.dir_there && !self->log_reads) {
                emulate(self, tid, rc);
                return ANSWERED;
            }
            return FALLBACK;
        }
        if (rc < 0) {
            int fields = self->log_reads ? missing_fields(&op, rc, 0) : 0;
            if (fields < 0 || (self->log_reads && read_record(self, tid, in, 1, &op, fields,
                                                               rc) < 0))
                return FALLBACK;
            emulate(self, tid, rc);
            return ANSWERED;
        }
    } else {
        /* As do_open() makes it (in an owned directory, or in a merged one for an upper
         * object or a name in neither layer): a creation, a write or a read of the upper
         * object; a missing name without O_CREAT fails as it fails it, before any mode is
         * asked, with no record. O_EXCL on an existing name is Python's to explain. */
        int exists = rc == 0;
        if (!exists && !(flags & O_CREAT)) {
            if (rc != -ENOENT || self->log_reads)   /* (no record: at level all, Python's) */
                return FALLBACK;
            emulate(self, tid, rc);
            return ANSWERED;
        }
        if (exists && flags & O_CREAT && flags & O_EXCL)
            return FALLBACK;
        create = !exists;
        if (create && self->eligible[tid] == READS)
            return FALLBACK;         /* its owner is the identity's (own_created): Python's */
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
    if (redirected) {                /* the handlers' record: a redirected open */
        if (create && (created = PyBytes_FromString(op.guest)) == NULL)
            return FALLBACK;
        CallRecord r = {.rule = op.rule, .rule_len = op.rule_len, .path = op.guest,
                        .host_path = op.host};
        r.paths[1] = op.path;
        seq = log_call(self, tid, (int)in->seccomp.nr, a, &r);
    } else if (self->log_reads
               && (seq = read_record(self, tid, in, 1, &op, REC_RULE | REC_PATH, 0)) < 0) {
        return FALLBACK;             /* (its result is logged at the exit stop) */
    }
    char *mine = (char *)self->area.buf + (size_t)slot * self->slot_size;
    unsigned long long at = self->slot_base + (unsigned long long)slot * self->slot_size;
    struct open_how how = {.flags = flags, .mode = mode,
                           .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
    memcpy(mine, op.host, plen);
    memcpy(mine + how_off, &how, sizeof how);
    struct user_regs_struct regs;
    Pending *p = hold_call(self, tid, slot, in->seccomp.nr, &regs);
    if (p == NULL) {
        Py_XDECREF(created);
        return ANSWERED;
    }
    p->owned = redirected;
    p->seq = seq;
    p->created = created;
    regs.rdi = (unsigned long long)AT_FDCWD_;
    regs.rsi = at;
    regs.rdx = at + how_off;
    regs.r10 = OPEN_HOW_SIZE;
    regs.orig_rax = (unsigned long long)self->nr_openat2;
    if (self->tramp_base && !restarted_enough(p, tid)) {   /* no exit stop: its trampoline */
                                                            /* restores (inflight.c) */
        p->how = regs.rdx;
        if (created != NULL)
            list_open(self, p, slot);
        run_by_trampoline(self, p, tid, slot, &regs);
    } else {
        run_held(p, tid, &regs);
    }
    return ANSWERED;
}

/* statfs(path, buf): the kernel's statfs of the object the view names (the upper layer's for
 * one of the overlay's), made by the tracer and copied into the program's buffer, as the
 * handler mirrors it (reads.STATFS); a name that is not there fails as there. libselinux
 * asks it at each start of ls, cp, mkdir, sed, tar, find ... (/sys/fs/selinux, /selinux). A
 * directory named by itself is Python's. */
int do_statfs(Engine *self, pid_t tid, const struct __ptrace_syscall_info *in)
{
    Operand op;
    struct stat st;
    int rc = find_object(self, tid, AT_FDCWD_, in->seccomp.args[0], 1, &op, &st);
    if (rc > 0)
        return FALLBACK;
    long result = rc;
    if (rc == 0) {
        struct statfs fs;
        result = syscall(SYS_statfs, op.host, &fs) < 0 ? -errno
                 : write_mem(tid, in->seccomp.args[1], &fs, sizeof fs) < 0 ? -EFAULT : 0;
    }
    emulate(self, tid, result);
    return ANSWERED;
}

/* access(path, mode), faccessat(dirfd, path, mode), faccessat2(..., flags): the tracer asks
 * the kernel about the object it found, as the handler's faccessat2 on the host path does. */
int do_access(Engine *self, pid_t tid, const struct __ptrace_syscall_info *in)
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
    int rc = find_object(self, tid, dirfd, addr, follow, &op, &st);
    /* At log level all, only the names of plain directories, with their records. */
    if (self->log_reads && (rc > 0 || op.kind != PLAIN || (rc < 0 && missing_fields(&op, rc, 1)
                                                            < 0)))
        return FALLBACK;
    if (rc > 0) {                    /* a directory named by itself (".", "dir/") */
        int fails = 0;
        op.kind = op.path_len >= 0 ? directory_itself(self, tid, dirfd, op.path, op.path_len,
                                                      follow, op.host, &fails) : -1;
        if (op.kind < 0 && fails != 0 && !(mode & W_OK)) {
            emulate(self, tid, -fails);    /* a ".." after a plain directory that is not there */
            return ANSWERED;
        }
        if (op.kind < 0)
            return FALLBACK;
        op.dfd = -1;                 /* op.host is that directory's whole path */
        rc = 0;
    }
    if (op.kind != OWNED && mode & W_OK)
        return FALLBACK;
    long result = rc;
    int at_flags = (flags & AT_EACCESS) | (follow ? 0 : AT_SYMLINK_NOFOLLOW_);
    if (rc == 0)
        result = (op.dfd >= 0 ? syscall(SYS_faccessat2, op.dfd, name_of(&op), mode, at_flags)
                              : syscall(SYS_faccessat2, AT_FDCWD_, op.host, mode, at_flags))
                 < 0 ? -errno : 0;
    if (self->log_reads && read_record(self, tid, in, plain_call ? 0 : 1, &op,
                                       REC_RULE | REC_PATH | REC_RESULT, result) < 0)
        return FALLBACK;
    emulate(self, tid, result);
    return ANSWERED;
}

/* The exit stop of an open made from the slot (the next syscall stop after resuming the
 * seccomp stop with PTRACE_SYSCALL): give the program its registers back; for an open in an
 * owned directory, the created file goes to the index; a logged one's result to the log. */
void finish_open(Engine *self, Pending *p, pid_t tid)
{
    PyObject *created = p->created;
    int owned = p->owned;
    long long seq = p->seq;
    p->created = NULL;
    p->tid = 0;
    long result;
    int restart = give_back(self, p, tid, &result);
    if (restart < 0) {
        Py_XDECREF(created);
        return;                          /* gone: its exit report follows */
    }
    /* A file made: the overlay's index learns it, and what was decided of the name is
     * forgotten (note_made). */
    if (owned && !restart && created != NULL && result >= 0
            && note_made_at(self, PyBytes_AS_STRING(created), KIND_UNKNOWN, tid, result) < 0)
        PyErr_WriteUnraisable(self->made);          /* out of memory: the next load has it */
    if (seq > 0 && !restart)         /* a logged open (redirected, or a read at level all) */
        log_result(self, tid, seq, result);
    Py_XDECREF(created);
    let_run(self, tid);
}

