"""User and group ids and capabilities, under a policy's `identity:` section.

With the section every call of the family is answered from the thread's virtual credentials
and never reaches the kernel. Without it the queries run natively (untraced) and the changes
reach the kernel, seen at their exit: a process whose real ids changed gets the kernel's own
answers to path queries, never ones made with appvirt's rights.
"""

from __future__ import annotations

import errno
import struct

from ..core.action import Action, Allow, Decision, Deny, Emulate, ExitResult, Note
from ..core.context import Context
from ..core.stop import Stop
from ..virt.credentials import CAP_SETGID, NGROUPS_MAX, Credentials

CAP_V1, CAP_V2, CAP_V3 = 0x19980330, 0x20071026, 0x20080522
CAP_HEADER = struct.Struct("<Ii")
CAP_DATA = struct.Struct("<III")          # effective, permitted, inheritable (32 bits each)
U32 = 0xFFFFFFFF
CHANGED = Note(rule="identity", detail="the virtual credentials changed")


def _getter(field: str):
    def handler(stop: Stop, ctx: Context) -> Action:
        return Emulate(getattr(ctx.credentials(stop.tid), field), decision=Decision.EMULATED)
    handler.__doc__ = f"Answer the virtual {field}."
    return handler


def _getres(fields: tuple[str, str, str]):
    def handler(stop: Stop, ctx: Context) -> Action:
        c = ctx.credentials(stop.tid)
        return Emulate(0, tuple((stop.arg(i), struct.pack("<I", getattr(c, f)))
                                for i, f in enumerate(fields)))
    handler.__doc__ = f"Answer the virtual {', '.join(fields)} (three pointers)."
    return handler


def _real_change(stop: Stop, ctx: Context) -> Action:
    """Without a virtual identity the kernel changes the real ids; once it has, the tracer
    stops answering the process's path queries with its own rights (mirror_call)."""
    def changed(_stop: Stop, rv: int) -> ExitResult:
        if rv >= 0:
            ctx.credentials_changed(stop.tid)
        return ExitResult()
    return Allow(on_exit=changed)


def _change(method: str, nargs: int):
    def handler(stop: Stop, ctx: Context) -> Action:
        if ctx.policy.identity is None:
            return _real_change(stop, ctx)
        creds, result = getattr(ctx.credentials(stop.tid), method)(
            *(stop.arg(i) & U32 for i in range(nargs)))
        return _apply(stop, ctx, creds, result)
    handler.__doc__ = f"Change the virtual credentials as {method}(2) would."
    return handler


def _apply(stop: Stop, ctx: Context, creds: Credentials, result: int) -> Action:
    if result < 0:
        return Deny(-result, Note(rule="identity", detail="refused as the kernel would"))
    ctx.set_credentials(stop.tid, creds)
    return Emulate(result, note=CHANGED)


def sys_getgroups(stop: Stop, ctx: Context) -> Action:
    """Implement getgroups(2) from the virtual supplementary groups."""
    result, groups = ctx.credentials(stop.tid).getgroups(stop.sarg(0))
    if result < 0:
        return Deny(-result, native=True)
    if not groups:
        return Emulate(result)
    return Emulate(result, ((stop.arg(1), struct.pack(f"<{len(groups)}I", *groups)),))


def sys_setgroups(stop: Stop, ctx: Context) -> Action:
    """Implement setgroups(2): CAP_SETGID in the virtual credentials."""
    if ctx.policy.identity is None:
        return _real_change(stop, ctx)
    creds = ctx.credentials(stop.tid)
    size = stop.sarg(0)
    # The kernel's order: the capability, then the size, then the list.
    if not creds.capable(CAP_SETGID):
        return _apply(stop, ctx, creds, -errno.EPERM)
    if size < 0 or size > NGROUPS_MAX:
        return Deny(errno.EINVAL, native=True)
    raw = ctx.read(stop.tid, stop.arg(1), 4 * size) if size else b""
    return _apply(stop, ctx, *creds.setgroups(struct.unpack(f"<{size}I", raw)))


def _cap_header(stop: Stop, ctx: Context) -> tuple[int, int] | Action:
    """(number of data structs, target pid) or the kernel's answer to a bad header."""
    version, pid = CAP_HEADER.unpack(ctx.read(stop.tid, stop.arg(0), CAP_HEADER.size))
    if version not in (CAP_V1, CAP_V2, CAP_V3):
        # The kernel tells the caller its preferred version.
        # capget with no data pointer is how libcap asks, and succeeds.
        probe = stop.entry.name == "capget" and not stop.arg(1)
        return Emulate(0 if probe else -errno.EINVAL,
                       ((stop.arg(0), struct.pack("<I", CAP_V3)),),
                       decision=Decision.ALLOWED)
    if pid < 0:
        return Deny(errno.EINVAL, native=True)
    return (1 if version == CAP_V1 else 2), pid


def sys_capget(stop: Stop, ctx: Context) -> Action:
    """Implement capget(2): the virtual capability sets of a sandboxed thread."""
    header = _cap_header(stop, ctx)
    if isinstance(header, (Deny, Emulate)):
        return header
    count, pid = header
    if pid and pid != stop.tid and not ctx.is_member(pid):
        return Deny(errno.ESRCH, native=True)
    if not stop.arg(1):
        return Emulate(0)
    c = ctx.credentials(pid or stop.tid)
    data = b"".join(CAP_DATA.pack(c.cap_effective >> s & U32, c.cap_permitted >> s & U32,
                                  c.cap_inheritable >> s & U32) for s in (0, 32)[:count])
    return Emulate(0, ((stop.arg(1), data),))


def sys_capset(stop: Stop, ctx: Context) -> Action:
    """Implement capset(2): the calling thread's own sets only, by the kernel's rules."""
    if ctx.policy.identity is None:
        return _real_change(stop, ctx)
    header = _cap_header(stop, ctx)
    if isinstance(header, (Deny, Emulate)):
        return header
    count, pid = header
    if pid and pid != stop.tid:
        return Deny(errno.EPERM, native=True)
    raw = ctx.read(stop.tid, stop.arg(1), CAP_DATA.size * count)
    sets = [0, 0, 0]
    for k in range(count):
        for i, word in enumerate(CAP_DATA.unpack_from(raw, CAP_DATA.size * k)):
            sets[i] |= word << (32 * k)
    creds, result = ctx.credentials(stop.tid).capset(*sets)
    return _apply(stop, ctx, creds, result)


HANDLERS = {
    "getuid": _getter("ruid"),
    "geteuid": _getter("euid"),
    "getgid": _getter("rgid"),
    "getegid": _getter("egid"),
    "getresuid": _getres(("ruid", "euid", "suid")),
    "getresgid": _getres(("rgid", "egid", "sgid")),
    "getgroups": sys_getgroups,
    "capget": sys_capget,
    "setuid": _change("setuid", 1),
    "setgid": _change("setgid", 1),
    "setreuid": _change("setreuid", 2),
    "setregid": _change("setregid", 2),
    "setresuid": _change("setresuid", 3),
    "setresgid": _change("setresgid", 3),
    "setfsuid": _change("setfsuid", 1),
    "setfsgid": _change("setfsgid", 1),
    "setgroups": sys_setgroups,
    "capset": sys_capset,
}
