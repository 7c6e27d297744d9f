/* The intercept log's writer: records go into a ring in memory, and a writer process, a clone
 * of the tracer sharing its memory (CLONE_VM), appends them to the log in batches.
 *
 * A record's write(2) cost the tracer 1-1.5 µs at each logged call, its page-cache copy and
 * timestamps included, and the program's caches with it (tar: about 12,700 records, 3% of
 * its run; bench/results/2026-12-06-tar-overhead.md). Copying it into the ring costs a
 * memcpy. The promise stays what a write(2) before the call resumed gave (log/writer.py): a
 * record is in the ring before its call resumes, and the ring outlives a killed tracer. The
 * writer has its own process group (a kill of the tracer's group misses it) and, when the
 * tracer is gone (getppid() changes), writes what the ring holds and exits; the memory stays
 * while a process maps it.
 *
 * The writer shares the tracer's memory, and its thread-local storage pointer too: it runs
 * only raw syscalls (no errno, no malloc, no locks), on a stack of its own, every signal
 * blocked, with no fd but the log. It naps 1 ms between batches while records come, and
 * after 20 empty naps waits on a futex the tracer wakes at its next record; both waits are
 * on that futex, which the end wakes at once.
 */
#include "_fastpath.h"

#include <linux/futex.h>
#include <sched.h>
#include <sys/mman.h>
#include <poll.h>

/* RING_SIZE is in _fastpath.h; a record longer than half of it goes by write(2) */
#define WRITER_STACK (64 << 10)
#define NAP_NS 1000000L               /* between batches while records come */
#define IDLE_NAPS 20                  /* empty naps before the futex */
#define IDLE_WAIT_NS 200000000L       /* the futex's timeout: the tracer's death is noticed */
#define FULL_NAP_NS 50000L            /* the tracer's wait for room (the writer is behind) */

typedef struct {
    uint64_t head;                   /* bytes the tracer has put in (written by it alone) */
    char pad1[56];
    uint64_t tail;                   /* bytes the writer has written (by it alone) */
    char pad2[56];
    int done;                        /* the tracer is finished: write what is left, exit */
    int sleeping;                    /* the writer waits on `wake` */
    uint32_t wake;
    int error;                       /* the first errno of a failed write (writer's) */
    int log_fd;
    pid_t parent;
    char data[RING_SIZE];
} Ring;

typedef struct {
    PyObject_HEAD
    Ring *ring;                      /* NULL: closed (writes go to fd) */
    void *stack;
    pid_t writer;
    pid_t owner;                     /* the tracer: a fork's copy does not close it */
    int pidfd;                       /* the writer's, to see it die */
    int fd;
    int direct_error;                /* the first errno of a write made here */
} LogRing;

/* -- the writer: raw syscalls only ---------------------------------------------------------- */

