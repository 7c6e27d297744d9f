"""The policy's `network:` section turned into a NetworkPolicy (after schema validation)."""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Callable
from typing import Any

from ..errors import PolicyError
from ..globs import Glob, GlobError
from .rules import LOOPBACK, Direction, NetAction, NetRule, NetworkPolicy

NETWORK_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "default": {},
    "properties": {
        "preset": {"enum": ["open", "none"], "default": "open",
                   "description": "open: every address allowed unless a rule says otherwise; "
                                  "none: only loopback (127.0.0.0/8, ::1)."},
        "rules": {"type": "array", "default": [], "items": {
            "type": "object", "additionalProperties": False, "required": ["action"],
            "properties": {
                "to": {"oneOf": [{"type": "string", "minLength": 1},
                                 {"type": "array", "minItems": 1,
                                  "items": {"type": "string", "minLength": 1}}]},
                "unix": {"type": "string", "minLength": 1},
                "ports": {"oneOf": [
                    {"type": "integer", "minimum": 0, "maximum": 65535},
                    {"type": "string", "pattern": r"^\d+(-\d+)?(,\s*\d+(-\d+)?)*$"}]},
                "direction": {"enum": ["connect", "bind", "both"], "default": "connect"},
                "action": {"enum": ["allow", "deny", "redirect"]},
                "errno": {"enum": ["ECONNREFUSED", "EACCES", "EPERM", "ENETUNREACH",
                                   "EHOSTUNREACH", "ETIMEDOUT"]},
                "redirect": {"type": "string", "minLength": 3},
            },
        }},
    },
}

Locate = Callable[[tuple[str | int, ...]], int | None]
_DIRECTIONS = {"connect": frozenset({Direction.CONNECT}), "bind": frozenset({Direction.BIND}),
               "both": frozenset(Direction)}


def _fail(msg: str, file: str, key: tuple[str | int, ...], locate: Locate) -> PolicyError:
    from ..policy.loader import format_key
    return PolicyError(msg, file=file, line=locate(key), key=format_key(key))


def _ports(spec: int | str) -> tuple[tuple[int, int], ...]:
    if isinstance(spec, int):
        return ((spec, spec),)
    out = []
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        a, b = int(lo), int(hi or lo)
        if not 0 <= a <= b <= 65535:
            raise ValueError(f"bad port range {part.strip()!r} (0-65535, low to high)")
        out.append((a, b))
    return tuple(out)


def parse_endpoint(text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """`1.2.3.4:80` or `[::1]:80`."""
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    else:
        host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"{text!r} is not an address and port (1.2.3.4:80 or [::1]:80)")
    return ipaddress.ip_address(host), int(port)


def network_policy(section: dict[str, Any], file: str, locate: Locate) -> NetworkPolicy:
    base: list[NetRule] = []
    if section["preset"] == "none":
        base.append(NetRule("network.preset[loopback]", NetAction.ALLOW,
                            frozenset(Direction), LOOPBACK))
    rules = list(base)
    for i, r in enumerate(section["rules"]):
        key: tuple[str | int, ...] = ("network", "rules", i)
        action = NetAction(r["action"])
        if "to" in r and "unix" in r:
            raise _fail("a rule names either 'to' (IP addresses) or 'unix', not both",
                        file, key, locate)
        try:
            nets = tuple(ipaddress.ip_network(t, strict=False) for t in (
                [r["to"]] if isinstance(r.get("to"), str) else r.get("to", []))
                if t != "any")
        except ValueError as e:
            raise _fail(f"{e} (expected an address or CIDR, e.g. 10.0.0.0/8)", file,
                        key + ("to",), locate) from None
        try:
            ports = _ports(r["ports"]) if "ports" in r else ()
        except ValueError as e:
            raise _fail(str(e), file, key + ("ports",), locate) from None
        glob = None
        if "unix" in r:
            pattern = r["unix"]
            try:
                glob = Glob.of("/@" + pattern[1:] if pattern.startswith("@") else pattern)
            except GlobError as e:
                raise _fail(f"bad glob {pattern!r}: {e}", file, key + ("unix",), locate) from None
        target = None
        if action is NetAction.REDIRECT:
            if "redirect" not in r or glob is not None or r.get("direction") in ("bind", "both"):
                raise _fail("a redirect rule needs 'redirect: HOST:PORT', IP addresses, and "
                            "applies to connections only", file, key, locate)
            try:
                target = parse_endpoint(r["redirect"])
            except ValueError as e:
                raise _fail(str(e), file, key + ("redirect",), locate) from None
        elif "redirect" in r:
            raise _fail("'redirect' is only for action: redirect", file, key + ("redirect",),
                        locate)
        err = getattr(errno, r["errno"]) if "errno" in r else 0
        rules.append(NetRule(f"network.rules[{i}]", action, _DIRECTIONS[r["direction"]], nets,
                             ports, glob, err, target))
    default = NetAction.DENY if section["preset"] == "none" else NetAction.ALLOW
    return NetworkPolicy(default, tuple(rules))
