"""Socket addresses as the kernel reads them, decoded once into typed records."""

import enum
import ipaddress
import struct
from typing import NamedTuple

AF_UNIX, AF_INET, AF_INET6 = 1, 2, 10       # Linux's (the socket module costs start-up time)


class AddrKind(enum.Enum):
    IP = "ip"
    UNIX_PATH = "unix"
    UNIX_ABSTRACT = "abstract"
    UNIX_UNNAMED = "unnamed"
    OTHER = "other"


class SockAddr(NamedTuple):
    """A decoded sockaddr. IPv4-mapped IPv6 addresses are their IPv4 address (threat #32)."""

    kind: AddrKind
    family: int
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    port: int = 0
    path: bytes = b""          # unix path, or abstract name without its leading NUL

    def __str__(self) -> str:
        if self.kind is AddrKind.IP:
            return f"[{self.ip}]:{self.port}" if self.ip.version == 6 else f"{self.ip}:{self.port}"
        if self.kind is AddrKind.UNIX_PATH:
            return "unix:" + self.path.decode(errors="backslashreplace")
        if self.kind is AddrKind.UNIX_ABSTRACT:
            return "unix:@" + self.path.decode(errors="backslashreplace")
        return f"family {self.family}" if self.kind is AddrKind.OTHER else "unix:(unnamed)"


def decode(raw: bytes) -> SockAddr:
    """Decode the bytes of a sockaddr (as many as the program passed, up to 128)."""
    if len(raw) < 2:
        return SockAddr(AddrKind.OTHER, -1)
    family = struct.unpack_from("<H", raw)[0]
    if family == AF_INET and len(raw) >= 8:
        port = struct.unpack_from(">H", raw, 2)[0]
        return SockAddr(AddrKind.IP, AF_INET, ipaddress.IPv4Address(raw[4:8]), port)
    if family == AF_INET6 and len(raw) >= 24:
        port = struct.unpack_from(">H", raw, 2)[0]
        ip = ipaddress.IPv6Address(raw[8:24])
        if ip.ipv4_mapped is not None:
            return SockAddr(AddrKind.IP, AF_INET6, ip.ipv4_mapped, port)
        return SockAddr(AddrKind.IP, AF_INET6, ip, port)
    if family == AF_UNIX:
        body = raw[2:110]
        if not body:
            return SockAddr(AddrKind.UNIX_UNNAMED, AF_UNIX)
        if body[0] == 0:
            return SockAddr(AddrKind.UNIX_ABSTRACT, AF_UNIX, path=body[1:])
        return SockAddr(AddrKind.UNIX_PATH, AF_UNIX, path=body.split(b"\0", 1)[0])
    return SockAddr(AddrKind.OTHER, family)


def encode_like(original: bytes, family: int, ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
                port: int) -> bytes:
    """A sockaddr of the original's family pointing at ip:port (for redirects): an IPv4 target
    of an AF_INET6 socket is written IPv4-mapped, as the socket needs it."""
    if family == AF_INET:
        if ip.version != 4:
            raise ValueError("an IPv6 target for an IPv4 socket")
        return struct.pack("<H", AF_INET) + struct.pack(">H", port) + ip.packed + bytes(8)
    addr6 = (ipaddress.IPv6Address("::ffff:" + str(ip)) if ip.version == 4 else ip).packed
    flow_scope = original[4:8] + addr6 + (original[24:28] if len(original) >= 28 else bytes(4))
    return struct.pack("<H", AF_INET6) + struct.pack(">H", port) + flow_scope
