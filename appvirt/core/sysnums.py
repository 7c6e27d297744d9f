"""x86_64 system-call names and numbers.

The base is python-ptrace's table; Linux added calls after it was generated, so those are
listed here from the kernel's `arch/x86/entry/syscalls/syscall_64.tbl` (the table test checks
that the running kernel implements nothing beyond what this module knows).
"""

from __future__ import annotations

from types import MappingProxyType

from ptrace.syscall.linux.x86_64 import SYSCALL_NAMES as _PTRACE_NAMES

# Numbers from syscall_64.tbl (Linux 6.18) that python-ptrace 0.9.9 does not know.
_NEWER = {
    335: "uretprobe", 336: "uprobe",
    441: "epoll_pwait2", 442: "mount_setattr", 443: "quotactl_fd",
    444: "landlock_create_ruleset", 445: "landlock_add_rule", 446: "landlock_restrict_self",
    447: "memfd_secret", 448: "process_mrelease", 449: "futex_waitv",
    450: "set_mempolicy_home_node", 451: "cachestat", 452: "fchmodat2", 453: "map_shadow_stack",
    454: "futex_wake", 455: "futex_wait", 456: "futex_requeue", 457: "statmount", 458: "listmount",
    459: "lsm_get_self_attr", 460: "lsm_set_self_attr", 461: "lsm_list_modules", 462: "mseal",
    463: "setxattrat", 464: "getxattrat", 465: "listxattrat", 466: "removexattrat",
    467: "open_tree_attr", 468: "file_getattr", 469: "file_setattr",
}

# python-ptrace's name for 283 predates the kernel's (timerfd became timerfd_create).
_RENAMED = {283: ("timerfd", "timerfd_create")}

# Numbers 512-547 are the x32 ABI's own entries (only reachable with __X32_SYSCALL_BIT, which
# the filter kills); they are not native x86_64 calls.
_X32_FIRST = 512


def _build() -> dict[int, str]:
    names = {nr: name for nr, name in _PTRACE_NAMES.items() if nr < _X32_FIRST}
    for nr, (old, new) in _RENAMED.items():
        if names.get(nr) == old:
            names[nr] = new
    for nr, name in _NEWER.items():
        if names.get(nr, name) != name:
            raise RuntimeError(f"syscall {nr} is {names[nr]!r} in python-ptrace, {name!r} here")
        names[nr] = name
    return names


NAME_BY_NR: MappingProxyType[int, str] = MappingProxyType(_build())
NR_BY_NAME: MappingProxyType[str, int] = MappingProxyType({v: k for k, v in NAME_BY_NR.items()})
MAX_NR = max(NAME_BY_NR)


def nr(name: str) -> int:
    """Return the x86_64 number of syscall `name` (KeyError if unknown)."""
    return NR_BY_NAME[name]


def name(number: int) -> str:
    """Return the name of syscall `number`, or `syscall_<n>` if it is not a known call."""
    return NAME_BY_NR.get(number) or f"syscall_{number}"
