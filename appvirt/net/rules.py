"""The policy's network rules and how an address is decided (later rules win)."""

import enum
import errno
import functools
import ipaddress
import types
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

from ..globs import Glob

if TYPE_CHECKING:
    from .addresses import AddrKind, SockAddr


class Direction(enum.Enum):
    CONNECT = "connect"      # connect, sendto/sendmsg with an address (also UDP, DNS)
    BIND = "bind"            # bind, listen


class NetAction(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"
    REDIRECT = "redirect"


@functools.cache
def _addr_kind() -> "type[AddrKind]":
    """AddrKind, imported at the first address decided: every start builds a policy's rules,
    only a program's network call decodes an address (net.addresses)."""
    from .addresses import AddrKind
    return AddrKind


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class NetRule(NamedTuple):
    rule_id: str
    action: NetAction
    directions: frozenset[Direction]
    networks: tuple[IpNetwork, ...] = ()       # empty with no unix glob: any IP address
    ports: tuple[tuple[int, int], ...] = ()    # inclusive ranges; empty: any port
    unix: Glob | None = None                   # a unix-socket path glob (abstract: "@name")
    errno: int = 0
    target: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int] | None = None

    def matches(self, direction: Direction, addr: "SockAddr") -> bool:
        AddrKind = _addr_kind()
        if direction not in self.directions:
            return False
        if addr.kind is AddrKind.IP:
            if self.unix is not None:
                return False
            if self.networks and not any(addr.ip in n for n in self.networks
                                         if n.version == addr.ip.version):
                return False
            return not self.ports or any(lo <= addr.port <= hi for lo, hi in self.ports)
        if addr.kind in (AddrKind.UNIX_PATH, AddrKind.UNIX_ABSTRACT) and self.unix is not None:
            name = addr.path if addr.kind is AddrKind.UNIX_PATH else b"/@" + addr.path
            return self.unix.matches(name)
        return False


LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class NetVerdict(NamedTuple):
    action: NetAction
    rule_id: str
    errno: int = 0
    target: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int] | None = None


# What a denied address gets when its rule names no errno (read-only: every policy shares it).
DENY_ERRNO: Mapping[Direction, int] = types.MappingProxyType({
    Direction.CONNECT: errno.ECONNREFUSED, Direction.BIND: errno.EACCES})


class NetworkPolicy(NamedTuple):
    """`network:` of a policy. `default` decides IP addresses no rule matches; unix sockets
    no rule matches are allowed (their paths already follow the file modes)."""

    default: NetAction
    rules: tuple[NetRule, ...]
    deny_errno: Mapping[Direction, int] = DENY_ERRNO

    @property
    def active(self) -> bool:
        """Whether any address can be refused or changed (else nothing needs tracing)."""
        return self.default is not NetAction.ALLOW or any(
            r.action is not NetAction.ALLOW for r in self.rules)

    def decide(self, direction: Direction, addr: "SockAddr") -> NetVerdict:
        AddrKind = _addr_kind()
        for rule in reversed(self.rules):
            if rule.matches(direction, addr):
                if rule.action is NetAction.REDIRECT and direction is Direction.BIND:
                    continue
                err = rule.errno or self.deny_errno[direction]
                return NetVerdict(rule.action, rule.rule_id, err, rule.target)
        if addr.kind is not AddrKind.IP:
            return NetVerdict(NetAction.ALLOW, "network.unix-default")
        return NetVerdict(self.default, "network.default", self.deny_errno[direction])


ALLOW_ALL = NetworkPolicy(NetAction.ALLOW, ())
