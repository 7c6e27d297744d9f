/* The time calls of a program whose clock is virtual, answered as handlers/time.py answers
 * them from virt/clock.py's VirtualClock, whose state Python hands over (Engine.set_clock)
 * whenever it changes: clock_gettime of the realtime clocks (and of the monotonic ones under
 * a rate), gettimeofday and time, each logged as the handlers log it (emulated). */
#include "_fastpath.h"

#define NS_ 1000000000LL
enum { REALTIME_ = 0, MONOTONIC_ = 1, MONOTONIC_RAW_ = 4, REALTIME_COARSE_ = 5,
       MONOTONIC_COARSE_ = 6, BOOTTIME_ = 7, REALTIME_ALARM_ = 8, BOOTTIME_ALARM_ = 9,
       TAI_ = 11 };

static long long host_ns(int clock_id)
{
    struct timespec t;
    clock_gettime(clock_id, &t);
    return (long long)t.tv_sec * NS_ + t.tv_nsec;
}

/* VirtualClock.now: the virtual reading of clock_id in ns; 0 and *ns, or -1 for a clock it
 * leaves the kernel's (the handler lets those through: Python's). */
static int virtual_now(const Engine *self, int clock_id, long long *ns)
{
    const VirtualTime *c = &self->clock;
    if (clock_id == REALTIME_ || clock_id == REALTIME_COARSE_ || clock_id == REALTIME_ALARM_
            || clock_id == TAI_) {
        if (c->frozen) {
            *ns = c->frozen_ns;
            return 0;
        }
        long long real = host_ns(REALTIME_);
        /* int((real - start_real) * rate): a double product truncated toward zero */
        long long v = c->start_virtual + (long long)((double)(real - c->start_real) * c->rate);
        *ns = clock_id == TAI_ ? v + (host_ns(TAI_) - real) : v;
        return 0;
    }
    if (c->rate != 1.0 && (clock_id == MONOTONIC_ || clock_id == MONOTONIC_RAW_
                           || clock_id == MONOTONIC_COARSE_ || clock_id == BOOTTIME_
                           || clock_id == BOOTTIME_ALARM_)) {
        long long start = clock_id == BOOTTIME_ || clock_id == BOOTTIME_ALARM_
                          ? c->start_boottime : c->start_monotonic;
        *ns = start + (long long)((double)(host_ns(clock_id) - start) * c->rate);
        return 0;
    }
    return -1;
}

/* ns // NS and ns % NS, as Python divides (toward minus infinity). */
static void split_ns(long long ns, int64_t *sec, int64_t *rest)
{
    *sec = ns / NS_;
    *rest = ns % NS_;
    if (*rest < 0) {
        *rest += NS_;
        *sec -= 1;
    }
}

/* The record of an emulated time call, with its result. */
static void log_emulated(Engine *self, pid_t tid, const struct __ptrace_syscall_info *in,
                         long result)
{
    CallRecord r = {.decision = "emulated", .has_result = 1, .result = result};
    log_call(self, tid, (int)in->seccomp.nr, in->seccomp.args, &r);
}

int do_time_call(Engine *self, pid_t tid, const struct __ptrace_syscall_info *in)
{
    const uint64_t *a = in->seccomp.args;
    int nr = (int)in->seccomp.nr;
    long long now;
    int64_t sec, rest;
    long result = 0;
    if (!self->clock.known || (self->log_fd >= 0 && !logged(self, nr)))
        return FALLBACK;
    if (nr == self->nr_clock_gettime) {
        if (virtual_now(self, (int)(int32_t)a[0], &now) < 0)      /* (clockid_t: an int) */
            return FALLBACK;
        split_ns(now, &sec, &rest);
        int64_t ts[2] = {sec, rest};
        if (write_mem(tid, a[1], ts, sizeof ts) < 0)
            return FALLBACK;         /* EFAULT: Python explains */
    } else if (nr == self->nr_gettimeofday) {
        virtual_now(self, REALTIME_, &now);
        split_ns(now, &sec, &rest);
        int64_t tv[2] = {sec, rest / 1000}, tz = 0;
        if ((a[0] && write_mem(tid, a[0], tv, sizeof tv) < 0)
                || (a[1] && write_mem(tid, a[1], &tz, sizeof tz) < 0))
            return FALLBACK;
    } else {                         /* time(tloc) */
        virtual_now(self, REALTIME_, &now);
        split_ns(now, &sec, &rest);
        if (a[0] && write_mem(tid, a[0], &sec, sizeof sec) < 0)
            return FALLBACK;
        result = (long)sec;
    }
    if (self->log_fd >= 0)
        log_emulated(self, tid, in, result);
    emulate(self, tid, result);
    return ANSWERED;
}
