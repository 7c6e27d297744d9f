"""Network calls: socket families, and the addresses of connect, sendto, sendmsg, bind and
listen (handlers in handlers/network.py)."""

from __future__ import annotations

from ..core.table import ArgHighNotIn, ArgNotIn, OpClass, Support, SyscallEntry

_HANDLERS = "appvirt.handlers.network"
AF_UNIX, AF_INET, AF_INET6, AF_NETLINK = 1, 2, 10, 16
SOCKET_FAMILIES = frozenset({AF_UNIX, AF_INET, AF_INET6, AF_NETLINK})


def _active(policy) -> bool:
    return policy.network.active


def _redirects(policy) -> bool:
    from ..net.rules import NetAction
    return any(r.action is NetAction.REDIRECT for r in policy.network.rules)


_HAS_ADDR = (ArgNotIn(4, frozenset({0})), ArgHighNotIn(4, frozenset({0})))

ENTRIES: tuple[SyscallEntry, ...] = (
    SyscallEntry("socket", OpClass.NETWORK, _HANDLERS, Support.PARTIAL,
                 "families other than unix, inet, inet6 and netlink refused (#34)",
                 trace_if=(ArgNotIn(0, SOCKET_FAMILIES),)),
    SyscallEntry("connect", OpClass.NETWORK, _HANDLERS,
                 note="network rules; unix-socket paths follow the file modes",
                 needs_exit=True),
    SyscallEntry("bind", OpClass.NETWORK, _HANDLERS,
                 note="network rules (on: bind); unix-socket paths follow the file modes",
                 needs_exit=True),
    SyscallEntry("sendto", OpClass.NETWORK, _HANDLERS,
                 note="with an address (UDP, DNS, TCP Fast Open): network rules",
                 trace_if=_HAS_ADDR, needs_exit=True, enabled=_active),
    SyscallEntry("sendmsg", OpClass.NETWORK, _HANDLERS, needs_exit=True, enabled=_active,
                 note="msg_name decided; the msghdr goes to the kernel from the slot"),
    SyscallEntry("sendmmsg", OpClass.NETWORK, _HANDLERS, Support.PARTIAL, needs_exit=True,
                 enabled=_active, note="one message per call (sendmsg from a read-only copy)"),
    SyscallEntry("listen", OpClass.NETWORK, _HANDLERS, enabled=_active,
                 note="the socket's local address follows the bind rules"),
    SyscallEntry("getpeername", OpClass.NETWORK, _HANDLERS, enabled=_redirects,
                 note="redirected sockets show the original peer"),
)
