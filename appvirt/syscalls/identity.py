"""User and group ids and capabilities (handlers in handlers/identity.py): answered from
the virtual credentials under a policy's `identity:` section; without it the queries run
natively and the changes are seen at their exit."""

from __future__ import annotations

from ..core.table import OpClass, SyscallEntry

_HANDLERS = "appvirt.handlers.identity"


def _identity(policy) -> bool:
    return policy.identity is not None


def _e(name: str, note: str = "") -> SyscallEntry:
    return SyscallEntry(name, OpClass.IDENTITY, _HANDLERS, enabled=_identity,
                        note=note or "answered from the virtual identity (identity:)")


def _set(name: str, note: str) -> SyscallEntry:
    """Changes are traced whatever the policy: virtualized, or seen at their exit."""
    return SyscallEntry(name, OpClass.IDENTITY, _HANDLERS, needs_exit=True, note=note)


SETS = "with identity: changes the virtual ids only, by the kernel's rules; else the real ones"

ENTRIES: tuple[SyscallEntry, ...] = (
    _e("getuid"),
    _e("geteuid"),
    _e("getgid"),
    _e("getegid"),
    _e("getresuid"),
    _e("getresgid"),
    _e("getgroups"),
    _e("capget"),
    _set("setuid", SETS),
    _set("setgid", SETS),
    _set("setreuid", SETS),
    _set("setregid", SETS),
    _set("setresuid", SETS),
    _set("setresgid", SETS),
    _set("setfsuid", SETS),
    _set("setfsgid", SETS),
    _set("setgroups", SETS),
    _set("capset", SETS),
)
