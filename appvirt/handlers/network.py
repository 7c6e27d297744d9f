"""Network operations: socket families, addresses in connect/sendto/sendmsg/bind/listen.

Every address is read once, decided by the policy's network rules (and, for unix-socket paths,
by the file modes: bind creates the path, connect reads it), and handed to the kernel from the
read-only slot, so what was decided and logged is what connects (#15, #32). IPv4-mapped IPv6
addresses count as IPv4. Redirected sockets show the original peer in getpeername.
"""

from __future__ import annotations

import errno
import struct

from ..core.action import (Action, Allow, Decision, Deny, Emulate, ExitResult, Note, Rewrite,
                           SlotData)
from ..core.context import Context
from ..core.stop import Stop
from ..core import sysnums
from ..net.addresses import AddrKind, SockAddr, decode, encode_like
from ..net.rules import Direction, NetAction
from ..syscalls.network import AF_UNIX
from .common import refuse
from .filemodes import Intent, check
from .statmeta import own_created

SUN_PATH_OFFSET, SOCKADDR_UN_SIZE = 2, 110
MSGHDR = struct.Struct("<QI4xQQQQI4x")       # name, namelen, iov, iovlen, control, controllen, flags
MMSGHDR_SIZE = 64                             # msghdr + msg_len + padding
NR_SENDMSG = sysnums.nr("sendmsg")


def _hint(addr: SockAddr, direction: Direction) -> str:
    on = "" if direction is Direction.CONNECT else ", direction: bind"
    if addr.kind is AddrKind.IP:
        return f"to allow it, add a later network rule {{to: '{addr.ip}', ports: {addr.port}" \
               f"{on}, action: allow}}"
    return f"to allow it, add a later network rule {{unix: '{addr.path.decode(errors='replace')}'" \
           f"{on}, action: allow}}"


def decide_address(stop: Stop, ctx: Context, raw: bytes, direction: Direction
                   ) -> tuple[bytes | None, Action | None, Note]:
    """(bytes to give the kernel, or an action that ends the call, and the log note)."""
    addr = decode(raw)
    note = Note(address=str(addr), audit=addr.kind is AddrKind.IP)
    if addr.kind is AddrKind.UNIX_PATH:
        intent = Intent.CREATE if direction is Direction.BIND else Intent.READ
        r = ctx.resolve(stop, None, addr.path, follow=direction is Direction.CONNECT)
        deny, fnote = check(ctx.policy, r, intent, ctx.is_member)
        if deny is not None:
            return None, Deny(deny.errno, Note(rule=fnote.rule, path=fnote.path,
                                               hint=fnote.hint, address=str(addr))), note
        # The socket file lives where the overlay says (bind creates it in the upper layer).
        host = (ctx.fs.host_for_create(r.path) if intent is Intent.CREATE
                else ctx.fs.host_for_read(r.path))
        if len(host) >= SOCKADDR_UN_SIZE - SUN_PATH_OFFSET:
            return None, Deny(errno.ENAMETOOLONG, Note(
                rule=fnote.rule, path=r.path, host_path=host,
                detail="the socket's place in the overlay is longer than sun_path"),
                native=True), note
        raw = struct.pack("<H", AF_UNIX) + host + b"\0"
    verdict = ctx.policy.network.decide(direction, addr)
    note = Note(rule=verdict.rule_id, address=str(addr), audit=note.audit)
    if verdict.action is NetAction.DENY:
        return None, Deny(verdict.errno, Note(rule=verdict.rule_id, address=str(addr),
                                              hint=_hint(addr, direction), audit=True)), note
    if verdict.action is NetAction.REDIRECT and verdict.target is not None:
        ip, port = verdict.target
        try:
            new = encode_like(raw, addr.family, ip, port)
        except ValueError:
            return None, Deny(errno.EAFNOSUPPORT, note), note
        return new, None, Note(rule=verdict.rule_id, address=str(addr),
                               target=f"{ip}:{port}" if ip.version == 4 else f"[{ip}]:{port}",
                               audit=True)
    return raw, None, note


def _record_socket(ctx: Context, guest: bytes):
    """After a successful bind, the overlay records the socket file the kernel made."""
    def hook(stop: Stop, result: int) -> ExitResult:
        if result == 0:
            ctx.fs.created(guest)
            own_created(stop, ctx, guest)
        return ExitResult()
    return hook


