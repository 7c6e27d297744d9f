"""Process operations: creation flags, and signals and scheduling aimed at other processes.

Targets outside the sandbox behave as if they did not exist (ESRCH); group-wide signals
(kill(0), kill(-pgrp), kill(-1)) reach sandbox members only, so the tracer and the rest of
the machine can never be signalled (threats #7, #29).
"""

from __future__ import annotations

import errno
import os

from ..core.action import (Action, Allow, Decision, Deny, Emulate, ExitResult, Note, Rewrite,
                           SlotData)
from ..core.context import Context
from ..core.stop import Stop
from ..syscalls.process import (CLONE_NEW_ANY, CLONE_UNTRACED, IOPRIO_WHO_PGRP,
                                IOPRIO_WHO_PROCESS, IOPRIO_WHO_USER, PRIO_PGRP, PRIO_PROCESS,
                                PRIO_USER, RLIMIT_CORE)

OUTSIDE = Note(rule="builtin:process-isolation",
               hint="processes outside the sandbox cannot be reached from inside")


def _new_process(stop: Stop, ctx: Context) -> Action:
    """A call that creates a process: EAGAIN once the policy's processes.max are alive, as
    the kernel answers at RLIMIT_NPROC."""
    limit = ctx.policy.processes.max_processes
    if limit is None:
        return Allow()
    if not ctx.reserve_process(stop.tid, limit):
        return Deny(errno.EAGAIN, Note(
            rule="processes.max", detail=f"{limit} processes are alive",
            hint="to allow more, raise processes.max in the policy"))

    def done(_stop: Stop, _rv: int) -> ExitResult:
        ctx.release_process(stop.tid)
        return ExitResult()
    return Allow(on_exit=done)


def sys_fork(stop: Stop, ctx: Context) -> Action:
    """Implement fork(2)/vfork(2): count the new process against processes.max."""
    return _new_process(stop, ctx)


def sys_clone(stop: Stop, ctx: Context) -> Action:
    """Implement clone(2) for the flags the filter traps: untraced children and namespaces
    are refused; a new process (not a thread) counts against processes.max."""
    if stop.arg(0) & (CLONE_UNTRACED | CLONE_NEW_ANY):
        return Deny(errno.EPERM, Note(
            rule="builtin:clone-flags",
            detail="CLONE_UNTRACED or a new namespace would escape the tracer"))
    return _new_process(stop, ctx)


def _signal_group(ctx: Context, caller_pid: int, members: list[int], sig: int) -> Action:
    """Deliver a group signal to members only, as the kernel would to the whole group."""
    sent = 0
    for pid in members:
        try:
            if sig:
                os.kill(pid, sig)
            sent += 1
        except ProcessLookupError:
            continue
    return Emulate(0, note=OUTSIDE) if sent else Deny(errno.ESRCH, OUTSIDE)


def sys_kill(stop: Stop, ctx: Context) -> Action:
    """Implement kill(2): single targets must be members; groups are narrowed to members."""
    pid, sig = stop.sarg(0), stop.sarg(1)
    if sig < 0 or sig > 64:
        return Deny(errno.EINVAL, native=True)
    if pid > 0:
        return Allow() if ctx.is_member(pid) else Deny(errno.ESRCH, OUTSIDE)
    if pid == -1:
        targets = [p for p in ctx.member_pids() if p != stop.pid]
        return _signal_group(ctx, stop.pid, targets, sig)
    pgid = os.getpgid(stop.pid) if pid == 0 else -pid
    members, outsiders = ctx.members_in_group(pgid)
    if not outsiders:
        return Allow() if members else Deny(errno.ESRCH, OUTSIDE)
    return _signal_group(ctx, stop.pid, members, sig)


def _target_arg(index: int, zero_is_self: bool = True):
    def handler(stop: Stop, ctx: Context) -> Action:
        pid = stop.sarg(index)
        if (pid == 0 and zero_is_self) or (pid > 0 and ctx.is_member(pid)):
            return Allow()
        return Deny(errno.ESRCH, OUTSIDE)
    handler.__doc__ = f"Allow only when argument {index} names a sandbox member."
    return handler


