/* The compiled loop's second transport: seccomp user notification (see _fastpath.c).
 *
 * The calls the compiled loop answers without touching the program's registers (stats,
 * access checks, listings, link reads, the time calls, the changes of owned and merged
 * directories: fastpath.NOTIFIED_*, CHANGES) reach the tracer as notifications from the
 * filter's listener, not as ptrace stops: the program's thread sleeps in the kernel while
 * the tracer answers, and no stop, register read or write, or resumption is paid
 * (bench/stop_floors.c measured 4.8 µs less an emulated call). The filter's notifications
 * wait killably once received (SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV), so a change the
 * tracer made is never restarted by a signal. The loop waits for either transport in
 * poll() on the listener and a signalfd of SIGCHLD, which Engine_wait blocks: a ptrace
 * stop's SIGCHLD stays pending until the signalfd is read, so no wake-up is lost, and no
 * handler runs for it (a signal delivery would cost each stop more than the read).
 *
 * A notified call the compiled loop cannot answer is handed to the ptrace handlers
 * unchanged (hand_over): PTRACE_INTERRUPT, then the answer -ERESTARTNOINTR; the kernel stops
 * the thread for the interrupt before it goes back to the program (PTRACE_EVENT_STOP), where
 * its r9 (an argument no notified call has) gets the mark, and then restarts the call, which
 * the filter sends to RET_TRACE for the mark. At that seccomp stop (the same number, address
 * and first five arguments) r9 gets the program's value back, and the stop is handled as
 * any (handover_stop). A signal delivered between the two keeps the mark in its frame for
 * the restart, which is still the one matched.
 * A call the handlers then let the kernel run (rewritten or not) goes through the filter
 * once more (the kernel's check after a tracer), which must not notify it again: the mark
 * goes back into r9 for that run (recheck, from the handlers' resumption, which then asks
 * for the exit stop), and at the exit stop r9 is the program's again.
 */
#include "_fastpath.h"

#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>

#define ERESTARTNOINTR_ 513
#define WAIT_BACKSTOP_MS 100         /* a child whose exit sends no SIGCHLD (exit_signal 0) */

/* A handover's steps: the interrupt's stop, the marked restart's seccomp stop, the handlers'
 * answer (the program's r9 back), the exit stop of a call they let the kernel run. */
enum { AWAIT_STOP = 1, AWAIT_CALL, RESTORED, AWAIT_EXIT };

struct Handover {
    pid_t tid;
    int state;
    int python_exit;                 /* AWAIT_EXIT: the exit stop is the Python loop's too */
    unsigned long long r9, nr, ip, args[5];
};

static void on_sigchld(int sig)
{
    (void)sig;                       /* (runs only outside Engine_wait) */
}

/* The listener comes from the program's first process (take_from), which installs its
 * filter, writes the listener's fd number to `hand` (the engine's fd from now on) and execs:
 * the listener, close-on-exec, is taken at the first stop after that (take_listener), its
 * execve's. SIGCHLD gets a handler, never SIG_IGN, under which no stop would signal. */
int notify_start(Engine *self, pid_t take_from, int hand, unsigned long long mark)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigchld;      /* not SIG_IGN, no SA_NOCLDSTOP: stops signal too */
    sigemptyset(&sa.sa_mask);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    if (self->take_from > 0 || self->listener >= 0)
        return -1;
    self->sigfd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
    if (self->sigfd < 0 || sigaction(SIGCHLD, &sa, &self->old_chld) < 0) {
        if (self->sigfd >= 0)
            close(self->sigfd);
        self->sigfd = -1;
        return -1;
    }
    self->take_from = take_from;
    self->hand = hand;
    self->mark = mark;
    return 0;
}

/* At a stop of take_from (stopped), or its end: the listener's number read, the listener
 * copied (pidfd_getfd). Nothing written yet: a stop before the filter (a signal's). The
 * process gone (its exec failed): nothing to take. A listener it has but the tracer cannot
 * take: the process is killed, never left to run with calls nobody answers. */
