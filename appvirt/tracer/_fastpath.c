/* The tracer's wait loop for the stops whose answer needs no Python (see fastpath.py).
 *
 * Engine.wait() waits for the next stop of any tracee. A seccomp stop of an eligible thread
 * for a read of a name in a directory the Python side has declared "plain" (the program's
 * view of it and of its children is the host's own, see OverlayFS.plain_dir) is answered
 * here, exactly as the Python handlers would answer it (_fastpath_reads.c):
 *   newfstatat  the tracer looks the object up itself (openat2 RESOLVE_NO_SYMLINKS, fstat)
 *               and writes the struct stat into the program's buffer; the call never runs;
 *   openat      for reading: openat2(AT_FDCWD, path, RESOLVE_NO_SYMLINKS|NO_MAGICLINKS)
 *               from the thread's slot, its registers restored by the slot's trampoline
 *               (trampoline.py; at the exit stop where there are none) and the call re-run
 *               when a symlink was swapped in meanwhile (ELOOP); so is an opendir of a plain
 *               directory named by itself ("dir/", ".", "/");
 *   getdents64  of a plain directory: the kernel's own listing.
 * In an *owned* directory (the view of it is one upper-layer directory alone, see
 * OverlayFS.owned_dir) the names are that directory's:
 *   newfstatat  of a name that is not a directory: as above, on the upper object;
 *   openat      any open but O_TMPFILE of a name that exists, or a creation: openat2 of the
 *               upper path from the slot, as the handlers make it, logged as they log it
 *               (_fastpath_log.c); a created file goes to the overlay's index;
 *   unlink(at), rmdir, mkdir(at), chmod, fchmod(at), chown, lchown, fchown(at),
 *               utimensat of a name there (or of an fd's object there, also when chmod
 *               or chown names it as /proc/self/fd/N), link(at) and
 *               rename(at)(2) of a name that is not a directory between two names there:
 *               made by the tracer on the upper object as the overlay makes them, logged,
 *               the result emulated; ENOENT for a missing name, EEXIST for mkdir of a
 *               present one, as the handlers fail them (_fastpath_owned.c).
 * In a *merged* directory (an upper-layer directory over the host's, OverlayFS.merged_dir: a
 * host directory where the program made, removed or changed names) a name is the upper
 * directory's object when it has one, nothing when it has its whiteout, else the host's;
 * stat, access, readlink and opens for reading of those are answered as in a plain one, and
 * opens of an upper object or creations of a name in neither layer as in an owned one (both
 * logged as the handlers log them, redirected), as are changes of an upper object's
 * attributes, removals of a name only the upper directory has and mkdir of a name in neither
 * layer; a write of the host's object (a copy-up), a creation over a whiteout, a removal
 * that needs one, links, renames and a directory in the upper layer are Python's; listings
 * of merged directories are served here (_fastpath_listing.c).
 * The stat of a directory of the upper layer under upper-layer directories ($TMPDIR's
 * ancestors once the program made something there) is answered from the upper directory, with
 * the view's link count while the host's directory it also counts is unchanged (learnt with
 * learn_name, as OverlayFS.upper_dir_stat says).
 * Each directory decided plain, owned or merged is held open while its decision stands (a
 * merged one with the host's directory), and its names are looked up relative to it
 * (_fastpath_paths.c).
 * A signal-delivery stop of an eligible thread is delivered here, as Python delivers it.
 * execve of a path that names nothing in a plain directory fails here, and a program the host
 * has where the program names it runs natively from here (do_execve).
 * access, faccessat and faccessat2 are answered too, the tracer asking the kernel about the
 * host or upper object (outside an owned directory only without W_OK: rules may deny it), and
 * statfs, the tracer making it on that object.
 * A directory met for the first time is decided by the Python side (learn(dir), which also
 * remembers the answer in the `plain` dict: True plain; (canonical,) a path whose walk in the
 * view reaches the plain directory `canonical` through symlinks, as /lib/x86_64-linux-gnu on
 * a merged-/usr system, whose names are canonical's; (upper directory, rule, inode of "..")
 * an owned one, with the JSON text of the policy rule that decides its names; (upper
 * directory, rule) a merged one; 0 its names are decided one by one, in the `names` dict
 * (learn_name(path): True when the object is the host's own, an existing file answered as in
 * a plain directory; an upper directory's stat answer, above); 1 only the directory itself is
 * the host's (its stat, a cwd there: "/", which holds the registry tree); False neither). A
 * directory fd or cwd inside the upper layer names the guest directory below the upper root.
 * Everything else (other stops, a symlink on the way, a directory that is neither, any error
 * the Python handlers would explain) returns to Python unchanged. Every answer given here
 * (a result, a call let run or rerouted, a signal delivered) is one of _fastpath_answer.c's.
 * Under a virtual clock the time calls are answered from its state (_fastpath_clock.c).
 * Under a virtual identity (`identity`) execve is Python's, and a thread whose virtual ids are
 * not appvirt's own is served READS: its reads are answered here, what it creates or changes
 * is Python's, whose handlers give made objects the identity's owners.
 * At log level all (log_reads) every call answered here has its record, as the Python loop
 * writes it: the stats, access checks, opens and listings of plain directories (each with its
 * directory's rule, dir_rule's, its canonical path and result), an fd's own stat, and the
 * opens and changes of owned and merged directories that have records at any level; every
 * other call, and any answer that has no record at level changes, is Python's.
 */
