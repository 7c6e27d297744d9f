"""Network operations: socket families, and unix-socket paths in bind and connect.

A unix-socket path is a file: bind creates it and connect reads it, so both go through the
file modes. The sockaddr is copied once and given to the kernel from the read-only slot (#15).
"""

from __future__ import annotations

import errno

from ..core.action import Action, Allow, Decision, Deny, Rewrite, SlotData
from ..core.context import Context
from ..core.stop import Stop
from ..core.table import ArgNotIn, OpClass, Support, SyscallEntry
from .common import refuse
from .filemodes import Intent, check

AF_UNIX, AF_INET, AF_INET6, AF_NETLINK = 1, 2, 10, 16
SOCKET_FAMILIES = frozenset({AF_UNIX, AF_INET, AF_INET6, AF_NETLINK})
SUN_PATH_OFFSET = 2
SOCKADDR_UN_SIZE = 110


def _unix_path_call(intent: Intent, follow: bool):
    def handler(stop: Stop, ctx: Context) -> Action:
        addrlen = stop.arg(2) & 0xFFFFFFFF
        if addrlen < SUN_PATH_OFFSET + 1:
            return Allow()          # unnamed or too short: the kernel decides (EINVAL, autobind)
        raw = ctx.read(stop.tid, stop.arg(1), min(addrlen, 128))
        family = int.from_bytes(raw[:2], "little")
        if family != AF_UNIX or raw[SUN_PATH_OFFSET] == 0:
            # Internet and abstract addresses have no file to check; the copy still goes to
            # the kernel from the slot, so what was logged is what connects.
            return Rewrite(((1, SlotData(raw)),), decision=Decision.ALLOWED)
        path = raw[SUN_PATH_OFFSET:SOCKADDR_UN_SIZE].split(b"\0", 1)[0]
        r = ctx.resolve(stop, None, path, follow=follow)
        deny, note = check(ctx.policy, r, intent, ctx.is_member)
        if deny is not None:
            return Deny(deny.errno, note)
        return Rewrite(((1, SlotData(raw)),), note=note, decision=Decision.ALLOWED)
    handler.__doc__ = f"Check a unix-socket path as a file ({intent.value})."
    return handler


ENTRIES: tuple[SyscallEntry, ...] = (
    SyscallEntry("socket", OpClass.NETWORK, refuse(errno.EAFNOSUPPORT), Support.PARTIAL,
                 "families other than unix, inet, inet6 and netlink refused (#34)",
                 trace_if=(ArgNotIn(0, SOCKET_FAMILIES),)),
    SyscallEntry("bind", OpClass.NETWORK, _unix_path_call(Intent.CREATE, False),
                 Support.PARTIAL, "unix-socket paths follow the file modes", needs_exit=True),
    SyscallEntry("connect", OpClass.NETWORK, _unix_path_call(Intent.READ, True),
                 Support.PARTIAL, "unix-socket paths follow the file modes", needs_exit=True),
)