def _which_who(user_value: int, pgrp_value: int, process_value: int):
    """setpriority/ioprio_set: (which, who) naming a process, a group or a user."""
    def handler(stop: Stop, ctx: Context) -> Action:
        which, who = stop.sarg(0), stop.sarg(1)
        if which == process_value:
            return Allow() if who == 0 or ctx.is_member(who) else Deny(errno.ESRCH, OUTSIDE)
        if which == pgrp_value:
            if who == 0:
                return Allow()
            members, outsiders = ctx.members_in_group(who)
            return Allow() if members and not outsiders else Deny(errno.ESRCH, OUTSIDE)
        if which == user_value:
            return Deny(errno.EPERM, Note(rule="builtin:process-isolation",
                                          detail="per-user changes reach outside processes"))
        return Deny(errno.EINVAL, native=True)
    handler.__doc__ = "Allow a process or group target inside the sandbox; refuse per-user."
    return handler


def sys_pidfd_send_signal(stop: Stop, ctx: Context) -> Action:
    """Implement pidfd_send_signal(2): the pidfd's process must be a member."""
    target = ctx.pidfd_target(stop.tid, stop.sarg(0))
    if target is None:
        return Allow()   # not a pidfd: the kernel answers EBADF
    return Allow() if ctx.is_member(target) else Deny(errno.ESRCH, OUTSIDE)


def _rlimit_core(resource_arg: int, new_arg: int, pid_arg: int | None):
    """setrlimit/prlimit64: other processes must be members; RLIMIT_CORE stays 0 (#27)."""
    def handler(stop: Stop, ctx: Context) -> Action:
        if pid_arg is not None:
            pid = stop.sarg(pid_arg)
            if pid != 0 and not ctx.is_member(pid):
                return Deny(errno.ESRCH, OUTSIDE)
        if stop.sarg(resource_arg) == RLIMIT_CORE and stop.arg(new_arg):
            cur_max = ctx.read(stop.tid, stop.arg(new_arg), 16)
            if any(cur_max):
                return Deny(errno.EPERM, Note(
                    rule="builtin:no-core-dumps",
                    detail="core dumps are written by the kernel outside any policy"))
            # The checked limit goes to the kernel from the read-only slot (#15).
            return Rewrite(((new_arg, SlotData(cur_max)),), decision=Decision.ALLOWED)
        return Allow()
    handler.__doc__ = "Other processes must be members; RLIMIT_CORE cannot be raised."
    return handler


def sys_sched_getaffinity(stop: Stop, ctx: Context) -> Action:
    """Implement sched_getaffinity(2): report the mask the program started with, not the CPU
    appvirt's placement pinned it to."""
    target = stop.sarg(0) or stop.tid
    if not ctx.is_member(target):
        return Deny(errno.ESRCH, OUTSIDE)
    mask = ctx.virtual_affinity(target)
    if mask is None:
        return Allow()
    size = stop.arg(1)
    rv, bufs = ctx.host_call("sched_getaffinity", (0, size, None), {2: min(size, 4096)})
    if rv < 0:
        return Deny(-rv, native=True)
    bits = sum(1 << cpu for cpu in mask if cpu < rv * 8)
    return Emulate(rv, ((stop.arg(2), bits.to_bytes(rv, "little")),), decision=Decision.ALLOWED)


def sys_sched_setaffinity(stop: Stop, ctx: Context) -> Action:
    """Implement sched_setaffinity(2): members only; a task that chooses its own CPUs is
    left alone by appvirt's placement from then on."""
    target = stop.sarg(0) or stop.tid
    if not ctx.is_member(target):
        return Deny(errno.ESRCH, OUTSIDE)
    ctx.affinity_chosen(target)
    return Allow()


HANDLERS = {
    "clone": sys_clone,
    "fork": sys_fork,
    "vfork": sys_fork,
    "kill": sys_kill,
    "tkill": _target_arg(0, zero_is_self=False),
    "tgkill": _target_arg(0, zero_is_self=False),
    "rt_sigqueueinfo": _target_arg(0, zero_is_self=False),
    "rt_tgsigqueueinfo": _target_arg(0, zero_is_self=False),
    "pidfd_open": _target_arg(0, zero_is_self=False),
    "pidfd_send_signal": sys_pidfd_send_signal,
    "sched_setaffinity": sys_sched_setaffinity,
    "sched_getaffinity": sys_sched_getaffinity,
    "sched_setparam": _target_arg(0),
    "sched_setscheduler": _target_arg(0),
    "sched_setattr": _target_arg(0),
    "migrate_pages": _target_arg(0),
    "move_pages": _target_arg(0),
    "setpriority": _which_who(PRIO_USER, PRIO_PGRP, PRIO_PROCESS),
    "ioprio_set": _which_who(IOPRIO_WHO_USER, IOPRIO_WHO_PGRP, IOPRIO_WHO_PROCESS),
    "prlimit64": _rlimit_core(1, 2, 0),
    "setrlimit": _rlimit_core(0, 1, None),
}