#include "_fastpath.h"

#include <structmember.h>

static int slot_of(Engine *self, pid_t tid)
{
    return tid > 0 && tid < self->tids ? self->slot_of[tid] - 1 : -1;
}

/* A changing call (CHANGES), made in an owned or merged directory (its record is the one
 * written at any log level). */
static int do_change_call(Engine *self, pid_t tid, int nr,
                            const struct __ptrace_syscall_info *info)
{
    for (int c = 0; c < N_CHANGES; c++)
        if (nr == self->nr_change[c])
            return do_change(self, tid, c, info);
    return FALLBACK;
}

static int answer_call(Engine *self, pid_t tid, int slot, int served,
                       const struct __ptrace_syscall_info *info);

/* A seccomp stop of the slot stub (inject.py) before its mmap of the area: when it is that
 * mmap, the fd it maps must be the area's own file (a copy of the fd, its fstat), else the
 * mmap fails (EACCES: the injection fails, and the process is killed); an fd that cannot be
 * copied is left to Python's check. A checked one makes the thread STUB_MAPPED, which
 * spares Python's check of /proc/PID/maps at the stub's int3 (Engine_stub_mapped): the
 * stub's own constants give the address, length and protection, its result in rax the
 * success, and exec left the process one thread and a file table of its own, which nothing
 * else changes before the program's code runs. */
static void stub_mmap(Engine *self, pid_t tid)
{
    struct __ptrace_syscall_info info;
    if (!stop_call(self, tid, &info))
        return;                      /* gone: its exit report follows */
    const uint64_t *a = info.seccomp.args;
    if (info.seccomp.nr != SYS_mmap || a[0] != self->slot_base || self->slot_ino == 0) {
        let_run(self, tid);          /* its openat, or the cells' anonymous mmap */
        return;
    }
    struct stat st;
    int mine = fd_object(self->fds, tid, (long)a[4], &st);
    if (mine < 0) {                  /* no copy (a kernel before 6.9 has no thread pidfds): */
        let_run(self, tid);          /* unchecked, so Python reads /proc/PID/maps */
        return;
    }
    close(mine);
    if (st.st_dev != self->slot_dev || st.st_ino != self->slot_ino) {
        emulate(self, tid, -EACCES);
        return;
    }
    self->eligible[tid] = STUB_MAPPED;
    let_run(self, tid);
}