static inline long raw6(long n, long a, long b, long c, long d, long e, long f)
{
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long ret;
    __asm__ volatile("syscall" : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

#define raw3(n, a, b, c) raw6((n), (long)(a), (long)(b), (long)(c), 0, 0, 0)

/* Wait on the futex `wake` up to ns: woken early by a record after an idle wait, and by the
 * end (close sets done, then wake). */
static void wait_wake(Ring *r, long ns)
{
    struct timespec t = {ns / 1000000000L, ns % 1000000000L};
    raw6(SYS_futex, (long)&r->wake, FUTEX_WAIT, 0, (long)&t, 0, 0);
}

/* The bytes after the last newline of buf[0, n), given `after` bytes after the last newline
 * before it. */
static long after_newline(const char *buf, long n, long after)
{
    for (long i = n; i > 0; i--)
        if (buf[i - 1] == '\n')
            return n - i;
    return after + n;
}

/* Write ring bytes [from, to) to the log, whole records (in two writes where the ring wraps);
 * a short write or a failure keeps the first errno and cuts the log back to its last whole
 * record (a record is never torn; the rest of the batch is lost with it). */
static void write_out(Ring *r, uint64_t from, uint64_t to)
{
    long after = 0;                  /* bytes of a record begun in this batch's first write */
    while (from < to) {
        size_t off = (size_t)(from % RING_SIZE);
        size_t len = (size_t)(to - from);
        if (len > RING_SIZE - off)
            len = RING_SIZE - off;
        long n = raw3(SYS_write, r->log_fd, r->data + off, len);
        if (n == (long)len) {
            after = after_newline(r->data + off, n, after);
            from += (uint64_t)n;
            continue;
        }
        if (r->error == 0)
            r->error = n < 0 ? (int)-n : ENOSPC;
        long cut = after_newline(r->data + off, n > 0 ? n : 0, after);
        struct stat st;
        if (cut > 0 && raw3(SYS_fstat, r->log_fd, &st, 0) == 0)
            raw3(SYS_ftruncate, r->log_fd, st.st_size - cut, 0);
        return;
    }
}

static int writer_main(void *arg)
{
    Ring *r = arg;
    int fd = r->log_fd;
    if (fd > 0)                      /* nothing but the log: no pipe or socket kept open */
        raw3(436 /* close_range */, 0, fd - 1, 0);
    raw3(436, fd + 1, ~0U, 0);
    raw3(SYS_setpgid, 0, 0, 0);      /* not in the tracer's group */
    static const char name[16] = "appvirt-log";
    raw3(SYS_prctl, 15 /* PR_SET_NAME */, name, 0);
    unsigned long all[16];
    memset(all, 0xff, sizeof all);   /* (a builtin: no libc) */
    raw3(SYS_sched_setaffinity, 0, sizeof all, all);    /* not on the tracer's CPU alone */
    int idle = 0;
    for (;;) {
        uint64_t head = __atomic_load_n(&r->head, __ATOMIC_SEQ_CST);
        uint64_t tail = r->tail;
        if (head != tail) {
            write_out(r, tail, head);
            __atomic_store_n(&r->tail, head, __ATOMIC_SEQ_CST);
            idle = 0;
            continue;
        }
        if (__atomic_load_n(&r->done, __ATOMIC_SEQ_CST)
                || raw3(SYS_getppid, 0, 0, 0) != r->parent) {
            if (__atomic_load_n(&r->head, __ATOMIC_SEQ_CST) != r->tail)
                continue;            /* the last records came meanwhile */
            break;
        }
        if (idle < IDLE_NAPS) {      /* records may be coming: a nap, no wake-up asked */
            idle++;
            wait_wake(r, NAP_NS);
            continue;
        }
        __atomic_store_n(&r->sleeping, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&r->head, __ATOMIC_SEQ_CST) == r->tail)
            wait_wake(r, IDLE_WAIT_NS);
        __atomic_store_n(&r->sleeping, 0, __ATOMIC_SEQ_CST);
        /* (a wake-up of the end is not lost: done was set before it, and is looked at next) */
        __atomic_store_n(&r->wake, 0, __ATOMIC_SEQ_CST);
        idle = 0;
    }
    raw3(SYS_exit, 0, 0, 0);
    return 0;
}

/* -- the tracer's side ---------------------------------------------------------------------- */

static void wake_writer(Ring *r)
{
    if (__atomic_load_n(&r->sleeping, __ATOMIC_SEQ_CST)) {
        __atomic_store_n(&r->wake, 1, __ATOMIC_SEQ_CST);
        syscall(SYS_futex, &r->wake, FUTEX_WAKE, 1, NULL, NULL, 0);
    }
}

static int writer_gone(LogRing *self)
{
    struct pollfd p = {self->pidfd, POLLIN, 0};
    return self->pidfd < 0 || poll(&p, 1, 0) != 0;
}

/* Wait until the ring has room for `room` bytes (RING_SIZE: the writer has written
 * everything): 0, or -1 when the writer is gone (looked at every thousand naps). */
static int wait_room(LogRing *self, size_t room)
{
    Ring *r = self->ring;
    for (long naps = 1; r->head + room - __atomic_load_n(&r->tail, __ATOMIC_SEQ_CST) > RING_SIZE;
         naps++) {
        wake_writer(r);
        if (naps % 1000 == 0 && writer_gone(self))
            return -1;
        struct timespec t = {0, FULL_NAP_NS};
        nanosleep(&t, NULL);
    }
    return 0;
}

/* One write(2) of whole records: 0, or the errno (a short write is cut off, ENOSPC). */
int append_whole(int fd, const char *buf, size_t len)
{
    ssize_t n = write(fd, buf, len);
    if (n == (ssize_t)len)
        return 0;
    int err = n < 0 ? errno : ENOSPC;
    struct stat st;
    if (n > 0 && fstat(fd, &st) == 0 && ftruncate(fd, st.st_size - n) < 0)
        err = errno;
    return err;
}

/* A write(2) of the record here: the ring is closed, the record too long for it, or the writer
 * gone. 0 or the errno. */
static int write_direct(LogRing *self, const char *buf, size_t len)
{
    int err = append_whole(self->fd, buf, len);
    if (err != 0 && self->direct_error == 0)
        self->direct_error = err;
    return err;
}

/* Give the writer up (it died: a bug or a kill of its own): what it had not written is
 * written here, and every record after it. */
static void give_up_writer(LogRing *self)
{
    Ring *r = self->ring;
    write_out(r, r->tail, r->head);  /* (as the writer would have: it is gone) */
    if (r->error != 0 && self->direct_error == 0)
        self->direct_error = r->error;
    self->ring = NULL;               /* (its memory stays mapped: the writer may be alive) */
}

/* One record into the log: 0, or the errno of its write (made here). */
int ring_put(PyObject *obj, const char *buf, size_t len)
{
    LogRing *self = (LogRing *)obj;
    Ring *r = self->ring;
    if (r == NULL)
        return write_direct(self, buf, len);
    int whole = len > RING_SIZE / 2;   /* written here, after what the ring holds */
    if (wait_room(self, whole ? RING_SIZE : len) < 0)
        give_up_writer(self);
    if (whole || self->ring == NULL)
        return write_direct(self, buf, len);
    uint64_t head = r->head;
    size_t off = (size_t)(head % RING_SIZE), first = len < RING_SIZE - off ? len : RING_SIZE - off;
    memcpy(r->data + off, buf, first);
    memcpy(r->data, buf + first, len - first);
    __atomic_store_n(&r->head, head + len, __ATOMIC_SEQ_CST);
    wake_writer(r);
    return 0;
}

static int LogRing_init(LogRing *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"fd", NULL};
    int fd;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "i", names, &fd))
        return -1;
    if (self->ring != NULL || self->writer > 0) {
        PyErr_SetString(PyExc_RuntimeError, "LogRing is initialised once");
        return -1;
    }
    self->fd = fd;
    self->pidfd = -1;
    self->owner = getpid();
    Ring *r = mmap(NULL, sizeof(Ring), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    void *stack = mmap(NULL, WRITER_STACK, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (r == MAP_FAILED || stack == MAP_FAILED) {
        PyErr_SetFromErrno(PyExc_OSError);
        if (r != MAP_FAILED)
            munmap(r, sizeof(Ring));
        if (stack != MAP_FAILED)
            munmap(stack, WRITER_STACK);
        return -1;
    }
    r->log_fd = fd;
    r->parent = getpid();
    sigset_t all, before;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &before);     /* the writer starts with all blocked */
    pid_t pid = clone(writer_main, (char *)stack + WRITER_STACK, CLONE_VM | SIGCHLD, r);
    int err = errno;
    pthread_sigmask(SIG_SETMASK, &before, NULL);
    if (pid < 0) {
        munmap(r, sizeof(Ring));
        munmap(stack, WRITER_STACK);
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->ring = r;
    self->stack = stack;
    self->writer = pid;
    self->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    return 0;
}

/* put(line): one record (bytes, a whole line) into the log. */
static PyObject *LogRing_put(LogRing *self, PyObject *arg)
{
    char *buf;
    Py_ssize_t len;
    if (PyBytes_AsStringAndSize(arg, &buf, &len) < 0)
        return NULL;
    int err = ring_put((PyObject *)self, buf, (size_t)len);
    if (err != 0) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

/* close(): every record written and the writer gone; the first errno of a failed write, or
 * 0. Later records are written directly. */
static PyObject *LogRing_close(LogRing *self, PyObject *Py_UNUSED(ignored))
{
    Ring *r = self->ring;
    if (self->owner != getpid())     /* a fork's copy: the writer is not its child */
        return PyLong_FromLong(0);
    if (r != NULL) {
        __atomic_store_n(&r->done, 1, __ATOMIC_SEQ_CST);
        __atomic_store_n(&r->wake, 1, __ATOMIC_SEQ_CST);
        syscall(SYS_futex, &r->wake, FUTEX_WAKE, 1, NULL, NULL, 0);
        int status;
        pid_t got;
        Py_BEGIN_ALLOW_THREADS
        do
            got = waitpid(self->writer, &status, __WALL);
        while (got < 0 && errno == EINTR);
        Py_END_ALLOW_THREADS
        if (r->tail != r->head)      /* it died early: the rest is written here */
            give_up_writer(self);
        else if (r->error != 0 && self->direct_error == 0)
            self->direct_error = r->error;
        self->ring = NULL;
        munmap(r, sizeof(Ring));
        munmap(self->stack, WRITER_STACK);
        self->stack = NULL;
    }
    if (self->pidfd >= 0)
        close(self->pidfd);
    self->pidfd = -1;
    return PyLong_FromLong(self->direct_error);
}

static PyObject *LogRing_get_writer(LogRing *self, void *closure)
{
    return PyLong_FromLong(self->ring != NULL ? self->writer : 0);
}

static void LogRing_dealloc(LogRing *self)
{
    if (self->ring != NULL) {
        PyObject *err = LogRing_close(self, NULL);
        Py_XDECREF(err);
        PyErr_Clear();
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef LogRing_methods[] = {
    {"put", (PyCFunction)LogRing_put, METH_O, "put(line): one record into the log"},
    {"close", (PyCFunction)LogRing_close, METH_NOARGS,
     "close(): every record written, the writer gone; the first errno of a failed write"},
    {NULL}
};

static PyGetSetDef LogRing_getset[] = {
    {"writer", (getter)LogRing_get_writer, NULL, "the writer's pid (0: none)", NULL},
    {NULL}
};

PyTypeObject LogRingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "appvirt.tracer._fastpath.LogRing",
    .tp_doc = "LogRing(fd): the intercept log's records, written by a writer process",
    .tp_basicsize = sizeof(LogRing),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)LogRing_init,
    .tp_dealloc = (destructor)LogRing_dealloc,
    .tp_methods = LogRing_methods,
    .tp_getset = LogRing_getset,
};
