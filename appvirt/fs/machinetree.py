"""Directories appvirt adds to the program's view of kernel interfaces.

A virtual kernel module has a /sys/module/NAME directory (initstate, refcnt, coresize,
holders/, parameters/) that lsmod and rmmod read. The tracer keeps those entries as a real,
private tree (under the run's spool directory) and the program's view shows it, read-only,
on top of the host: `ls /sys/module` lists the module, `cat .../initstate` reads "live".
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping


class MachineTree:
    def __init__(self, root: bytes, prefixes: Iterable[bytes]) -> None:
        self.root = root.rstrip(b"/")
        # Directories of the host under which the tree may add entries (never the host's own
        # entries: the tree only adds).
        self.prefixes = tuple(p.rstrip(b"/") for p in prefixes)
        os.makedirs(self.root, mode=0o755, exist_ok=True)

    def covers(self, guest: bytes) -> bool:
        """Whether the tree may add something at guest or below it."""
        return any(guest == p or guest.startswith(p + b"/") for p in self.prefixes)

    def _under(self, guest: bytes) -> bool:
        return any(guest.startswith(p + b"/") for p in self.prefixes)

    def host(self, guest: bytes) -> bytes | None:
        """The tree's host path of a guest path it holds, else None."""
        if not self._under(guest):
            return None
        h = self.root + guest
        return h if os.path.lexists(h) else None

    def to_guest(self, host: bytes) -> bytes | None:
        if host.startswith(self.root + b"/"):
            return host[len(self.root):]
        return None

    def added(self, guest_dir: bytes) -> list[bytes]:
        """Names the tree adds to a host directory (or holds in one of its own)."""
        if guest_dir not in self.prefixes and not self._under(guest_dir):
            return []
        try:
            return sorted(os.listdir(self.root + guest_dir))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def replace(self, guest_dir: bytes, entries: Mapping[bytes, bytes | None]) -> None:
        """Make guest_dir hold exactly `entries` (relative path -> file content, None for a
        directory); written into a fresh directory, then swapped in."""
        assert self._under(guest_dir)
        final = self.root + guest_dir
        tmp = final + b".new"
        import shutil     # here: it loads bz2 and lzma, a cost at every start
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp, mode=0o755)
        for rel in sorted(entries):
            content = entries[rel]
            target = os.path.join(tmp, rel)
            os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
            if content is None:
                os.makedirs(target, mode=0o755, exist_ok=True)
            else:
                with open(target, "wb") as f:
                    f.write(content)
                os.chmod(target, 0o444)
        self.remove(guest_dir)
        os.rename(tmp, final)

    def remove(self, guest_dir: bytes) -> None:
        assert self._under(guest_dir)
        import shutil
        shutil.rmtree(self.root + guest_dir, ignore_errors=True)
