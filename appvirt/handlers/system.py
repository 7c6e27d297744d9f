"""System operations and the calls that would bypass or defeat interception.

Refused from the start, following the threat model's filter prologue and deny list: io_uring,
tracee seccomp listeners, ptrace and cross-process memory access, file handles, namespaces and
mounts, reboot, kexec, module loading, and mapping calls aimed at the read-only slot area.
"""

from __future__ import annotations

import errno

from ..core.action import Action, Allow, Decision, Deny, Note, Rewrite, SlotData
from ..core.context import Context
from ..core.slotlayout import overlaps
from ..core.stop import Stop
from ..syscalls.system import (F_SETOWN, REFUSED, SECCOMP_FILTER_FLAG_NEW_LISTENER, TIOCLINUX,
                               TIOCSETD, TIOCSTI)
from .common import refuse

SECCOMP_SET_MODE_FILTER = 1
MAP_FIXED = 0x10
MREMAP_FIXED = 2

SLOT_NOTE = Note(rule="builtin:slot-area",
                 detail="the read-only slot area holds checked arguments; it cannot be remapped")


def _slot_guard(*ranges: tuple[int, int | None]):
    """Refuse a mapping call whose (address arg, length arg) ranges touch the slot area."""
    def handler(stop: Stop, ctx: Context) -> Action:
        for addr_arg, len_arg in ranges:
            length = stop.arg(len_arg) if len_arg is not None else 4096
            if overlaps(stop.arg(addr_arg), length):
                return Deny(errno.EPERM, SLOT_NOTE)
        return Allow()
    handler.__doc__ = "Refuse mapping changes over the slot area."
    return handler


def sys_mmap(stop: Stop, ctx: Context) -> Action:
    """Implement mmap(2) near the slot area: only a MAP_FIXED mapping could replace it."""
    if stop.arg(3) & MAP_FIXED and overlaps(stop.arg(0), stop.arg(1)):
        return Deny(errno.EPERM, SLOT_NOTE)
    return Allow()


def sys_mremap(stop: Stop, ctx: Context) -> Action:
    """Implement mremap(2) near the slot area: neither the source nor a fixed target may touch it."""
    if overlaps(stop.arg(0), stop.arg(1)):
        return Deny(errno.EPERM, SLOT_NOTE)
    if stop.arg(3) & MREMAP_FIXED and overlaps(stop.arg(4), stop.arg(2)):
        return Deny(errno.EPERM, SLOT_NOTE)
    return Allow()


def sys_seccomp(stop: Stop, ctx: Context) -> Action:
    """Implement seccomp(2): filters may stack, but no user-notification listener (#4)."""
    if stop.arg(0) == SECCOMP_SET_MODE_FILTER and stop.arg(1) & SECCOMP_FILTER_FLAG_NEW_LISTENER:
        return Deny(errno.EPERM, Note(
            rule="builtin:seccomp-listener",
            detail="a listener would let the program answer its own syscalls"))
    return Allow()


def _owner_is_member(ctx: Context, owner: int) -> bool:
    if owner > 0:
        return ctx.is_member(owner)
    if owner < 0:
        members, outsiders = ctx.members_in_group(-owner)
        return bool(members) and not outsiders
    return True


OWNER_NOTE = Note(rule="builtin:process-isolation",
                  hint="SIGIO can only be directed at processes inside the sandbox")


def sys_ioctl(stop: Stop, ctx: Context) -> Action:
    """Implement ioctl(2) for terminal injection and signal-owner commands (#29, #33)."""
    cmd = stop.arg(1) & 0xFFFFFFFF
    if cmd in (TIOCSTI, TIOCLINUX, TIOCSETD):
        return Deny(errno.EPERM, Note(rule="builtin:tty-injection",
                                      detail="typing into the terminal escapes the sandbox"))
    raw = ctx.read(stop.tid, stop.arg(2), 4)
    owner = int.from_bytes(raw, "little", signed=True)
    if not _owner_is_member(ctx, owner):
        return Deny(errno.ESRCH, OWNER_NOTE)
    return Rewrite(((2, SlotData(raw)),), decision=Decision.ALLOWED)


def sys_fcntl(stop: Stop, ctx: Context) -> Action:
    """Implement fcntl(2) F_SETOWN/F_SETOWN_EX: the SIGIO target must be a member."""
    if stop.arg(1) & 0xFFFFFFFF == F_SETOWN:
        return Allow() if _owner_is_member(ctx, stop.sarg(2)) else Deny(errno.ESRCH, OWNER_NOTE)
    raw = ctx.read(stop.tid, stop.arg(2), 8)
    kind = int.from_bytes(raw[:4], "little", signed=True)
    pid = int.from_bytes(raw[4:], "little", signed=True)
    owner = -pid if kind == 2 else pid       # F_OWNER_PGRP = 2
    if not _owner_is_member(ctx, owner):
        return Deny(errno.ESRCH, OWNER_NOTE)
    return Rewrite(((2, SlotData(raw)),), decision=Decision.ALLOWED)


HANDLERS = {name: refuse(err, rule="builtin:refused") for name, err, _ in REFUSED} | {
    "seccomp": sys_seccomp,
    "ioctl": sys_ioctl,
    "fcntl": sys_fcntl,
    "personality": refuse(errno.EPERM),
    "arch_prctl": refuse(errno.EPERM),
    "prctl": refuse(errno.EPERM),
    "syslog": refuse(errno.EPERM),
    "mmap": sys_mmap,
    "munmap": _slot_guard((0, 1)),
    "madvise": _slot_guard((0, 1)),
    "mremap": sys_mremap,
    "shmat": _slot_guard((1, None)),
    "remap_file_pages": refuse(errno.EPERM),
}
