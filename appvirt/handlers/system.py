"""System operations and the calls that would bypass or defeat interception.

Refused from the start, following the threat model's filter prologue and deny list: io_uring,
tracee seccomp listeners, ptrace and cross-process memory access, file handles, namespaces and
mounts, reboot, kexec, module loading, and mapping calls aimed at the read-only slot area.
"""

from __future__ import annotations

import errno

from ..core.action import Action, Allow, Decision, Deny, Note, Rewrite, SlotData
from ..core.context import Context
from ..core.slotlayout import WINDOW_HIGH_WORDS, overlaps
from ..core.stop import Stop
from ..core.table import (ArgBitsAny, ArgHighIn, ArgHighNotIn, ArgIn, ArgNotIn, OpClass,
                          Support, SyscallEntry)
from .common import refuse

SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
TIOCSTI, TIOCLINUX, TIOCSETD = 0x5412, 0x541C, 0x5423
FIOSETOWN, SIOCSPGRP = 0x8901, 0x8902
F_SETOWN, F_SETOWN_EX = 8, 15
PERSONALITY_ALLOWED = frozenset({0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF})
ARCH_MAP_VDSO = frozenset({0x2001, 0x2002, 0x2003})
PR_SET_MM = 35
SYSLOG_READ_ONLY = frozenset({0, 1, 2, 3, 9, 10})
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


def _deny_always(name: str, err: int, note: str, op: OpClass = OpClass.SYSTEM) -> SyscallEntry:
    return SyscallEntry(name, op, refuse(err, rule="builtin:refused"), Support.DENIED, note)


_REFUSED = [
    ("kexec_load", errno.EPERM, "never reaches the kernel"),
    ("kexec_file_load", errno.EPERM, "never reaches the kernel"),
    ("mount", errno.EPERM, "mounts change what paths mean (#26)"),
    ("umount2", errno.EPERM, "mounts change what paths mean (#26)"),
    ("pivot_root", errno.EPERM, "changes what paths mean (#26)"),
    ("chroot", errno.EPERM, "changes what paths mean (#26)"),
    ("open_tree", errno.EPERM, "new mount API (#26)"),
    ("open_tree_attr", errno.EPERM, "new mount API (#26)"),
    ("move_mount", errno.EPERM, "new mount API (#26)"),
    ("fsopen", errno.EPERM, "new mount API (#26)"),
    ("fsconfig", errno.EPERM, "new mount API (#26)"),
    ("fsmount", errno.EPERM, "new mount API (#26)"),
    ("fspick", errno.EPERM, "new mount API (#26)"),
    ("mount_setattr", errno.EPERM, "new mount API (#26)"),
    ("unshare", errno.EPERM, "namespaces change what paths and pids mean (#26)"),
    ("setns", errno.EPERM, "namespaces change what paths and pids mean (#26)"),
    ("swapon", errno.EPERM, "machine configuration"),
    ("swapoff", errno.EPERM, "machine configuration"),
    ("acct", errno.EPERM, "writes a host file from the kernel"),
    ("quotactl", errno.EPERM, "machine configuration"),
    ("quotactl_fd", errno.EPERM, "machine configuration"),
    ("iopl", errno.EPERM, "direct hardware port access"),
    ("ioperm", errno.EPERM, "direct hardware port access"),
    ("bpf", errno.EPERM, "kernel programs"),
    ("perf_event_open", errno.EPERM, "kernel tracing"),
    ("vhangup", errno.EPERM, "hangs up the user's terminal"),
    ("ptrace", errno.EPERM, "a sandboxed tracer defeats the sandbox's own (#5, #30)"),
    ("process_vm_readv", errno.EPERM, "cross-process memory access (#12, #30)"),
    ("process_vm_writev", errno.EPERM, "cross-process memory access (#12, #30)"),
    ("pidfd_getfd", errno.EPERM, "steals other processes' fds (#25)"),
    ("kcmp", errno.EPERM, "inspects other processes (#30)"),
    ("open_by_handle_at", errno.EPERM, "opens files with no path check (#24)"),
    ("name_to_handle_at", errno.EOPNOTSUPP, "file handles bypass path checks (#24)"),
    ("io_uring_setup", errno.ENOSYS, "io_uring runs operations without syscalls (#3)"),
    ("io_uring_enter", errno.ENOSYS, "io_uring runs operations without syscalls (#3)"),
    ("io_uring_register", errno.ENOSYS, "io_uring runs operations without syscalls (#3)"),
    ("clone3", errno.ENOSYS, "its flags are in memory; libc falls back to clone (#5)"),
    ("userfaultfd", errno.ENOSYS, "widens race windows (#14)"),
    ("io_setup", errno.ENOSYS, "asynchronous kernel writes into checked buffers (#12)"),
    ("io_submit", errno.ENOSYS, "asynchronous kernel writes into checked buffers (#12)"),
    ("fanotify_init", errno.EPERM, "watches and blocks host-wide file access"),
    ("keyctl", errno.ENOSYS, "kernel keyrings are shared with the host user"),
    ("add_key", errno.ENOSYS, "kernel keyrings are shared with the host user"),
    ("request_key", errno.ENOSYS, "kernel keyrings are shared with the host user"),
    ("mq_open", errno.ENOSYS, "POSIX message queues are host-global"),
    ("mq_unlink", errno.ENOSYS, "POSIX message queues are host-global"),
    ("memfd_secret", errno.ENOSYS, "not virtualized"),
    ("uselib", errno.ENOSYS, "loads code by path; obsolete"),
] + [(name, errno.ENOSYS, "obsolete: not implemented by Linux on x86_64") for name in (
    "_sysctl", "afs_syscall", "create_module", "get_kernel_syms", "getpmsg", "putpmsg",
    "lookup_dcookie", "nfsservctl", "query_module", "security", "tuxcall",
    "vserver")]

