"""System calls, and the calls that would bypass or defeat interception (handlers in
handlers/system.py).

Refused from the start, following the threat model's filter prologue and deny list: io_uring,
tracee seccomp listeners, ptrace and cross-process memory access, file handles, namespaces and
mounts, reboot, kexec, module loading, and mapping calls aimed at the read-only slot area.
"""

from __future__ import annotations

import errno

from ..core.slotlayout import WINDOW_HIGH_WORDS
from ..core.table import (ArgBitsAny, ArgHighIn, ArgHighNotIn, ArgIn, ArgNotIn, OpClass,
                          Support, SyscallEntry)

_HANDLERS = "appvirt.handlers.system"
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
TIOCSTI, TIOCLINUX, TIOCSETD = 0x5412, 0x541C, 0x5423
FIOSETOWN, SIOCSPGRP = 0x8901, 0x8902
F_SETOWN, F_SETOWN_EX = 8, 15
PERSONALITY_ALLOWED = frozenset({0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF})
ARCH_MAP_VDSO = frozenset({0x2001, 0x2002, 0x2003})
PR_SET_MM = 35
SYSLOG_READ_ONLY = frozenset({0, 1, 2, 3, 9, 10})


def _deny_always(name: str, note: str, op: OpClass = OpClass.SYSTEM) -> SyscallEntry:
    return SyscallEntry(name, op, _HANDLERS, Support.DENIED, note)


# (name, errno, why): refused whatever the policy says
REFUSED = [
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
    _deny_always(n, note) for n, _, note in REFUSED) + (
    SyscallEntry("seccomp", OpClass.SYSTEM, _HANDLERS, Support.PARTIAL,
                 "filters stack; user-notification listeners refused (#4)",
                 trace_if=(ArgBitsAny(1, SECCOMP_FILTER_FLAG_NEW_LISTENER),)),
    SyscallEntry("ioctl", OpClass.SYSTEM, _HANDLERS, Support.PARTIAL,
                 "TIOCSTI/TIOCLINUX/TIOCSETD refused; SIGIO owners must be members",
                 trace_if=(ArgIn(1, frozenset({TIOCSTI, TIOCLINUX, TIOCSETD, FIOSETOWN,
                                               SIOCSPGRP})),), needs_exit=True),
    SyscallEntry("fcntl", OpClass.PROCESS, _HANDLERS, Support.FULL,
                 "F_SETOWN/F_SETOWN_EX targets must be members",
                 trace_if=(ArgIn(1, frozenset({F_SETOWN, F_SETOWN_EX})),), needs_exit=True),
    SyscallEntry("personality", OpClass.SYSTEM, _HANDLERS, Support.PARTIAL,
                 "only the values Docker allows (#35)",
                 trace_if=(ArgNotIn(0, PERSONALITY_ALLOWED),)),
    SyscallEntry("arch_prctl", OpClass.SYSTEM, _HANDLERS, Support.PARTIAL,
                 "ARCH_MAP_VDSO_* refused (#36)", trace_if=(ArgIn(0, ARCH_MAP_VDSO),)),
    SyscallEntry("prctl", OpClass.SYSTEM, _HANDLERS, Support.PARTIAL,
                 "PR_SET_MM refused (it rewrites the exe link and memory layout)",
                 trace_if=(ArgIn(0, frozenset({PR_SET_MM})),)),
    SyscallEntry("syslog", OpClass.SYSTEM, _HANDLERS, Support.PARTIAL,
                 "reading allowed; clearing and console settings refused",
                 trace_if=(ArgNotIn(0, SYSLOG_READ_ONLY),)),
    SyscallEntry("mmap", OpClass.SYSTEM, _HANDLERS, Support.FULL,
                 "MAP_FIXED over the slot area refused", trace_if=_MAP_WINDOW),
    SyscallEntry("munmap", OpClass.SYSTEM, _HANDLERS, Support.FULL,
                 "unmapping the slot area refused", trace_if=_MAP_WINDOW),
    SyscallEntry("madvise", OpClass.SYSTEM, _HANDLERS, Support.FULL,
                 "advice on the slot area refused (MADV_DONTFORK would drop it)",
                 trace_if=_MAP_WINDOW),
    SyscallEntry("mremap", OpClass.SYSTEM, _HANDLERS, Support.FULL,
                 "moving or replacing the slot area refused",
                 trace_if=_MAP_WINDOW + (ArgHighIn(4, WINDOW_HIGH_WORDS),
                                         ArgHighNotIn(2, _SMALL))),
    SyscallEntry("shmat", OpClass.SYSTEM, _HANDLERS, Support.FULL,
                 "attaching over the slot area refused",
                 trace_if=(ArgHighIn(1, WINDOW_HIGH_WORDS),)),
    SyscallEntry("remap_file_pages", OpClass.SYSTEM, _HANDLERS, Support.DENIED,
                 "deprecated; could rearrange the slot area's pages"),
)