def _address_call(addr_arg: int, len_arg: int, direction: Direction):
    def handler(stop: Stop, ctx: Context) -> Action:
        addrlen = stop.arg(len_arg) & 0xFFFFFFFF
        if stop.arg(addr_arg) == 0 or addrlen < 2:
            return Allow()          # no address: the kernel answers (EINVAL, EDESTADDRREQ)
        raw = ctx.read(stop.tid, stop.arg(addr_arg), min(addrlen, 128))
        give, action, note = decide_address(stop, ctx, raw, direction)
        if action is not None:
            return action
        redirected = give != raw
        addr = decode(raw)
        if redirected and addr.kind is AddrKind.IP and stop.name == "connect":
            ctx.remember_peer(stop.tid, stop.sarg(0), raw)
        on_exit = None
        if addr.kind is AddrKind.UNIX_PATH and direction is Direction.BIND:
            guest = ctx.resolve(stop, None, addr.path, follow=False).path
            on_exit = _record_socket(ctx, guest)
        return Rewrite(((addr_arg, SlotData(give)), (len_arg, len(give))), note=note,
                       on_exit=on_exit,
                       decision=Decision.REDIRECTED if redirected else Decision.ALLOWED)
    handler.__doc__ = (f"Decide the address of a {direction.value}; give the kernel the "
                       "checked (or redirected) copy from the slot.")
    return handler


def _message(stop: Stop, ctx: Context, hdr_addr: int) -> tuple[Rewrite | None, Action | None]:
    """A msghdr copied once into the slot, its msg_name decided and copied next to it."""
    raw = ctx.read(stop.tid, hdr_addr, MSGHDR.size)
    name, namelen, iov, iovlen, control, controllen, flags = MSGHDR.unpack(raw)
    if name == 0 or namelen == 0:
        hdr = MSGHDR.pack(0, 0, iov, iovlen, control, controllen, flags)
        return Rewrite(((1, SlotData(hdr)),), decision=Decision.ALLOWED), None
    sa = ctx.read(stop.tid, name, min(namelen, 128))
    give, action, note = decide_address(stop, ctx, sa, Direction.CONNECT)
    if action is not None:
        return None, action
    hdr = MSGHDR.pack(0, len(give), iov, iovlen, control, controllen, flags)
    # blob 0: the msghdr, whose msg_name (offset 0) points at blob 1, the sockaddr
    return Rewrite(((1, SlotData(hdr, refs=((0, 1),))),), extra=(SlotData(give),), note=note,
                   decision=Decision.REDIRECTED if give != sa else Decision.ALLOWED), None


def sys_sendmsg(stop: Stop, ctx: Context) -> Action:
    """Implement sendmsg(2): decide msg_name; the kernel reads the whole msghdr from the slot."""
    rewrite, action = _message(stop, ctx, stop.arg(1))
    if action is not None:
        return action
    assert rewrite is not None
    return rewrite


def sys_sendmmsg(stop: Stop, ctx: Context) -> Action:
    """Implement sendmmsg(2) as sendmsg of its first message from a read-only copy.

    The kernel writes msg_len back into the program's array, which a read-only copy cannot
    take, so one message goes per call: sendmmsg may send fewer than asked, and callers
    (glibc's resolver among them) send the rest."""
    if stop.arg(2) & 0xFFFFFFFF == 0:
        return Allow()
    rewrite, action = _message(stop, ctx, stop.arg(1))
    if action is not None:
        return action
    assert rewrite is not None
    vec = stop.arg(1)

    def one_message(s: Stop, rv: int) -> ExitResult:
        if rv < 0:
            return ExitResult()
        return ExitResult(result=1, writes=((vec + 56, struct.pack("<I", rv)),))
    return Rewrite(rewrite.args + ((2, stop.arg(3)),), nr=NR_SENDMSG, note=rewrite.note,
                   on_exit=one_message, decision=rewrite.decision, extra=rewrite.extra)


def sys_listen(stop: Stop, ctx: Context) -> Action:
    """Implement listen(2): the socket's local address (bound or about to be) follows the
    bind rules."""
    raw = ctx.socket_name(stop.tid, stop.sarg(0))
    if raw is None:
        return Allow()
    addr = decode(raw)
    if addr.kind is not AddrKind.IP:
        return Allow()
    verdict = ctx.policy.network.decide(Direction.BIND, addr)
    if verdict.action is NetAction.DENY:
        return Deny(verdict.errno, Note(rule=verdict.rule_id, address=str(addr),
                                        hint=_hint(addr, Direction.BIND), audit=True))
    return Allow(Note(rule=verdict.rule_id, address=str(addr), audit=True))


def sys_getpeername(stop: Stop, ctx: Context) -> Action:
    """Implement getpeername(2) for redirected sockets: the peer the program asked for."""
    original = ctx.remembered_peer(stop.tid, stop.sarg(0))
    if original is None:
        return Allow()
    room = struct.unpack("<I", ctx.read(stop.tid, stop.arg(2), 4))[0]
    return Emulate(0, ((stop.arg(1), original[:room]), (stop.arg(2),
                                                         struct.pack("<I", len(original)))),
                   Note(detail="the original peer of a redirected connection"))


HANDLERS = {
    "socket": refuse(errno.EAFNOSUPPORT),
    "connect": _address_call(1, 2, Direction.CONNECT),
    "bind": _address_call(1, 2, Direction.BIND),
    "sendto": _address_call(4, 5, Direction.CONNECT),
    "sendmsg": sys_sendmsg,
    "sendmmsg": sys_sendmmsg,
    "listen": sys_listen,
    "getpeername": sys_getpeername,
}