void take_listener(Engine *self, int stopped)
{
    char text[16];
    ssize_t n = stopped ? read(self->hand, text, sizeof text - 1) : 0;
    if (n < 0 && errno == EAGAIN)
        return;
    pid_t pid = self->take_from;
    self->take_from = 0;
    close(self->hand);
    self->hand = -1;
    if (n <= 0)
        return;
    text[n] = 0;
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    int fd = pidfd < 0 ? -1 : (int)syscall(SYS_pidfd_getfd, pidfd, atoi(text), 0);
    if (pidfd >= 0)
        close(pidfd);
    if (fd < 0) {
        kill(pid, SIGKILL);
        self->listener_error = errno ? errno : EBADF;
        return;
    }
    self->listener = fd;
    self->drain = 1;
}

void notify_stop(Engine *self)
{
    if (self->sigfd < 0)             /* (never started, or stopped) */
        return;
    if (self->listener >= 0)
        close(self->listener);
    if (self->hand >= 0)
        close(self->hand);
    if (self->sigfd >= 0)
        close(self->sigfd);
    self->listener = self->hand = self->sigfd = -1;
    self->take_from = 0;
    sigaction(SIGCHLD, &self->old_chld, NULL);
}

/* Wait for a notification or a SIGCHLD: 1 a notification is there, 0 a SIGCHLD (read),
 * another signal or the backstop ended the wait (stops may be waiting), -1 an error
 * (errno). The listener hangs up when no program's thread is left with its filter: waitpid
 * alone then. */
int notify_wait(Engine *self)
{
    struct pollfd p[2] = {{.fd = self->listener, .events = POLLIN},
                          {.fd = self->sigfd, .events = POLLIN}};
    int n = poll(p, 2, WAIT_BACKSTOP_MS);
    if (n < 0)
        return errno == EINTR ? 0 : -1;
    if (p[1].revents & POLLIN) {     /* one read: a SIGCHLD is never pending twice (a */
        struct signalfd_siginfo info;    /* thread's own one more is read at the next poll) */
        ssize_t got = read(self->sigfd, &info, sizeof info);
        (void)got;
    }
    if (p[0].revents & POLLIN)
        return 1;
    if (p[0].revents & (POLLHUP | POLLERR))
        self->listener_idle = 1;
    return 0;
}

/* The answer to the notification in hand: result, or the call run by the kernel (cont). */
void notif_answer(Engine *self, long result, int cont)
{
    struct seccomp_notif_resp resp;
    memset(&resp, 0, sizeof resp);
    resp.id = self->notif->id;
    if (cont)
        resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
    else if (result < 0)
        resp.error = (int32_t)result;
    else
        resp.val = result;
    ioctl(self->listener, SECCOMP_IOCTL_NOTIF_SEND, &resp);  /* ENOENT: its thread killed */
    self->notif = NULL;              /* answered once */
}

static Handover *find_handover(Engine *self, pid_t tid)
{
    for (Py_ssize_t i = 0; i < self->n_handovers; i++)
        if (self->handovers[i].tid == tid)
            return &self->handovers[i];
    return NULL;
}

void drop_handover(Engine *self, pid_t tid)
{
    Handover *h = find_handover(self, tid);
    if (h != NULL)
        *h = self->handovers[--self->n_handovers];
}

static long set_r9(pid_t tid, unsigned long long value)
{
    return ptrace(PTRACE_POKEUSER, tid, offsetof(struct user_regs_struct, r9), (void *)value);
}

/* The notification in hand goes to the ptrace handlers (see above). A thread that cannot be
 * interrupted (gone) or a handover that cannot be kept (memory) gets ENOSYS: never a call
 * made that nobody checked. */
static void hand_over(Engine *self, const struct seccomp_notif *req)
{
    pid_t tid = (pid_t)req->pid;
    Handover *h = NULL;
    if (tid > 0 && tid < self->tids) {
        drop_handover(self, tid);
        if (self->n_handovers == self->cap_handovers) {
            Py_ssize_t cap = self->cap_handovers ? 2 * self->cap_handovers : 8;
            Handover *grown = PyMem_Realloc(self->handovers, (size_t)cap * sizeof *grown);
            if (grown != NULL) {
                self->handovers = grown;
                self->cap_handovers = cap;
            }
        }
        if (self->n_handovers < self->cap_handovers)
            h = &self->handovers[self->n_handovers++];
    }
    if (h == NULL || ptrace(PTRACE_INTERRUPT, tid, 0, 0) < 0) {
        if (h != NULL)
            self->n_handovers--;
        notif_answer(self, -ENOSYS, 0);
        return;
    }
    h->tid = tid;
    h->state = AWAIT_STOP;
    h->r9 = req->data.args[5];
    h->nr = (unsigned long long)req->data.nr;
    h->ip = req->data.instruction_pointer;
    memcpy(h->args, req->data.args, sizeof h->args);
    self->handed_over++;
    notif_answer(self, -ERESTARTNOINTR_, 0);
}

