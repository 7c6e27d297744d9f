/* The changing calls the engine makes itself in owned directories, and in merged ones those
 * that touch the upper layer's objects alone (merged_change; see _fastpath.c).
 *
 * In an owned directory the view of every name is the upper directory's own (OverlayFS.
 * owned_dir), so a change there is the same change made to the upper object: what the
 * overlay's own operations (Overlay.unlink, rmdir, mkdir, chmod, chown, utimens, link,
 * rename) do for such a name, with nothing else to update but the index, which Python
 * brings in step afterwards from what `made` tells of each name (note_made, applied by
 * fastpath.FastPath.drain), before it decides anything again. Each change is made relative
 * to a descriptor of the upper directory (or of the object) opened without crossing a
 * symlink, so no symlink the program plants on the way can move it out of the upper layer.
 * Only a change that succeeds is answered here: when the kernel refuses one, nothing was
 * changed and the stop goes to Python, whose handlers explain it (and log it) as before.
 */
#include "_fastpath.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE 1
#endif
#define SYS_fchmodat2_ 452               /* x86_64; Linux 6.6 */
#define UTIME_NOW_ ((1L << 30) - 1)
#define UTIME_OMIT_ ((1L << 30) - 2)
#define TMP_PREFIX ".wh..wh..tmp."       /* overlay/names.py: removed by the next load */

/* An O_PATH descriptor of op's upper directory, reached without a symlink (the one held
 * for it, or opened now); -1: none. unpin_dir when done. */
