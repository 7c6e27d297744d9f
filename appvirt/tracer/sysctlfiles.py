"""/proc/sys in the sandbox: writes never reach the host; reads show what was written.

An open of a sysctl for writing (`echo 1 > /proc/sys/...`, `sysctl -w`) is redirected to a
fresh, empty spool file, checked first as the host would (the sysctl exists, is a file, is
writable); what the program writes through that fd is folded into the store
(machine/sysctl/..., SysctlOverlay) at the next sync point (fs/writeback.py), an fd that wrote
nothing changes nothing. An open for reading of a sysctl with a stored value is served that
value (through MachineFiles); any other reads the host's file.

kernel.hostname and kernel.domainname are the virtual host name's (the `hostname:` section):
written there, they change it as sethostname(2) does; without the section, EPERM.
"""

from __future__ import annotations

import errno
import os
import stat as statmod
from collections.abc import Callable
from pathlib import Path

from ..errors import GuestErrno
from ..fs.writeback import WriteBacks
from ..store.errors import StoreError
from ..store.procsys import SysctlOverlay
from ..store.tree import guest_errors
from ..store.wellknown import UTS_DOMAINNAME, UTS_HOSTNAME
from ..virt.machinepolicy import HOST_NAME_MAX
from ..virt.uts import VirtualUts

UTS_FILES = {b"/proc/sys/kernel/hostname": UTS_HOSTNAME,
             b"/proc/sys/kernel/domainname": UTS_DOMAINNAME}


class SysctlFiles:
    def __init__(self, overlay: SysctlOverlay, spool: Callable[[], Path],
                 writebacks: WriteBacks, uts: VirtualUts | None = None) -> None:
        """`spool()` gives the directory for the spool files (made on first use)."""
        self.overlay = overlay
        self.writebacks = writebacks
        self.uts = uts                  # None: the host name cannot be set (EPERM)
        self._spool = spool
        self._n = 0
        # The paths with a stored value, and the store generation they were read at: most
        # reads are of sysctls never written, answered without a query.
        self._written: frozenset[bytes] = frozenset()
        self._generation: tuple[int, int] | None = None

    def content(self, path: bytes) -> bytes | None:
        """What reading sysctl `path` shows, when the app wrote it (a MachineFiles provider:
        None for every other path)."""
        if not path.startswith(b"/proc/sys/"):
            return None
        self.writebacks.sync()
        try:
            generation = self.overlay.store.generation()
            if generation != self._generation:
                self._written = self.overlay.written_paths()
                self._generation = generation
            if path not in self._written:
                return None
            content = self.overlay.read(path)
        except (GuestErrno, StoreError):
            return None
        # A value stored for a sysctl this kernel lacks does not make it exist.
        return content if content is not None and os.path.isfile(path) else None

    def open_for_write(self, path: bytes, st: os.stat_result | None, root: bool) -> bytes:
        """A new spool file for an open of `path` for writing; GuestErrno where the host
        would refuse it (`st`: the host file's lstat; `root`: the caller's fsuid is 0)."""
        if st is None:
            raise GuestErrno(errno.ENOENT, "no such sysctl")
        if statmod.S_ISDIR(st.st_mode):
            raise GuestErrno(errno.EISDIR, "a /proc/sys directory")
        if not statmod.S_ISREG(st.st_mode) or not st.st_mode & (
                statmod.S_IWUSR if root else statmod.S_IWOTH):
            raise GuestErrno(errno.EACCES, "read-only sysctl" if root else "not root")
        uts_name = UTS_FILES.get(path)
        if uts_name is not None and self.uts is None:
            raise GuestErrno(errno.EPERM, "add a hostname: section to the policy to set it",
                             rule="builtin:host-name")
        spool = self._spool()
        spool.mkdir(mode=0o700, exist_ok=True)
        self._n += 1
        host = os.fsencode(spool / str(self._n))
        os.close(os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))

        def fold(content: bytes) -> None:
            if not content:
                return                  # opened, nothing written: nothing changes
            if uts_name is not None:
                self._set_uts(uts_name, content)
            else:
                self.overlay.write(path, content)
        self.writebacks.watch(host, path, fold, lambda: _unlink(host))
        return host

    def _set_uts(self, name: str, content: bytes) -> None:
        """As the kernel's proc_dostring: up to the first newline, at most 64 bytes."""
        raw = content.split(b"\n", 1)[0].split(b"\0", 1)[0][:HOST_NAME_MAX]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise GuestErrno(errno.EINVAL, "the host name is not UTF-8") from None
        assert self.uts is not None
        with guest_errors():
            self.uts.set(name, text)

    def abandon(self, host: bytes) -> None:
        """The open of the spool file failed: forget it."""
        self.writebacks.forget(host)
        _unlink(host)


def _unlink(host: bytes) -> None:
    try:
        os.unlink(host)
    except FileNotFoundError:
        pass
