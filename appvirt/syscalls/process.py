"""Process calls: creation, and signals and scheduling aimed at other processes (handlers in
handlers/process.py)."""

from __future__ import annotations

from ..core.table import (ArgBitsAny, ArgBitsClear, ArgIn, ArgNotIn, OpClass, Support,
                          SyscallEntry)

CLONE_THREAD = 0x00010000
CLONE_UNTRACED = 0x00800000
CLONE_NEW_ANY = (0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000
                 | 0x20000000 | 0x40000000)   # NEWNS NEWCGROUP NEWUTS NEWIPC NEWUSER NEWPID NEWNET
PRIO_PROCESS, PRIO_PGRP, PRIO_USER = 0, 1, 2
IOPRIO_WHO_PROCESS, IOPRIO_WHO_PGRP, IOPRIO_WHO_USER = 1, 2, 3
RLIMIT_CORE = 4


def _counts_processes(policy) -> bool:
    return policy.processes.max_processes is not None


def _clone_conditions(policy) -> tuple:
    """Threads never stop; new processes stop only when processes.max counts them."""
    escape = ArgBitsAny(0, CLONE_UNTRACED | CLONE_NEW_ANY)
    if _counts_processes(policy):
        return (escape, ArgBitsClear(0, CLONE_THREAD))
    return (escape,)


def _e(name: str, **kw) -> SyscallEntry:
    return SyscallEntry(name, OpClass.PROCESS, "appvirt.handlers.process", **kw)


ENTRIES: tuple[SyscallEntry, ...] = (
    _e("clone", support=Support.PARTIAL, needs_exit=True,
       trace_if=(ArgBitsAny(0, CLONE_UNTRACED | CLONE_NEW_ANY),), trace_if_for=_clone_conditions,
       note="CLONE_UNTRACED and CLONE_NEW* refused (EPERM); new processes count against "
            "processes.max; threads run natively"),
    _e("fork", needs_exit=True, enabled=_counts_processes,
       note="traced only to count processes against processes.max (EAGAIN beyond)"),
    _e("vfork", needs_exit=True, enabled=_counts_processes,
       note="traced only to count processes against processes.max (EAGAIN beyond)"),
    _e("kill", note="members only; kill(-1) and group kills reach members only"),
    _e("tkill"),
    _e("tgkill"),
    _e("rt_sigqueueinfo"),
    _e("rt_tgsigqueueinfo"),
    _e("pidfd_open"),
    _e("pidfd_send_signal"),
    _e("sched_setaffinity", note="members only; the task's own choice is kept from then on"),
    _e("sched_getaffinity",
       note="reports the mask the program started with (appvirt may pin it to one CPU)"),
    _e("sched_setparam", trace_if=(ArgNotIn(0, frozenset({0})),)),
    _e("sched_setscheduler", trace_if=(ArgNotIn(0, frozenset({0})),)),
    _e("sched_setattr", trace_if=(ArgNotIn(0, frozenset({0})),)),
    _e("migrate_pages", trace_if=(ArgNotIn(0, frozenset({0})),)),
    _e("move_pages", trace_if=(ArgNotIn(0, frozenset({0})),)),
    _e("setpriority", trace_if=(ArgNotIn(1, frozenset({0})), ArgIn(0, frozenset({PRIO_USER}))),
       support=Support.PARTIAL, note="PRIO_USER refused: it reaches outside processes"),
    _e("ioprio_set",
       trace_if=(ArgNotIn(1, frozenset({0})), ArgIn(0, frozenset({IOPRIO_WHO_USER}))),
       support=Support.PARTIAL, note="IOPRIO_WHO_USER refused"),
    _e("prlimit64", trace_if=(ArgNotIn(0, frozenset({0})), ArgIn(1, frozenset({RLIMIT_CORE}))),
       needs_exit=True, note="other processes: members only; RLIMIT_CORE cannot be raised"),
    _e("setrlimit", trace_if=(ArgIn(0, frozenset({RLIMIT_CORE})),), needs_exit=True,
       note="RLIMIT_CORE cannot be raised (kernel-written core files)"),
)