/* ANSWERED when the stop was dealt with here. */
static int try_stop(Engine *self, pid_t tid, int status)
{
    struct __ptrace_syscall_info info;
    int have_info = 0;
    self->regs_tid = 0;
    if (self->n_handovers > 0 && handover_stop(self, tid, status, &info, &have_info) == ANSWERED)
        return ANSWERED;
    if (self->n_listed > 0)          /* (notes only: no record, no time) */
        settle_others(self, tid);
    int slot = slot_of(self, tid);
    if (slot < 0)
        return FALLBACK;
    clock_gettime(CLOCK_MONOTONIC, &self->t0);
    if (self->pending[slot].token && self->pending[slot].tid == tid
            && settle_own(self, tid, slot, status, &info, &have_info) == ANSWERED) {
        self->stub_stops++;          /* (a restart: not the program's call) */
        return ANSWERED;
    }
    if ((status >> 8) == SYSCALL_TRAP) {
        Pending *p = &self->pending[slot];
        if (p->tid != tid)
            return FALLBACK;
        self->exit_stops++;
        finish_open(self, p, tid);
        return ANSWERED;
    }
    if ((status >> 16) == PTRACE_EVENT_EXEC) {
        /* An exec made (or one a thread's exec ended): its call is over here, Python's
         * event. The pending call of the thread that made it goes with it (Python forgets a
         * thread that took another's tid). */
        Pending *p = &self->pending[slot];
        if (p->tid == tid)
            settle_gone(self, p, tid);
        drop_handover(self, tid);    /* (a tid another thread's exec took over) */
        return FALLBACK;
    }
    int served = self->eligible[tid];
    if ((status >> 16) == 0 && (served == SERVED || served == READS)) {
        /* A signal-delivery stop (SIGCHLD to a shell ...): delivered, as the Python loop
         * delivers it to a thread with nothing in flight. */
        deliver(tid, WSTOPSIG(status));
        self->signal_stops++;
        return ANSWERED;
    }
    if ((status >> 8) == (SIGTRAP | (PTRACE_EVENT_SECCOMP << 8))
            && (served == STUB || served == STUB_MAPPED)) {
        /* The openat and mmaps of the stub that maps the slot area into a new program, which
         * no code of the program has run before (inject.py): resumed, as Python resumes
         * them, the area's mmap once its fd is checked. Its int3, and any signal meanwhile,
         * are Python's. */
        if (served == STUB)
            stub_mmap(self, tid);
        else
            let_run(self, tid);
        self->stub_stops++;
        return ANSWERED;
    }
    if ((status >> 8) != (SIGTRAP | (PTRACE_EVENT_SECCOMP << 8))
            || (served != SERVED && served != READS))
        return FALLBACK;
    if ((!have_info && !stop_call(self, tid, &info)) || info.op != PTRACE_SYSCALL_INFO_SECCOMP)
        return FALLBACK;
    int rc = answer_call(self, tid, slot, served, &info);
    if (rc == ANSWERED)
        self->seccomp_stops++;
    return rc;
}

/* A call of an eligible thread (a seccomp stop's, or a notification's), answered here
 * (ANSWERED) or not. A notified one is never one that rewrites registers (an open, an
 * exec: not fastpath.NOTIFIED). */
static int answer_call(Engine *self, pid_t tid, int slot, int served,
                       const struct __ptrace_syscall_info *in)
{
    if (in->arch != AUDIT_ARCH_X86_64_)
        return FALLBACK;
    int nr = (int)in->seccomp.nr, rc = FALLBACK;
    if (nr < 0)
        return FALLBACK;             /* (a negative number: ENOSYS, Python's) */
    if (self->notif != NULL && (nr == self->nr_openat || nr == self->nr_execve))
        return FALLBACK;
    if (nr == self->nr_newfstatat || nr == self->nr_stat || nr == self->nr_lstat)
        rc = do_newfstatat(self, tid, in);
    else if (nr == self->nr_openat)
        rc = do_openat(self, tid, slot, in);
    else if (nr == self->nr_getdents64)
        rc = do_getdents64(self, tid, in);
    else if (nr == self->nr_clock_gettime || nr == self->nr_gettimeofday || nr == self->nr_time)
        rc = do_time_call(self, tid, in);
    else if (nr == self->nr_access || nr == self->nr_faccessat || nr == self->nr_faccessat2)
        rc = do_access(self, tid, in);
    else if (self->log_reads)        /* log level all: only the calls it writes records of */
        rc = self->owned && served == SERVED ? do_change_call(self, tid, nr, in) : FALLBACK;
    else if (nr == self->nr_getcwd)
        rc = do_getcwd(self, tid, in);
    else if (nr == self->nr_readlink || nr == self->nr_readlinkat)
        rc = do_readlink(self, tid, in);
    else if (nr == self->nr_statfs)
        rc = do_statfs(self, tid, in);
    else if (nr == self->nr_execve)  /* (under an identity, set-id programs: Python's) */
        rc = self->identity ? FALLBACK : do_execve(self, tid, slot, in);
    else if (self->owned && served == SERVED)
        rc = do_change_call(self, tid, nr, in);
    if (rc == ANSWERED && nr < NR_MAX)
        self->answered[nr]++;
    return rc;
}

int answer_notified(Engine *self, pid_t tid, const struct seccomp_notif *req)
{
    if (tid <= 0 || tid >= self->tids)
        return FALLBACK;
    if (self->n_listed > 0)
        settle_others(self, tid);
    int slot = slot_of(self, tid);
    if (slot < 0)
        return FALLBACK;
    Pending *p = &self->pending[slot];
    if (p->token && p->tid == tid)   /* its open is over: this is another call */
        settle_gone(self, p, tid);
    int served = self->eligible[tid];
    if (served != SERVED && served != READS)
        return FALLBACK;
    struct __ptrace_syscall_info info;
    memset(&info, 0, sizeof info);
    info.op = PTRACE_SYSCALL_INFO_SECCOMP;
    info.arch = req->data.arch;
    info.instruction_pointer = req->data.instruction_pointer;
    info.seccomp.nr = (unsigned long long)req->data.nr;
    memcpy(info.seccomp.args, req->data.args, sizeof info.seccomp.args);
    return answer_call(self, tid, slot, served, &info);
}