static int pin_dir(const Operand *op)
{
    if (op->dfd >= 0)
        return op->dfd;
    char dir[PATH_MAX_];
    memcpy(dir, op->host, (size_t)op->host_dir);
    dir[op->host_dir] = 0;
    return (int)openat2_(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
}

static void unpin_dir(const Operand *op, int fd)
{
    if (fd >= 0 && fd != op->dfd)
        close(fd);
}

/* An O_PATH descriptor of op's object, never a symlink; -1: none. */
static int pin_object(const Operand *op)
{
    int fd = op->dfd >= 0 ? openat(op->dfd, name_of(op), O_PATH | O_NOFOLLOW | O_CLOEXEC)
                          : (int)openat2_(op->host, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd >= 0 && (fstat(fd, &st) < 0 || S_ISLNK(st.st_mode))) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The thread's umask, as TracerContext.umask reads it (022 when it cannot be read): its
 * process's kept, read from /proc once (a read costs 20 µs; git makes hundreds of
 * directories). Only umask(2) changes it, which stops (changes.sys_umask): while one runs,
 * none is kept; at its start and end every kept one is forgotten (forget_umasks). */
static unsigned umask_of(Engine *self, pid_t tid)
{
    pid_t pid = process_of(self, tid);
    uint32_t kept = pid < self->tids ? self->umasks[pid] : 0;
    if (kept >> UMASK_EPOCH_SHIFT == self->umask_epoch)
        return kept & 0777;
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/status", tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 022;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 022;
    buf[n] = 0;
    const char *at = strstr(buf, "\nUmask:");
    if (at == NULL)
        return 022;
    unsigned mask = (unsigned)strtoul(at + 7, NULL, 8) & 0777;
    if (self->keep_umasks && pid < self->tids)
        self->umasks[pid] = self->umask_epoch << UMASK_EPOCH_SHIFT | mask;
    return mask;
}

/* mkdir as Overlay.mkdir makes it: a directory under a temporary name, its mode (the
 * program's umask applied; set-group-ID inherited from the upper parent), then renamed into
 * place, so that an interruption never leaves a half-made directory under the real name. */
static int make_dir(Engine *self, pid_t tid, const Operand *op, unsigned long long mode)
{
    int dfd = pin_dir(op);
    if (dfd < 0)
        return -1;
    char tmp[64];
    snprintf(tmp, sizeof tmp, TMP_PREFIX "%d.c%llu", (int)getpid(), ++self->tmp_names);
    unsigned perm = (unsigned)(mode & ~(unsigned long long)umask_of(self, tid) & 01777);
    struct stat parent;
    if (fstat(dfd, &parent) == 0 && parent.st_mode & S_ISGID)
        perm |= S_ISGID;
    int rc = -1;
    if (mkdirat(dfd, tmp, 0700) == 0) {
        int fd = openat(dfd, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0 && fchmod(fd, perm) == 0
                && syscall(SYS_renameat2, dfd, tmp, dfd, name_of(op), RENAME_NOREPLACE) == 0)
            rc = 0;
        if (fd >= 0)
            close(fd);
        if (rc < 0)
            unlinkat(dfd, tmp, AT_REMOVEDIR);
    }
    unpin_dir(op, dfd);
    return rc;
}

/* A directory just made in an owned or a merged one, where the host has nothing, is owned
 * as FastPath._below_upper decides it (no rule tells it from its parent, whose rule it gets;
 * its ".." is the parent's upper directory, or for a merged parent the host's directory,
 * whose identity it keeps: OverlayView.kept_identity): decided now rather than learnt at
 * its first use (git makes each objects/XX, then writes in it; tar each directory of its
 * archive). Failing leaves it to learn. */
static void decide_made_dir(Engine *self, const Operand *op)
{
    struct stat host, parent;
    char merged[PATH_MAX_];
    if (op->kind == MERGED) {
        memcpy(merged, op->guest, (size_t)op->guest_dir);
        merged[op->guest_dir] = 0;
    }
    if (lstat(op->guest, &host) == 0 || (errno != ENOENT && errno != ENOTDIR) || op->dfd < 0
            || (op->kind == MERGED ? op->guest_dir < 2 || lstat(merged, &parent) < 0
                                     || !S_ISDIR(parent.st_mode)
                                   : fstat(op->dfd, &parent) < 0)
            || PyDict_Size(self->plain) >= MAX_DIRS_)
        return;
    PyObject *key = PyBytes_FromString(op->guest);
    PyObject *v = Py_BuildValue("(yy#K)", op->host, op->rule, op->rule_len,
                                (unsigned long long)parent.st_ino);
    if (key == NULL || v == NULL || PyDict_SetItem(self->plain, key, v) < 0)
        PyErr_Clear();               /* out of memory: learn decides it */
    else
        self->decided++;
    Py_XDECREF(key);
    Py_XDECREF(v);
}

/* unlink, or rmdir (flags AT_REMOVEDIR_): the kernel refuses a directory that is not empty,
 * overlay marks included, and Python then explains (Overlay.rmdir). */
static int remove_name(const Operand *op, int flags)
{
    int dfd = pin_dir(op);
    if (dfd < 0)
        return -1;
    int rc = unlinkat(dfd, name_of(op), flags);
    unpin_dir(op, dfd);
    return rc;
}

/* link (rename: 0) src to dst, both names in owned directories. */
static int link_or_move(const Operand *src, const Operand *dst, int link)
{
    int sfd = pin_dir(src), dfd = pin_dir(dst), rc = -1;
    if (sfd >= 0 && dfd >= 0)
        rc = link ? linkat(sfd, name_of(src), dfd, name_of(dst), 0)
                  : renameat(sfd, name_of(src), dfd, name_of(dst));
    unpin_dir(src, sfd);
    unpin_dir(dst, dfd);
    return rc;
}

/* uid_t/gid_t arguments: the low 32 bits ((uid_t)-1: unchanged). */
static uid_t id_arg(uint64_t v)
{
    return (uid_t)(v & 0xFFFFFFFFu);
}

/* The mode, owner or times of op's object, by its name in its directory held open, the name
 * never followed (a symlink swapped in meanwhile is changed itself, inside the upper
 * directory): 0, or -1 and errno (ENOSYS: a kernel without fchmodat2, before Linux 6.6). */
static int change_at(const Operand *op, int c, const uint64_t *a, const struct timespec *times)
{
    const char *name = name_of(op);
    switch (c) {
    case FCHMOD: case CHMOD:
        return (int)syscall(SYS_fchmodat2_, op->dfd, name, (mode_t)(a[1] & 07777),
                            AT_SYMLINK_NOFOLLOW_);
    case FCHMODAT:
        return (int)syscall(SYS_fchmodat2_, op->dfd, name, (mode_t)(a[2] & 07777),
                            AT_SYMLINK_NOFOLLOW_);
    case FCHOWN: case CHOWN: case LCHOWN:
        return fchownat(op->dfd, name, id_arg(a[1]), id_arg(a[2]), AT_SYMLINK_NOFOLLOW_);
    case FCHOWNAT:
        return fchownat(op->dfd, name, id_arg(a[2]), id_arg(a[3]), AT_SYMLINK_NOFOLLOW_);
    default:
        return utimensat(op->dfd, name, times, AT_SYMLINK_NOFOLLOW_);
    }
}

/* chmod, chown or utimensat of op's object itself, never a symlink: relative to its
 * directory held open (change_at), or through /proc/self/fd of the object pinned, which
 * names it whatever happens to its path meanwhile. `not_link`: the caller has seen that the
 * name is not a symlink (a name it looked up); else it is looked at here, but for chmod,
 * which the kernel refuses of a symlink itself (EOPNOTSUPP since Linux 6.6, when it does
 * fchmodat2: no answer here either way). */
static int change_object(const Operand *op, int c, const uint64_t *a,
                         const struct timespec *times, int not_link)
{
    int chmods = c == FCHMOD || c == CHMOD || c == FCHMODAT;
    if (op->dfd >= 0) {
        struct stat st;
        if (!not_link && !chmods && (fstatat(op->dfd, name_of(op), &st, AT_SYMLINK_NOFOLLOW_) < 0
                                     || S_ISLNK(st.st_mode)))
            return -1;
        int rc = change_at(op, c, a, times);
        if (rc == 0 || errno != ENOSYS)
            return rc;
    }
    int fd = pin_object(op);
    if (fd < 0)
        return -1;
    char at[40];
    snprintf(at, sizeof at, "/proc/self/fd/%d", fd);
    int rc;
    switch (c) {
    case FCHMOD: case CHMOD: rc = chmod(at, (mode_t)(a[1] & 07777)); break;
    case FCHMODAT: rc = chmod(at, (mode_t)(a[2] & 07777)); break;
    case FCHOWN: case CHOWN: case LCHOWN:
        rc = fchownat(fd, "", id_arg(a[1]), id_arg(a[2]), AT_EMPTY_PATH_);
        break;
    case FCHOWNAT: rc = fchownat(fd, "", id_arg(a[2]), id_arg(a[3]), AT_EMPTY_PATH_); break;
    default: rc = utimensat(AT_FDCWD_, at, times, 0); break;
    }
    close(fd);
    return rc;
}

/* chmod, chown or utimensat of the object of mine, a copy of the program's fd (change_object
 * without a name to look up): 0, or -1 and errno (EBADF: an O_PATH fd; then by its name). */
static int change_fd(int mine, int c, const uint64_t *a, const struct timespec *times)
{
    switch (c) {
    case FCHMOD: case CHMOD: return fchmod(mine, (mode_t)(a[1] & 07777));
    case FCHMODAT: return fchmod(mine, (mode_t)(a[2] & 07777));
    case FCHOWN: case CHOWN: case LCHOWN: return fchown(mine, id_arg(a[1]), id_arg(a[2]));
    case FCHOWNAT: return fchown(mine, id_arg(a[2]), id_arg(a[3]));
    default: return futimens(mine, times);
    }
}

/* fd closed (when one), and rc. */
static int dropped(int fd, int rc)
{
    if (fd >= 0)
        close(fd);
    return rc;
}

/* futimens's times (NULL: now) as the handler reads them: 0, or -1 when Python must answer
 * (an unreadable or invalid time, or "now" on a clock the policy changes). */
static int times_of(Engine *self, pid_t tid, uint64_t addr, struct timespec times[2],
                    const struct timespec **out)
{
    *out = NULL;
    if (addr == 0)
        return self->clock_virtual ? -1 : 0;
    struct iovec local = {times, 2 * sizeof(struct timespec)};
    struct iovec remote = {(void *)(uintptr_t)addr, local.iov_len};
    if (process_vm_readv(tid, &local, 1, &remote, 1, 0) != (ssize_t)local.iov_len)
        return -1;
    for (int i = 0; i < 2; i++) {
        long ns = times[i].tv_nsec;
        if (ns == UTIME_NOW_ ? self->clock_virtual
                             : ns != UTIME_OMIT_ && (ns < 0 || ns >= 1000000000L))
            return -1;
    }
    *out = times;
    return 0;
}

/* The change has been made: its record, the bookkeeping of the `n` names it made, removed
 * or moved (the index's, and what was decided of them: kinds[i], names[i]'s S_IFMT now, 0
 * gone), and the program's result. */
static int made(Engine *self, pid_t tid, const struct __ptrace_syscall_info *in,
                CallRecord *r, const Operand *shown, const Operand *const *names,
                const int *kinds, int n)
{
    r->rule = shown->rule;
    r->rule_len = shown->rule_len;
    r->path = shown->guest;
    r->has_result = 1;
    r->result = 0;
    log_call(self, tid, (int)in->seccomp.nr, in->seccomp.args, r);
    for (int i = 0; i < n; i++)
        if (note_made(self, names[i]->guest, kinds[i]) < 0)
            PyErr_WriteUnraisable(self->made);  /* out of memory: the next load has it */
    emulate(self, tid, 0);
    return ANSWERED;
}

/* link(at), rename(at)(2) of a name that is not a directory to a name that is not one
 * either (or not there), both in owned directories: nothing but those two names changes. */
static int do_change2(Engine *self, pid_t tid, int c, const struct __ptrace_syscall_info *in)
{
    const uint64_t *a = in->seccomp.args;
    int two_dirfds = c == LINKAT || c == RENAMEAT || c == RENAMEAT2;
    int link = c == LINK || c == LINKAT;
    int follow = c == LINKAT && a[4] == AT_SYMLINK_FOLLOW_;
    if ((c == LINKAT || c == RENAMEAT2) && a[4] != 0 && !follow)
        return FALLBACK;             /* AT_EMPTY_PATH, RENAME_* flags */
    if (!link && !self->stat_ok)
        return FALLBACK;             /* a replaced name's recorded owner must go: Python's */
    Operand src, dst;
    struct stat sst, dstst;
    int src_arg = two_dirfds ? 1 : 0, dst_arg = two_dirfds ? 3 : 1;
    int src_rc = find_object(self, tid, two_dirfds ? (long)(int)a[0] : AT_FDCWD_, a[src_arg],
                             follow, &src, &sst);
    if (src_rc != 0 || src.kind != OWNED || S_ISDIR(sst.st_mode))
        return FALLBACK;
    int dst_rc = find_object(self, tid, two_dirfds ? (long)(int)a[2] : AT_FDCWD_, a[dst_arg],
                             0, &dst, &dstst);
    if (dst_rc > 0 || dst.kind != OWNED
            || (dst_rc == 0 && (link || S_ISDIR(dstst.st_mode))))
        return FALLBACK;             /* EEXIST, ENOENT ...: Python explains */
    if (link_or_move(&src, &dst, link) < 0)
        return FALLBACK;
    CallRecord r = {0};
    r.paths[src_arg] = src.path;
    r.paths[dst_arg] = dst.path;
    const Operand *names[] = {&dst, &src};      /* link: the new name; rename: both */
    const int kinds[] = {(int)(sst.st_mode & S_IFMT), 0};
    return made(self, tid, in, &r, link ? &dst : &src, names, kinds, link ? 1 : 2);
}

/* Whether a change of op, a name in a merged directory that lookup found (rc), is made as in an
 * owned one: on an object of the upper directory (the host's would be copied up first), a
 * removal only where the host has no object of the name (else a whiteout goes in its place),
 * a directory made only where neither layer has the name (over a whiteout it is opaque); a
 * missing name fails alike. All else is Python's. */
static int merged_change(const Operand *op, int rc, int removes, int makes)
{
    if (rc == -ENOENT)
        return !makes || op->upper_obj;
    if (rc != 0 || !op->upper_obj)
        return 0;
    if (makes)
        return 1;                    /* EEXIST */
    struct stat st;
    return !removes || (fstatat(op->lower_dfd, name_of(op), &st, AT_SYMLINK_NOFOLLOW_) < 0
                        && errno == ENOENT);
}

/* The fd a path names as "/proc/self/fd/N" (or thread-self), as glibc's fchmodat with
 * AT_SYMLINK_NOFOLLOW calls chmod on an O_PATH fd (GNU tar, for each directory): N, the
 * process (thread) whose fd it is in *whose; -1 for any other path, Python's. */
static long proc_fd(Engine *self, pid_t tid, const char *path, pid_t *whose)
{
    static const char self_fd[] = "/proc/self/fd/", thread_fd[] = "/proc/thread-self/fd/";
    const char *n;
    if (strncmp(path, self_fd, sizeof self_fd - 1) == 0) {
        n = path + sizeof self_fd - 1;
        *whose = process_of(self, tid);
    } else if (strncmp(path, thread_fd, sizeof thread_fd - 1) == 0) {
        n = path + sizeof thread_fd - 1;
        *whose = tid;
    } else {
        return -1;
    }
    long fd = 0;
    int digits = 0;
    for (; *n >= '0' && *n <= '9' && digits < 9; n++, digits++)
        fd = fd * 10 + (*n - '0');
    /* only the names /proc has: no sign, no leading zero, nothing after */
    if (*n != 0 || digits == 0 || (digits > 1 && n[-digits] == '0'))
        return -1;
    return fd;
}

/* A changing call on a name in an owned directory, or on an fd's object there (c: its
 * enum Change), made here; in a merged directory, the changes merged_change admits (and those
 * of an fd's object in its upper directory). Only the forms whose operand needs no more
 * deciding: the name not a symlink (unlink removes the link itself; chown, utimensat and
 * fchownat without AT_SYMLINK_NOFOLLOW would follow it), present, except for mkdir (absent,
 * in a directory that is there); rmdir's a directory, unlink's anything else. A name that is
 * missing (or, for mkdir, present) is answered as the handlers answer it, ENOENT (EEXIST)
 * without a record: they fail it after deciding the name, which every name there passes
 * alike. A removal in an owned directory is not looked up first: the upper directory is the
 * view there, so its unlinkat succeeds exactly where the view's would, and fails (missing,
 * a directory, not one, not empty) with nothing changed, for Python to explain. */
int do_change(Engine *self, pid_t tid, int c, const struct __ptrace_syscall_info *in)
{
    const uint64_t *a = in->seccomp.args;
    long dirfd = AT_FDCWD_;
    int path_arg = -1;               /* -1: the object of fd `dirfd` */
    int removes_dir = c == RMDIR || (c == UNLINKAT && a[2] == AT_REMOVEDIR_);
    if (c >= LINK)
        return do_change2(self, tid, c, in);
    switch (c) {
    case UNLINK: case RMDIR: case MKDIR: case CHMOD: case CHOWN: case LCHOWN:
        path_arg = 0;
        break;
    case UNLINKAT:
        if (a[2] != 0 && !removes_dir)
            return FALLBACK;
        /* fall through */
    case MKDIRAT: case FCHMODAT:
        dirfd = (long)(int)a[0];
        path_arg = 1;
        break;
    case FCHOWNAT:
        if (a[4] & ~(unsigned long long)AT_SYMLINK_NOFOLLOW_)
            return FALLBACK;         /* AT_EMPTY_PATH */
        dirfd = (long)(int)a[0];
        path_arg = 1;
        break;
    case UTIMENSAT:
        if (a[1] != 0) {             /* a path, followed or not (never a symlink here) */
            if (a[3] & ~(unsigned long long)AT_SYMLINK_NOFOLLOW_)
                return FALLBACK;
            dirfd = (long)(int)a[0];
            path_arg = 1;
            break;
        }
        if (a[3] != 0)
            return FALLBACK;         /* futimens(): utimensat(fd, NULL, times, 0) */
        /* fall through */
    case FCHMOD: case FCHOWN:
        dirfd = (long)(int)a[0];
        break;
    default:
        return FALLBACK;
    }
    int removes = c == UNLINK || c == UNLINKAT || c == RMDIR;
    int makes = c == MKDIR || c == MKDIRAT;
    if (removes && !self->stat_ok)
        return FALLBACK;             /* its recorded owner must go with it: Python's */
    /* The times are read and checked first, as the kernel and the handler do: a bad pointer
     * or time is EFAULT or EINVAL even for a missing name. */
    struct timespec times[2];
    const struct timespec *t = NULL;
    if (c == UTIMENSAT && times_of(self, tid, a[2], times, &t) < 0)
        return FALLBACK;
    Operand op;
    int mine = -1;                   /* a copy of that fd, whose path the engine kept */
    pid_t fd_owner = tid;            /* whose fd `dirfd` is, when the object is an fd's */
    int proc_path = -1;              /* the argument naming it as /proc/self/fd/N */
    int read_first = c == CHMOD || c == CHOWN || c == FCHMODAT || makes || removes_dir;
    Py_ssize_t full_len = 0;
    if (path_arg >= 0 && read_first) {
        op.path_len = full_len = read_cstring(tid, a[path_arg], op.path);
        if (op.path_len < 0)
            return FALLBACK;
        long fd = makes || removes_dir ? -1 : proc_fd(self, tid, op.path, &fd_owner);
        if (fd >= 0) {               /* followed, as these calls follow it: the fd's object */
            dirfd = fd;
            proc_path = path_arg;
            path_arg = -1;
        }
        /* mkdir and rmdir of "dir/" (git's mkdir of each directory it makes): the name
         * before the slash, looked up without following, as the kernel's filename_create
         * does (mkdir of "file/" or of "dangling-link/" is EEXIST) */
        while ((makes || removes_dir) && op.path_len > 1 && op.path[op.path_len - 1] == '/'
               && op.path[op.path_len - 2] != '/')
            op.path_len--;
    }
    if (path_arg >= 0) {
        struct stat st;
        int follow = removes ? UNLESS_OWNED : 0;
        int rc = read_first ? find_path(self, tid, dirfd, follow, &op, &st)
                            : find_object(self, tid, dirfd, a[path_arg], follow, &op, &st);
        if (read_first)
            op.path_len = full_len;  /* (the record shows the program's own string) */
        /* (UNLOOKED: a removal in an owned directory, whose unlinkat checks the name; a
         * failure is Python's to explain) */
        if (rc != UNLOOKED) {
            if (rc > 0 || (op.kind != OWNED && !(op.kind == MERGED
                                                 && merged_change(&op, rc, removes, makes))))
                return FALLBACK;
            if (makes ? rc == 0 : rc == -ENOENT) {
                if (self->log_reads)
                    return FALLBACK; /* (no record: at log level all, Python's) */
                emulate(self, tid, rc == 0 ? -EEXIST : -ENOENT);
                return ANSWERED;
            }
            if (!makes && (rc < 0 || (S_ISLNK(st.st_mode) && !removes)
                           || (removes && removes_dir != !!S_ISDIR(st.st_mode))))
                return FALLBACK;     /* ENOTDIR, EISDIR, a symlink ...: Python explains */
        }
    } else {
        int in_upper;
        Py_ssize_t n = fd_path_of(self, fd_owner, dirfd, op.guest, &in_upper, &mine);
        const char *slash = n > 1 ? memrchr(op.guest, '/', (size_t)n) : NULL;
        if (n < 0 || !in_upper || slash == NULL || slash[1] == 0)
            return dropped(mine, FALLBACK);
        Py_ssize_t dl = slash > op.guest ? slash - op.guest : 1;
        Py_ssize_t nlen = n - (slash + 1 - op.guest);
        char dir[PATH_MAX_];
        memcpy(dir, op.guest, (size_t)dl);
        dir[dl] = 0;
        /* An fd in the upper layer: its object is the upper directory's, merged or not. */
        op.kind = dir_kind(self, dir, dl, op.host, &op.host_dir, &op);
        if ((op.kind != OWNED && op.kind != MERGED)
                || append_name(op.host, op.host_dir, slash + 1, nlen) < 0)
            return dropped(mine, FALLBACK);
    }
    int rc = mine >= 0 ? change_fd(mine, c, a, t) : -1;
    if (rc < 0)
        rc = removes ? remove_name(&op, removes_dir ? AT_REMOVEDIR_ : 0)
             : makes ? make_dir(self, tid, &op, a[path_arg + 1])
             : change_object(&op, c, a, t, path_arg >= 0);
    dropped(mine, 0);
    if (rc < 0)
        return FALLBACK;
    CallRecord r = {0};
    if (path_arg >= 0 || proc_path >= 0)
        r.paths[path_arg >= 0 ? path_arg : proc_path] = op.path;
    /* chmod, chown and times change no name; a directory removed is empty: only its own
     * name goes, from the decisions and the index (note_made, Overlay.record) */
    const Operand *names[] = {&op};
    const int kinds[] = {makes ? S_IFDIR : 0};
    made(self, tid, in, &r, &op, names, kinds, removes || makes);
    if (makes && (op.kind == OWNED || op.kind == MERGED))
        decide_made_dir(self, &op);
    return ANSWERED;
}
