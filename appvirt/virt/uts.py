"""The app's virtual host and domain names (machine/uts in its store).

What the program set wins over the policy's name, which wins over the host's: a
`hostname newname` is still in effect on the next run (`appvirt reg APP rm machine/uts`
forgets it).
"""

from __future__ import annotations

import os

from ..store import Store, Value
from ..store.wellknown import UTS_DOMAINNAME, UTS_HOSTNAME, UTS_KEY
from .machinepolicy import UtsPolicy

UTS_FIELD = 65                  # struct new_utsname: six char[65]
NODENAME_AT, DOMAINNAME_AT = 1 * UTS_FIELD, 5 * UTS_FIELD


def _host_domainname() -> str:
    try:
        with open("/proc/sys/kernel/domainname", encoding="utf-8", errors="surrogateescape") as f:
            return f.read().rstrip("\n")
    except OSError:
        return "(none)"


class VirtualUts:
    """Host and domain name as the program sees them; changes go to the store at once."""

    def __init__(self, policy: UtsPolicy, store: Store | None) -> None:
        self.store = store
        self.hostname = self._stored(UTS_HOSTNAME) or policy.hostname or os.uname().nodename
        self.domainname = (self._stored(UTS_DOMAINNAME) or policy.domainname
                           or _host_domainname())

    def _stored(self, name: str) -> str | None:
        if self.store is None:
            return None
        v = self.store.lookup(UTS_KEY, name)
        return v.data if v is not None and isinstance(v.data, str) else None

    def set(self, name: str, value: str) -> None:
        """Set UTS_HOSTNAME or UTS_DOMAINNAME (the caller checked the length)."""
        if self.store is not None:
            self.store.set(UTS_KEY, name, Value.string(value))
        if name == UTS_HOSTNAME:
            self.hostname = value
        else:
            self.domainname = value

    def patch_utsname(self, raw: bytes) -> bytes:
        """The kernel's struct new_utsname with the virtual names in it."""
        out = bytearray(raw)
        for at, value in ((NODENAME_AT, self.hostname), (DOMAINNAME_AT, self.domainname)):
            field = os.fsencode(value)[:UTS_FIELD - 1]
            out[at:at + UTS_FIELD] = field.ljust(UTS_FIELD, b"\0")
        return bytes(out)

    def proc_file(self, name: str) -> bytes:
        """Content of /proc/sys/kernel/{hostname,domainname}."""
        return os.fsencode(self.hostname if name == UTS_HOSTNAME else self.domainname) + b"\n"