/* -- the Python type ---------------------------------------------------------------------- */

/* The next stop or exit (*status), answering the notifications that come first: its pid,
 * 0 when a Python exception is set, -1 with errno. */
static pid_t next_stop(Engine *self, int *status)
{
    for (;;) {
        close_forgotten(self);       /* no stop in hand: no operand holds them */
        if (PyErr_CheckSignals() < 0)
            return 0;
        pid_t pid;
        int notified = self->listener >= 0 && !self->listener_idle;
        if (notified && !self->drain) {
            int n;
            Py_BEGIN_ALLOW_THREADS
            n = notify_wait(self);
            Py_END_ALLOW_THREADS
            if (n < 0)
                return -1;
            if (n > 0) {
                notify_take(self);
                if (PyErr_Occurred())    /* raised while deciding: handed over already */
                    return 0;
            } else {
                self->drain = 1;     /* a signal, or the backstop: stops may be waiting */
            }
            continue;
        }
        Py_BEGIN_ALLOW_THREADS
        pid = waitpid(-1, status, __WALL | (notified ? WNOHANG : 0));
        Py_END_ALLOW_THREADS
        if (pid == 0) {
            self->drain = 0;         /* none left: the listener's turn */
            continue;
        }
        if (pid < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (pid == self->take_from)
            take_listener(self, WIFSTOPPED(*status));
        if (WIFSTOPPED(*status) && try_stop(self, pid, *status) == ANSWERED)
            continue;
        if (PyErr_Occurred()) {      /* raised while deciding: the next wait() hands it over */
            self->held_pid = pid;
            self->held_status = *status;
            return 0;
        }
        return pid;
    }
}

static PyObject *Engine_wait(Engine *self, PyObject *Py_UNUSED(ignored))
{
    fds_forget_all(self);            /* Python has had a stop: it may have changed anything */
    if (self->held_pid > 0) {
        pid_t pid = self->held_pid;
        self->held_pid = 0;
        return Py_BuildValue("(ii)", pid, self->held_status);
    }
    int status;
    pid_t pid;
    if (self->listener < 0 && self->take_from <= 0) {
        pid = next_stop(self, &status);
    } else {
        /* SIGCHLD blocked, for the signalfd (notify_wait), and stops looked for first: those
         * reported while Python ran had their SIGCHLD then. */
        sigset_t chld, before;
        sigemptyset(&chld);
        sigaddset(&chld, SIGCHLD);
        sigprocmask(SIG_BLOCK, &chld, &before);
        self->drain = 1;
        pid = next_stop(self, &status);
        int err = errno;
        sigprocmask(SIG_SETMASK, &before, NULL);
        errno = err;
    }
    if (pid < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    if (pid == 0)
        return NULL;
    return Py_BuildValue("(ii)", pid, status);
}

static PyObject *Engine_notify(Engine *self, PyObject *args)
{
    int pid, hand;
    unsigned long long mark;
    if (!PyArg_ParseTuple(args, "iiK", &pid, &hand, &mark))
        return NULL;
    if (pid <= 0 || hand < 0 || notify_start(self, pid, hand, mark) < 0) {
        PyErr_SetString(PyExc_ValueError, "notify: one listener, from a process and a pipe");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *Engine_get_listener_error(Engine *self, void *c)
{
    return PyLong_FromLong(self->listener_error);
}

static PyObject *Engine_recheck(Engine *self, PyObject *args)
{
    int tid, python_exit;
    if (!PyArg_ParseTuple(args, "ip", &tid, &python_exit))
        return NULL;
    return PyBool_FromLong(recheck(self, tid, python_exit));
}

static PyObject *Engine_end_notify(Engine *self, PyObject *Py_UNUSED(ignored))
{
    notify_stop(self);
    Py_RETURN_NONE;
}

static PyObject *Engine_enable(Engine *self, PyObject *args)
{
    int tid, slot, pid, changes = 1;
    if (!PyArg_ParseTuple(args, "iii|p", &tid, &slot, &pid, &changes))
        return NULL;
    if (tid <= 0 || tid >= self->tids || slot < 0 || slot >= self->slots)
        Py_RETURN_NONE;
    if (self->pending[slot].tid != tid)     /* a slot freed by a thread that died mid-call */
        settle_gone(self, &self->pending[slot], self->pending[slot].tid);
    self->slot_of[tid] = slot + 1;
    self->pid_of[tid] = pid;
    self->eligible[tid] = changes ? SERVED : READS;
    Py_RETURN_NONE;
}

static PyObject *Engine_stub(Engine *self, PyObject *args)
{
    int tid;
    if (!PyArg_ParseTuple(args, "i", &tid))
        return NULL;
    if (tid > 0 && tid < self->tids && self->slot_of[tid])
        self->eligible[tid] = STUB;
    Py_RETURN_NONE;
}

static PyObject *Engine_stub_mapped(Engine *self, PyObject *args)
{
    int tid;
    if (!PyArg_ParseTuple(args, "i", &tid))
        return NULL;
    return PyBool_FromLong(tid > 0 && tid < self->tids && self->eligible[tid] == STUB_MAPPED);
}

static PyObject *Engine_disable(Engine *self, PyObject *args)
{
    int tid;
    if (!PyArg_ParseTuple(args, "i", &tid))
        return NULL;
    if (tid > 0 && tid < self->tids)
        self->eligible[tid] = UNSERVED;  /* an open in flight still finishes here */
    Py_RETURN_NONE;
}

static PyObject *Engine_forget(Engine *self, PyObject *args)
{
    int tid;
    if (!PyArg_ParseTuple(args, "i", &tid))
        return NULL;
    int slot = slot_of(self, tid);
    if (slot >= 0 && self->pending[slot].tid == tid)
        settle_gone(self, &self->pending[slot], tid);
    if (tid > 0 && tid < self->tids) {
        self->slot_of[tid] = self->eligible[tid] = UNSERVED;
        self->umasks[tid] = 0;       /* (its pid may be a new process's next) */
    }
    fds_forget_thread(self, tid);
    drop_handover(self, tid);
    Py_RETURN_NONE;
}

/* forget_umasks(keep): a umask call started or ended; keep: none runs now. */
static PyObject *Engine_forget_umasks(Engine *self, PyObject *args)
{
    int keep;
    if (!PyArg_ParseTuple(args, "p", &keep))
        return NULL;
    self->keep_umasks = keep;
    if (++self->umask_epoch >= UMASK_EPOCHS) {  /* (after a million calls: once a while) */
        memset(self->umasks, 0, (size_t)self->tids * sizeof(uint32_t));
        self->umask_epoch = 1;
    }
    Py_RETURN_NONE;
}

static PyObject *Engine_set_clock(Engine *self, PyObject *args)
{
    PyObject *frozen;
    VirtualTime c = {.known = 1};
    if (!PyArg_ParseTuple(args, "OLLLLd", &frozen, &c.start_real, &c.start_virtual,
                          &c.start_monotonic, &c.start_boottime, &c.rate))
        return NULL;
    if (frozen != Py_None) {
        c.frozen = 1;
        c.frozen_ns = PyLong_AsLongLong(frozen);
        if (c.frozen_ns == -1 && PyErr_Occurred())
            return NULL;
    }
    self->clock = c;
    Py_RETURN_NONE;
}

static PyObject *Engine_forget_dirs(Engine *self, PyObject *Py_UNUSED(ignored))
{
    forget_dirs(self);
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
    return Py_BuildValue("(KKKNKKKKKKK)", self->seccomp_stops, self->exit_stops,
                         self->signal_stops, by_nr, self->decided, self->stub_stops,
                         self->tramp_opens, self->fd_paths_known, self->notified,
                         self->handed_over, self->handover_stops);
}

static PyObject *Engine_get_seq(Engine *self, void *c) { return PyLong_FromLongLong(self->seq); }

static int Engine_set_seq(Engine *self, PyObject *v, void *c)
{
    long long seq = v ? PyLong_AsLongLong(v) : -1;
    if (seq < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "seq: a record number");
        return -1;
    }
    self->seq = seq;
    return 0;
}

static PyObject *Engine_get_log_errno(Engine *self, void *c)
{
    return PyLong_FromLong(self->log_errno);
}

static int Engine_init(Engine *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"area", "plain", "learn", "names", "learn_name", "slot_base",
                            "slot_size", "slots", "nr_newfstatat", "nr_openat",
                            "nr_getdents64", "nr_openat2", "nr_access", "nr_faccessat",
                            "nr_faccessat2", "nr_getcwd", "nr_execve", "nr_stat", "nr_lstat",
                            "nr_readlink", "nr_readlinkat", "changes", "upper",
                            "made", "log_fd", "spec_of",
                            "programs", "errnames", "clock_virtual", "dir_rule",
                            "nr_clock_gettime", "nr_gettimeofday", "nr_time", "nr_statfs",
                            "tramp_base", "cell_base", "tramp_code", "log_ring", "slot_dev",
                            "slot_ino", NULL};
    PyObject *area, *plain, *learn, *name_dict, *learn_name;
    PyObject *changes = NULL, *made = Py_None, *spec_of = NULL, *programs = NULL;
    PyObject *errnames = NULL, *dir_rule = NULL, *log_ring = NULL;
    unsigned long long base, size, slot_dev = 0, slot_ino = 0;
    Py_ssize_t slots;
    const char *upper = "", *tramp_code = "";
    Py_ssize_t upper_len = 0, tramp_len = 0;
    self->nr_access = self->nr_faccessat = self->nr_faccessat2 = -1;
    self->nr_getcwd = self->nr_execve = self->nr_stat = self->nr_lstat = -1;
    self->nr_readlink = self->nr_readlinkat = self->nr_statfs = -1;
    self->nr_clock_gettime = self->nr_gettimeofday = self->nr_time = -1;
    self->log_fd = -1;
    self->listener = self->hand = self->sigfd = -1;
    for (int c = 0; c < N_CHANGES; c++)
        self->nr_change[c] = -1;
    if (self->area.obj != NULL || self->slot_of != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Engine is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kw,
                                     "OO!OO!OKKniiii|iiiiiiiiiO!y#OiOO!O!pOiiiiKKy#OKK", names,
                                     &area, &PyDict_Type, &plain, &learn, &PyDict_Type,
                                     &name_dict, &learn_name, &base, &size, &slots,
                                     &self->nr_newfstatat, &self->nr_openat,
                                     &self->nr_getdents64, &self->nr_openat2, &self->nr_access,
                                     &self->nr_faccessat, &self->nr_faccessat2,
                                     &self->nr_getcwd, &self->nr_execve, &self->nr_stat,
                                     &self->nr_lstat, &self->nr_readlink,
                                     &self->nr_readlinkat, &PyTuple_Type,
                                     &changes, &upper, &upper_len, &made, &self->log_fd,
                                     &spec_of, &PyDict_Type, &programs,
                                     &PyDict_Type, &errnames, &self->clock_virtual,
                                     &dir_rule, &self->nr_clock_gettime,
                                     &self->nr_gettimeofday, &self->nr_time,
                                     &self->nr_statfs, &self->tramp_base,
                                     &self->cell_base, &tramp_code, &tramp_len, &log_ring,
                                     &slot_dev, &slot_ino))
        return -1;
    if (log_ring == Py_None)
        log_ring = NULL;
    if (log_ring != NULL && (!PyObject_TypeCheck(log_ring, &LogRingType) || self->log_fd < 0)) {
        PyErr_SetString(PyExc_TypeError, "log_ring: a LogRing, with a log");
        return -1;
    }
    Py_XINCREF(log_ring);
    self->log_ring = log_ring;
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
    if (made != Py_None && !PyList_CheckExact(made)) {
        PyErr_SetString(PyExc_TypeError, "made: a list (owned directories), or None");
        return -1;
    }
    if (self->log_fd >= 0 && (spec_of == NULL || !PyCallable_Check(spec_of)
                              || programs == NULL || errnames == NULL)) {
        PyErr_SetString(PyExc_TypeError, "a log needs spec_of, programs and errnames");
        return -1;
    }
    if (dir_rule == Py_None)
        dir_rule = NULL;
    if (dir_rule != NULL && (!PyCallable_Check(dir_rule) || self->log_fd < 0)) {
        PyErr_SetString(PyExc_TypeError, "dir_rule: a callable, with a log");
        return -1;
    }
    if (PyObject_GetBuffer(area, &self->area, PyBUF_WRITABLE) < 0)
        return -1;
    if ((unsigned long long)self->area.len < size * (unsigned long long)slots) {
        PyErr_SetString(PyExc_ValueError, "the slot area is smaller than its slots");
        return -1;
    }
    if (self->tramp_base && (self->tramp_base < base || self->cell_base == 0
                             || self->tramp_base - base + TRAMP_STRIDE * (unsigned long long)slots
                                > (unsigned long long)self->area.len
                             || tramp_len <= TRAMP_LAST_JUMP || tramp_len > TRAMP_DATA)) {
        PyErr_SetString(PyExc_ValueError, "trampolines: in the slot area, with their code");
        return -1;
    }
    if (self->tramp_base) {
        memcpy(self->tramp_code, tramp_code, (size_t)tramp_len);
        self->tramp_len = tramp_len;
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
    self->pid_of = PyMem_Calloc((size_t)self->tids, sizeof(int32_t));
    PyMem_Free(self->umasks);        /* (__init__ called again) */
    self->umasks = PyMem_Calloc((size_t)self->tids, sizeof(uint32_t));
    self->umask_epoch = 1;
    self->keep_umasks = 1;
    self->eligible = PyMem_Calloc((size_t)self->tids, 1);
    self->pending = PyMem_Calloc((size_t)slots, sizeof(Pending));
    self->listed = PyMem_Calloc((size_t)slots, sizeof(int32_t));
    self->tramp_written = PyMem_Calloc((size_t)slots, 1);
    fds_free(self->fds);             /* (__init__ called again) */
    self->fds = fds_new();
    if (self->slot_of == NULL || self->pid_of == NULL || self->umasks == NULL
            || self->eligible == NULL
            || self->pending == NULL || self->listed == NULL || self->tramp_written == NULL
            || self->fds == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->slots = slots;
    self->slot_base = base;
    self->slot_size = size;
    self->slot_dev = (dev_t)slot_dev;
    self->slot_ino = (ino_t)slot_ino;
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
    self->owned = made != Py_None;
    Py_INCREF(made);
    self->made = made;
    if ((self->dirfds = PyDict_New()) == NULL || (self->closing = PyList_New(0)) == NULL
            || (self->rules = PyDict_New()) == NULL)
        return -1;
    Py_XINCREF(dir_rule);
    self->dir_rule = dir_rule;
    Py_XINCREF(programs);
    self->programs = programs;
    Py_XINCREF(errnames);
    self->errnames = errnames;
    Py_XINCREF(spec_of);
    self->spec_of = spec_of;
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
    Py_CLEAR(self->made);
    Py_CLEAR(self->programs);
    Py_CLEAR(self->errnames);
    Py_CLEAR(self->spec_of);
    Py_CLEAR(self->dir_rule);
    Py_CLEAR(self->rules);
    Py_CLEAR(self->log_ring);
    if (self->dirfds != NULL && self->closing != NULL) {
        forget_dirs(self);
        close_forgotten(self);
    }
    Py_CLEAR(self->dirfds);
    Py_CLEAR(self->closing);
    free_specs(self);
    if (self->pending != NULL)
        for (Py_ssize_t i = 0; i < self->slots; i++)
            Py_CLEAR(self->pending[i].created);
    PyMem_Free(self->slot_of);
    PyMem_Free(self->pid_of);
    PyMem_Free(self->umasks);
    PyMem_Free(self->eligible);
    PyMem_Free(self->handovers);
    notify_stop(self);
    PyMem_Free(self->pending);
    PyMem_Free(self->listed);
    PyMem_Free(self->tramp_written);
    fds_free(self->fds);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Engine_methods[] = {
    {"wait", (PyCFunction)Engine_wait, METH_NOARGS,
     "wait() -> (pid, status): the next stop (or exit) Python must handle."},
    {"enable", (PyCFunction)Engine_enable, METH_VARARGS,
     "enable(tid, slot, pid, changes=True): its calls may be answered here (pid: its "
     "process's; changes False: only its reads, what it creates or changes is Python's)."},
    {"disable", (PyCFunction)Engine_disable, METH_VARARGS,
     "disable(tid): its stops go to Python (an open in flight still finishes here)."},
    {"forget", (PyCFunction)Engine_forget, METH_VARARGS, "forget(tid): it is gone."},
    {"forget_umasks", (PyCFunction)Engine_forget_umasks, METH_VARARGS,
     "forget_umasks(keep): the processes' umasks kept may be stale (a umask call started or "
     "ended); keep: no umask call runs, so those read may be kept."},
    {"stub", (PyCFunction)Engine_stub, METH_VARARGS,
     "stub(tid): it runs the slot stub (inject.py): the seccomp stops of its calls are "
     "resumed here until Python serves it again (a thread with a slot)."},
    {"stub_mapped", (PyCFunction)Engine_stub_mapped, METH_VARARGS,
     "stub_mapped(tid): whether tid's slot stub mapped the area from an fd checked here to "
     "be the area's file (slot_dev, slot_ino)."},
    {"set_clock", (PyCFunction)Engine_set_clock, METH_VARARGS,
     "set_clock(frozen_ns or None, start_real, start_virtual, start_monotonic, "
     "start_boottime, rate): the virtual clock's state (VirtualClock); the time calls are "
     "answered here from then on."},
    {"forget_dirs", (PyCFunction)Engine_forget_dirs, METH_NOARGS,
     "forget_dirs(): the directories it holds open go (their decisions were forgotten)."},
    {"counts", (PyCFunction)Engine_counts, METH_NOARGS,
     "counts() -> (seccomp stops, exit stops, signal stops, {nr: calls}) answered here, "
     "the directories decided here, the slot stubs' stops resumed here (and the kernel's "
     "restarts of opens from trampolines), the opens resumed through trampolines, the "
     "fd paths known without a readlink, the notified calls answered here, those handed "
     "to the ptrace handlers, and their interrupts' stops."},
    {"notify", (PyCFunction)Engine_notify, METH_VARARGS,
     "notify(pid, hand, mark): the filter's listener is taken from process pid once it has "
     "written its number to the pipe hand (nonblocking, the engine's fd from now on); mark: "
     "the sixth-argument value the filter sends to RET_TRACE. The notified calls are then "
     "answered from wait() (_fastpath_notify.c)."},
    {"recheck", (PyCFunction)Engine_recheck, METH_VARARGS,
     "recheck(tid, python_exit) -> bool: the handlers let tid's call run (python_exit: "
     "with its exit stop); True when it was a notified call handed over, which then runs "
     "marked and must be resumed with PTRACE_SYSCALL (its exit stop, where the program gets "
     "its r9 back, is the engine's but for python_exit)."},
    {"end_notify", (PyCFunction)Engine_end_notify, METH_NOARGS,
     "end_notify(): the listener is closed, SIGCHLD's disposition restored."},
    {NULL}
};

static PyMemberDef Engine_members[] = {
    {"stat_ok", T_BOOL, offsetof(Engine, stat_ok), 0,
     "no recorded owners: stat answers need nothing patched in, removals nothing forgotten"},
    {"exec_native", T_BOOL, offsetof(Engine, exec_native), 0,
     "no exec rules: execve of a program the host has where the program names it runs "
     "natively from here"},
    {"identity", T_BOOL, offsetof(Engine, identity), 0,
     "a virtual identity: execve is Python's (set-id programs change the identity)"},
    {"log_reads", T_BOOL, offsetof(Engine, log_reads), 0,
     "log level all: only the calls whose records the engine writes are answered here (the "
     "stats, access checks, opens and listings of plain directories, with dir_rule's rules, "
     "and the opens and changes of owned and merged ones); every other call goes to Python"},
    {NULL}
};

static PyGetSetDef Engine_getset[] = {
    {"seq", (getter)Engine_get_seq, (setter)Engine_set_seq,
     "the number of the intercept log's last record (the engine's and Python's)", NULL},
    {"log_errno", (getter)Engine_get_log_errno, NULL,
     "the errno of the first record the engine failed to write (0: none)", NULL},
    {"listener_error", (getter)Engine_get_listener_error, NULL,
     "the errno of a listener that could not be taken (its process killed; 0: none)", NULL},
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
    .tp_members = Engine_members,
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
    if (split_path(NULL, NULL, 0, 0, AT_FDCWD_, p, len, dir, &dl, &name, NULL) < 0)
        Py_RETURN_NONE;
    return Py_BuildValue("(y#y#)", dir, dl, name, (Py_ssize_t)(len - (name - p)));
}

static PyMethodDef module_methods[] = {
    {"split", split, METH_VARARGS, "split(base, path) -> (dir, name) or None"},
    {"format_call", format_call, METH_VARARGS,
     "format_call(spec, seq, pid, tid, program, args, paths, rule, path, host_path, result)"
     " -> a record's line, as the engine writes it"},
    {NULL}
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "appvirt.tracer._fastpath",
    "The compiled part of the tracer's wait loop (see fastpath.py).", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastpath(void)
{
    if (PyType_Ready(&EngineType) < 0 || PyType_Ready(&LogRingType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "MAX_DIRS", MAX_DIRS_) < 0
            || PyModule_AddIntConstant(m, "LOG_RING_SIZE", RING_SIZE) < 0
            || PyModule_AddObject(m, "TRAMP_LAYOUT",
                                  Py_BuildValue("(iiiii)", TRAMP_STRIDE, TRAMP_ENTRY,
                                                TRAMP_DATA, TRAMP_LAST_JUMP, CELL_STRIDE)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&EngineType);
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0) {
        Py_DECREF(&EngineType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&LogRingType);
    if (PyModule_AddObject(m, "LogRing", (PyObject *)&LogRingType) < 0) {
        Py_DECREF(&LogRingType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