_SMALL = frozenset({0})     # high word of a length below 4 GiB
_MAP_WINDOW = (ArgHighIn(0, WINDOW_HIGH_WORDS), ArgHighNotIn(1, _SMALL))

ENTRIES: tuple[SyscallEntry, ...] = tuple(
    _deny_always(n, e, note) for n, e, note in _REFUSED) + (
    SyscallEntry("seccomp", OpClass.SYSTEM, sys_seccomp, Support.PARTIAL,
                 "filters stack; user-notification listeners refused (#4)",
                 trace_if=(ArgBitsAny(1, SECCOMP_FILTER_FLAG_NEW_LISTENER),)),
    SyscallEntry("ioctl", OpClass.SYSTEM, sys_ioctl, Support.PARTIAL,
                 "TIOCSTI/TIOCLINUX/TIOCSETD refused; SIGIO owners must be members",
                 trace_if=(ArgIn(1, frozenset({TIOCSTI, TIOCLINUX, TIOCSETD, FIOSETOWN,
                                               SIOCSPGRP})),), needs_exit=True),
    SyscallEntry("fcntl", OpClass.PROCESS, sys_fcntl, Support.FULL,
                 "F_SETOWN/F_SETOWN_EX targets must be members",
                 trace_if=(ArgIn(1, frozenset({F_SETOWN, F_SETOWN_EX})),), needs_exit=True),
    SyscallEntry("personality", OpClass.SYSTEM, refuse(errno.EPERM), Support.PARTIAL,
                 "only the values Docker allows (#35)",
                 trace_if=(ArgNotIn(0, PERSONALITY_ALLOWED),)),
    SyscallEntry("arch_prctl", OpClass.SYSTEM, refuse(errno.EPERM), Support.PARTIAL,
                 "ARCH_MAP_VDSO_* refused (#36)", trace_if=(ArgIn(0, ARCH_MAP_VDSO),)),
    SyscallEntry("prctl", OpClass.SYSTEM, refuse(errno.EPERM), Support.PARTIAL,
                 "PR_SET_MM refused (it rewrites the exe link and memory layout)",
                 trace_if=(ArgIn(0, frozenset({PR_SET_MM})),)),
    SyscallEntry("syslog", OpClass.SYSTEM, refuse(errno.EPERM), Support.PARTIAL,
                 "reading allowed; clearing and console settings refused",
                 trace_if=(ArgNotIn(0, SYSLOG_READ_ONLY),)),
    SyscallEntry("mmap", OpClass.SYSTEM, sys_mmap, Support.FULL,
                 "MAP_FIXED over the slot area refused", trace_if=_MAP_WINDOW),
    SyscallEntry("munmap", OpClass.SYSTEM, _slot_guard((0, 1)), Support.FULL,
                 "unmapping the slot area refused", trace_if=_MAP_WINDOW),
    SyscallEntry("madvise", OpClass.SYSTEM, _slot_guard((0, 1)), Support.FULL,
                 "advice on the slot area refused (MADV_DONTFORK would drop it)",
                 trace_if=_MAP_WINDOW),
    SyscallEntry("mremap", OpClass.SYSTEM, sys_mremap, Support.FULL,
                 "moving or replacing the slot area refused",
                 trace_if=_MAP_WINDOW + (ArgHighIn(4, WINDOW_HIGH_WORDS),
                                         ArgHighNotIn(2, _SMALL))),
    SyscallEntry("shmat", OpClass.SYSTEM, _slot_guard((1, None)), Support.FULL,
                 "attaching over the slot area refused",
                 trace_if=(ArgHighIn(1, WINDOW_HIGH_WORDS),)),
    SyscallEntry("remap_file_pages", OpClass.SYSTEM, refuse(errno.EPERM), Support.DENIED,
                 "deprecated; could rearrange the slot area's pages"),
)
