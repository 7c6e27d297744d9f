"""Time: queries answered from the app's virtual clock; setting moves only that clock.

Without a `time:` section nothing is traced but the setters, which are refused: the host
clock is never set from inside. With one, the tracer hides the vDSO at every exec (so glibc's
and Go's fast clock reads become syscalls) and answers them; with a rate, sleeps and timeouts
are scaled too.
"""

from __future__ import annotations

import errno
import struct

from ..core.action import Action, Allow, Decision, Deny, Emulate, Note, Rewrite, SlotData
from ..core.context import Context
from ..core.stop import Stop
from ..virt.clock import NS, REALTIME_CLOCKS, STEADY_CLOCKS, CLOCK_REALTIME


TIMESPEC = struct.Struct("<qq")
TIMEVAL = struct.Struct("<qq")
TIMEX_SIZE, TIMEX_TIME = 208, 72          # struct timex, and its `time` member
ADJ_SETOFFSET, ADJ_NANO = 0x0100, 0x2000
TIMER_ABSTIME = 1
HOST_CLOCK = Note(rule="builtin:host-clock", hint="add `time: {clock: '+0s', set: allow}` to "
                                                  "give the program a clock it may set")
CAP_SYS_TIME = 25
NEEDS_SYS_TIME = Note(rule="identity", detail="the program lacks CAP_SYS_TIME, as on a real "
                                              "machine")


