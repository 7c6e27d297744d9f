"""Time calls: queries answered from the app's virtual clock, setters that move only that
clock, sleeps and timeouts scaled by its rate (handlers in handlers/time.py)."""

from __future__ import annotations

from ..core.table import ArgIn, OpClass, Support, SyscallEntry, TraceCondition
from ..virt.clock import REALTIME_CLOCKS


def _virtual(policy) -> bool:
    return policy.time.virtual


def _clocks_changed(policy) -> tuple[TraceCondition, ...]:
    """Every clock_gettime stops under a rate (the monotonic clocks run at it too); without
    one, only those of the realtime clocks (VirtualClock.now): the monotonic and CPU-time
    readings (Python's imports make hundreds) are the host's, read by the kernel without a
    stop."""
    # (clockid_t is an int: the filter compares the argument's low 32 bits)
    return () if policy.time.spec.rate != 1.0 else (ArgIn(0, REALTIME_CLOCKS),)


def _scaled(policy) -> bool:
    return policy.time.virtual and policy.time.spec.rate != 1.0


def _t(name: str, enabled, note: str = "", **kw) -> SyscallEntry:
    return SyscallEntry(name, OpClass.TIME, "appvirt.handlers.time", Support.FULL, note,
                        enabled=enabled, **kw)


_SETTER = "the app's virtual clock moves, never the host's; refused without a time: section"
ENTRIES: tuple[SyscallEntry, ...] = (
    _t("clock_gettime", _virtual, "from the virtual clock (vDSO hidden); without a rate, "
       "only the realtime clocks stop", trace_if_for=_clocks_changed),
    _t("gettimeofday", _virtual, "from the virtual clock (vDSO hidden)"),
    _t("time", _virtual, "from the virtual clock (vDSO hidden)"),
    _t("settimeofday", None, _SETTER),
    _t("clock_settime", None, _SETTER),
    _t("adjtimex", None, "queries see the virtual time; " + _SETTER),
    _t("clock_adjtime", None, "as adjtimex, for CLOCK_REALTIME"),
    _t("nanosleep", _scaled, "scaled by the clock's rate", needs_exit=True),
    _t("clock_nanosleep", _scaled, "scaled by the clock's rate", needs_exit=True),
    _t("poll", _scaled, "timeout scaled by the clock's rate", needs_exit=True),
    _t("epoll_wait", _scaled, "timeout scaled", needs_exit=True),
    _t("epoll_pwait", _scaled, "timeout scaled", needs_exit=True),
    _t("ppoll", _scaled, "timeout scaled", needs_exit=True),
    _t("pselect6", _scaled, "timeout scaled", needs_exit=True),
    _t("select", _scaled, "timeout scaled", needs_exit=True),
    _t("futex", _scaled, "wait timeouts scaled or converted", needs_exit=True),
)
