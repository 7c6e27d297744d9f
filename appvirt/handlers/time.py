"""Time: the host clock is never set from inside the sandbox."""

from __future__ import annotations

import errno

from ..core.table import OpClass, Support, SyscallEntry
from .common import refuse

_NOTE = "the host clock is never set (EPERM)"

ENTRIES: tuple[SyscallEntry, ...] = tuple(
    SyscallEntry(name, OpClass.TIME, refuse(errno.EPERM, rule="builtin:host-clock"),
                 Support.DENIED, _NOTE)
    for name in ("settimeofday", "clock_settime", "adjtimex", "clock_adjtime"))