def _ts(ns: int) -> bytes:
    return TIMESPEC.pack(ns // NS, ns % NS)


def sys_clock_gettime(stop: Stop, ctx: Context) -> Action:
    """Implement clock_gettime(2) from the virtual clock (CPU-time clocks: the kernel's)."""
    clock_id = stop.sarg(0)
    if clock_id not in REALTIME_CLOCKS and clock_id not in STEADY_CLOCKS:
        return Allow()
    now = ctx.clock.now(clock_id)
    return Emulate(0, ((stop.arg(1), _ts(now)),), decision=Decision.EMULATED)


def sys_gettimeofday(stop: Stop, ctx: Context) -> Action:
    """Implement gettimeofday(2) from the virtual clock (the timezone is zero, as glibc's)."""
    now = ctx.clock.now(CLOCK_REALTIME)
    writes = []
    if stop.arg(0):
        writes.append((stop.arg(0), TIMEVAL.pack(now // NS, (now % NS) // 1000)))
    if stop.arg(1):
        writes.append((stop.arg(1), bytes(8)))
    return Emulate(0, tuple(writes))


def sys_time(stop: Stop, ctx: Context) -> Action:
    """Implement time(2) from the virtual clock."""
    sec = ctx.clock.now(CLOCK_REALTIME) // NS
    return Emulate(sec, ((stop.arg(0), struct.pack("<q", sec)),) if stop.arg(0) else ())


def _set_clock(stop: Stop, ctx: Context, ns: int) -> Action:
    if ns < 0:
        return Deny(errno.EINVAL, native=True)
    if not ctx.capable(stop.tid, CAP_SYS_TIME):
        return Deny(errno.EPERM, NEEDS_SYS_TIME)
    ctx.set_clock(ns)
    return Emulate(0, note=Note(rule="time.set", detail=f"virtual clock set to {ns / NS:.0f}"))


def sys_settimeofday(stop: Stop, ctx: Context) -> Action:
    """Implement settimeofday(2): move the virtual clock, never the host's."""
    if not ctx.policy.time.allow_set:
        return Deny(errno.EPERM, HOST_CLOCK)
    if not stop.arg(0):
        return Emulate(0)                 # only a timezone: nothing the clock keeps
    sec, usec = TIMEVAL.unpack(ctx.read(stop.tid, stop.arg(0), 16))
    if not 0 <= usec < 1_000_000:
        return Deny(errno.EINVAL, native=True)
    return _set_clock(stop, ctx, sec * NS + usec * 1000)


def sys_clock_settime(stop: Stop, ctx: Context) -> Action:
    """Implement clock_settime(2) for CLOCK_REALTIME (others: EINVAL, as the kernel)."""
    if not ctx.policy.time.allow_set:
        return Deny(errno.EPERM, HOST_CLOCK)
    if stop.sarg(0) != CLOCK_REALTIME:
        return Deny(errno.EINVAL, native=True)
    sec, nsec = TIMESPEC.unpack(ctx.read(stop.tid, stop.arg(1), 16))
    if not 0 <= nsec < NS:
        return Deny(errno.EINVAL, native=True)
    return _set_clock(stop, ctx, sec * NS + nsec)


def _adjtimex(stop: Stop, ctx: Context, buf_arg: int) -> Action:
    raw = bytearray(ctx.read(stop.tid, stop.arg(buf_arg), TIMEX_SIZE))
    modes = struct.unpack_from("<I", raw)[0]
    if modes:
        if not ctx.policy.time.allow_set:
            return Deny(errno.EPERM, HOST_CLOCK)
        if not ctx.capable(stop.tid, CAP_SYS_TIME):
            return Deny(errno.EPERM, NEEDS_SYS_TIME)
        if modes & ADJ_SETOFFSET:
            sec, frac = struct.unpack_from("<qq", raw, TIMEX_TIME)
            shift = sec * NS + (frac if modes & ADJ_NANO else frac * 1000)
            ctx.set_clock(ctx.clock.now(CLOCK_REALTIME) + shift)
        # Frequency and PLL adjustments have nothing to act on in a virtual clock.
    rv, out = ctx.host_call("adjtimex", (None,), {0: TIMEX_SIZE})   # a read-only query
    if rv < 0:
        return Deny(-rv, native=True)
    reply = bytearray(out[0])
    now = ctx.clock.now(CLOCK_REALTIME)
    nano = bool(struct.unpack_from("<i", reply, 40)[0] & 0x2000)     # STA_NANO
    struct.pack_into("<qq", reply, TIMEX_TIME, now // NS,
                     now % NS if nano else (now % NS) // 1000)
    return Emulate(rv, ((stop.arg(buf_arg), bytes(reply)),),
                   decision=Decision.EMULATED if modes else Decision.ALLOWED)


def sys_adjtimex(stop: Stop, ctx: Context) -> Action:
    """Implement adjtimex(2): queries see the virtual time; adjustments move only it."""
    return _adjtimex(stop, ctx, 0)


def sys_clock_adjtime(stop: Stop, ctx: Context) -> Action:
    """Implement clock_adjtime(2) for CLOCK_REALTIME as adjtimex."""
    if stop.sarg(0) != CLOCK_REALTIME:
        return Deny(errno.EINVAL if ctx.policy.time.virtual else errno.EPERM, native=True)
    return _adjtimex(stop, ctx, 1)


# --- sleeps and timeouts, with a rate ------------------------------------------------------
def _scale_timespec(stop: Stop, ctx: Context, arg: int, clock_id: int, absolute: bool
                    ) -> Action:
    if not stop.arg(arg):
        return Allow()
    sec, nsec = TIMESPEC.unpack(ctx.read(stop.tid, stop.arg(arg), 16))
    if sec < 0 or not 0 <= nsec < NS:
        return Deny(errno.EINVAL, native=True)
    ns = sec * NS + nsec
    real = ctx.clock.real_deadline(clock_id, ns) if absolute else ctx.clock.real_duration(ns)
    return Rewrite(((arg, SlotData(_ts(real))),), decision=Decision.EMULATED,
                   note=Note(detail="timeout scaled to the virtual clock's rate"))


def sys_nanosleep(stop: Stop, ctx: Context) -> Action:
    """Implement nanosleep(2) at the virtual clock's rate."""
    return _scale_timespec(stop, ctx, 0, CLOCK_REALTIME, False)


def sys_clock_nanosleep(stop: Stop, ctx: Context) -> Action:
    """Implement clock_nanosleep(2): relative sleeps scaled, absolute deadlines converted."""
    clock_id = stop.sarg(0)
    if clock_id not in REALTIME_CLOCKS and clock_id not in STEADY_CLOCKS:
        return Allow()
    absolute = bool(stop.arg(1) & TIMER_ABSTIME)
    action = _scale_timespec(stop, ctx, 2, clock_id, absolute)
    if absolute and isinstance(action, Rewrite):
        # The deadline is now on the host clock it was computed for.
        base = CLOCK_REALTIME if clock_id in REALTIME_CLOCKS else clock_id
        return Rewrite(action.args + ((0, base),), decision=action.decision, note=action.note)
    return action


def _scale_ms(arg: int):
    def handler(stop: Stop, ctx: Context) -> Action:
        ms = stop.sarg(arg)
        if ms <= 0:
            return Allow()
        real_ms = max(1, ctx.clock.real_duration(ms * 1_000_000) // 1_000_000)
        return Rewrite(((arg, real_ms),), decision=Decision.EMULATED)
    handler.__doc__ = f"Scale the millisecond timeout (argument {arg}) to the clock's rate."
    return handler


def _scale_timespec_arg(arg: int):
    def handler(stop: Stop, ctx: Context) -> Action:
        return _scale_timespec(stop, ctx, arg, CLOCK_REALTIME, False)
    handler.__doc__ = f"Scale the timespec timeout (argument {arg}) to the clock's rate."
    return handler


def sys_select(stop: Stop, ctx: Context) -> Action:
    """Implement select(2)'s timeout (a timeval) at the virtual clock's rate."""
    if not stop.arg(4):
        return Allow()
    sec, usec = TIMEVAL.unpack(ctx.read(stop.tid, stop.arg(4), 16))
    if sec < 0 or not 0 <= usec < 1_000_000:
        return Deny(errno.EINVAL, native=True)
    real = ctx.clock.real_duration(sec * NS + usec * 1000)
    return Rewrite(((4, SlotData(TIMEVAL.pack(real // NS, (real % NS) // 1000))),),
                   decision=Decision.EMULATED)


FUTEX_WAIT, FUTEX_WAIT_BITSET, FUTEX_CMD_MASK, FUTEX_CLOCK_REALTIME = 0, 9, 0x7F, 256


def sys_futex(stop: Stop, ctx: Context) -> Action:
    """Implement futex(2) waits: a relative timeout scaled, an absolute one converted."""
    op = stop.sarg(1)
    cmd = op & FUTEX_CMD_MASK
    if cmd == FUTEX_WAIT:
        return _scale_timespec(stop, ctx, 3, CLOCK_REALTIME, False)
    clock_id = 0 if op & FUTEX_CLOCK_REALTIME else 1
    return _scale_timespec(stop, ctx, 3, clock_id, True)


HANDLERS = {
    "clock_gettime": sys_clock_gettime,
    "gettimeofday": sys_gettimeofday,
    "time": sys_time,
    "settimeofday": sys_settimeofday,
    "clock_settime": sys_clock_settime,
    "adjtimex": sys_adjtimex,
    "clock_adjtime": sys_clock_adjtime,
    "nanosleep": sys_nanosleep,
    "clock_nanosleep": sys_clock_nanosleep,
    "poll": _scale_ms(2),
    "epoll_wait": _scale_ms(3),
    "epoll_pwait": _scale_ms(3),
    "ppoll": _scale_timespec_arg(2),
    "pselect6": _scale_timespec_arg(4),
    "select": sys_select,
    "futex": sys_futex,
}