/* A notification is there: received and answered (or handed over). */
void notify_take(Engine *self)
{
    struct seccomp_notif req;
    memset(&req, 0, sizeof req);
    if (ioctl(self->listener, SECCOMP_IOCTL_NOTIF_RECV, &req) < 0)
        return;                      /* withdrawn: its thread was killed before */
    clock_gettime(CLOCK_MONOTONIC, &self->t0);
    pid_t tid = (pid_t)req.pid;
    Handover *h = self->n_handovers > 0 ? find_handover(self, tid) : NULL;
    if (h != NULL && h->state == RESTORED)    /* its call was answered without a run (a */
        drop_handover(self, tid);             /* run of it, marked, is never notified) */
    self->notif = &req;
    if (answer_notified(self, tid, &req) == ANSWERED && self->notif == NULL)
        self->notified++;
    if (self->notif != NULL)         /* not answered: the handlers' */
        hand_over(self, &req);
    self->notif = NULL;
}

/* A ptrace stop of tid while handovers are in progress: ANSWERED for the interrupt's own
 * stop of tid's and an exit stop only its handover wanted, resumed here; FALLBACK for any
 * other, after the mark is set (the first stop) or taken off (the marked restart, *info then
 * its seccomp info; the exit stop). */
int handover_stop(Engine *self, pid_t tid, int status, struct __ptrace_syscall_info *info,
                  int *have_info)
{
    Handover *h = find_handover(self, tid);
    if (h == NULL)
        return FALLBACK;
    int trap = (status >> 16) == PTRACE_EVENT_STOP && WSTOPSIG(status) == SIGTRAP;
    switch (h->state) {
    case AWAIT_STOP:
        if (set_r9(tid, self->mark) < 0) {
            drop_handover(self, tid);   /* gone: its exit report follows */
            return FALLBACK;
        }
        h->state = AWAIT_CALL;
        break;
    case AWAIT_CALL:
        if ((status >> 8) == (SIGTRAP | (PTRACE_EVENT_SECCOMP << 8))) {
            *have_info = ptrace(PTRACE_GET_SYSCALL_INFO, tid, sizeof *info, info) > 0;
            const uint64_t *a = info->seccomp.args;
            if (*have_info && info->op == PTRACE_SYSCALL_INFO_SECCOMP && a[5] == self->mark
                    && info->seccomp.nr == h->nr && info->instruction_pointer == h->ip
                    && memcmp(a, h->args, sizeof h->args) == 0) {
                set_r9(tid, h->r9);
                info->seccomp.args[5] = h->r9;
                h->state = RESTORED;
            }
            return FALLBACK;
        }
        break;
    case RESTORED:                   /* answered without a run of the call: over */
        drop_handover(self, tid);
        return FALLBACK;
    case AWAIT_EXIT:
        if ((status >> 8) != SYSCALL_TRAP)
            return FALLBACK;
        set_r9(tid, h->r9);
        int python_exit = h->python_exit;
        drop_handover(self, tid);
        if (python_exit)
            return FALLBACK;
        ptrace(PTRACE_CONT, tid, 0, 0);
        self->handover_stops++;
        return ANSWERED;
    }
    if (!trap)
        return FALLBACK;
    ptrace(PTRACE_CONT, tid, 0, 0);  /* as the Python loop resumes such a stop */
    self->handover_stops++;
    return ANSWERED;
}

/* The handlers let tid's call run (python_exit: they want its exit stop): 1 when it is a
 * handed-over call, which then runs with the mark in r9 (see above), and must be resumed
 * with PTRACE_SYSCALL; 0 otherwise. */
int recheck(Engine *self, pid_t tid, int python_exit)
{
    Handover *h = self->n_handovers > 0 ? find_handover(self, tid) : NULL;
    if (h == NULL || h->state != RESTORED)
        return 0;
    if (set_r9(tid, self->mark) < 0) {
        drop_handover(self, tid);
        return 0;
    }
    h->state = AWAIT_EXIT;
    h->python_exit = python_exit;
    return 1;
}
