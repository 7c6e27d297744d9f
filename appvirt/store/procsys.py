"""/proc/sys virtualization helper: sysctl writes land in the store, never on the host.

Mapping (one key per /proc/sys directory, one value per file, no escaping needed):

    /proc/sys/net/ipv4/ip_forward  <->  key machine/sysctl/net/ipv4, value ip_forward

so the registry tree shows `/run/appvirt/registry/machine/sysctl/net/ipv4/ip_forward`.
Content follows the tree's rendering and typing rule (render.py): `echo 1 > ip_forward`
stores integer 1 and reads back "1\n"; "4096 87380 6291456" stays a string.

"Read the host's value until one is written" is the caller's: `read` returns None for a
sysctl never written, and the tracer then lets the read reach the host. The tracer also
checks that the host file exists and is a sysctl before `write` (writing an unknown sysctl
must fail with ENOENT as on the host).
"""

from __future__ import annotations

import errno

from ..errors import GuestErrno
from .errors import KeyNotFound, StoreError
from .keys import SEP, check_key, check_name, join
from .layers import NodeKind
from .render import render, value_from_content
from .store import Store
from .tree import guest_errors
from .values import Value
from .wellknown import SYSCTL_KEY

PROC_SYS = "/proc/sys"


def under_proc_sys(path: bytes) -> bool:
    """Whether a resolved absolute path is /proc/sys or below it."""
    return path.startswith(b"/proc/sys") and (len(path) == 9 or path[9:10] == b"/")


def sysctl_location(path_or_name: bytes | str) -> tuple[str, str]:
    """(key, value name) of a sysctl, given as '/proc/sys/net/ipv4/ip_forward', as a path
    relative to /proc/sys, or in sysctl(8) form 'net.ipv4.ip_forward' ('/' standing for a
    '.' inside a component, as in 'net.ipv4.conf.eth0/100.forwarding')."""
    s = path_or_name.decode("utf-8", "surrogateescape") if isinstance(path_or_name, bytes) \
        else path_or_name
    if s == PROC_SYS or s.startswith(PROC_SYS + "/"):
        rel = s[len(PROC_SYS):].strip("/")
    elif s.startswith("/"):
        raise ValueError(f"{s!r} is not under {PROC_SYS}")
    else:
        first = min((i for i in (s.find("."), s.find("/")) if i >= 0), default=-1)
        rel = s.translate(str.maketrans("./", "/.")) if first >= 0 and s[first] == "." else s
    parts = [p for p in rel.split("/") if p]
    if not parts:
        raise ValueError(f"{s!r} names no sysctl")
    try:
        for p in parts:
            check_name(p, what="sysctl name component")
        key = check_key(SEP.join([SYSCTL_KEY, *parts[:-1]]), allow_root=False)
    except StoreError as e:
        raise ValueError(e.message) from e
    return key, parts[-1]


def sysctl_name(key: str, name: str) -> str:
    """The sysctl(8) name of a stored sysctl: ('machine/sysctl/net/ipv4', 'ip_forward') ->
    'net.ipv4.ip_forward'."""
    rel = key[len(SYSCTL_KEY):].strip("/")
    parts = (rel.split("/") if rel else []) + [name]
    return ".".join(p.replace(".", "/") for p in parts)


class SysctlOverlay:
    """Virtual sysctl values of one app."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _location(self, proc_path: bytes | str) -> tuple[str, str]:
        try:
            return sysctl_location(proc_path)
        except ValueError as e:
            raise GuestErrno(errno.ENOENT, str(e)) from None

    def lookup(self, proc_path: bytes | str) -> Value | None:
        """The virtual value of a sysctl, or None if the app never wrote it."""
        key, name = self._location(proc_path)
        with guest_errors():
            try:
                node = self.store.node(join(key, name))
            except KeyNotFound:
                return None
        if node.kind is not NodeKind.VALUE:
            return None
        return node.entry.value  # type: ignore[union-attr]

    def read(self, proc_path: bytes | str) -> bytes | None:
        """The file content a read returns, or None: read the host's file instead."""
        v = self.lookup(proc_path)
        return None if v is None else render(v)

    def write(self, proc_path: bytes | str, content: bytes) -> Value:
        """Store what a program wrote to a /proc/sys file; returns the stored value."""
        key, name = self._location(proc_path)
        with guest_errors(), self.store.batch():
            old = self.lookup(proc_path)
            value = value_from_content(content, old.type if old else None)
            self.store.set(key, name, value)
        return value

    def forget(self, proc_path: bytes | str) -> bool:
        """Drop the virtual value (reads reach the host again); False if there was none."""
        key, name = self._location(proc_path)
        with guest_errors(), self.store.batch():
            if self.lookup(proc_path) is None:
                return False
            self.store.delete_value(key, name)
        return True

    def written_paths(self) -> frozenset[bytes]:
        """The /proc/sys paths of every virtual sysctl."""
        view = self.store.view()
        return frozenset(f"{PROC_SYS}{k[len(SYSCTL_KEY):]}/{n}".encode()
                         for (k, n) in view.values
                         if k == SYSCTL_KEY or k.startswith(SYSCTL_KEY + SEP))

    def written(self) -> dict[str, Value]:
        """Every virtual sysctl, by sysctl(8) name."""
        view = self.store.view()
        return {sysctl_name(k, n): v for (k, n), v in view.values.items()
                if k == SYSCTL_KEY or k.startswith(SYSCTL_KEY + SEP)}

