"""Machine files the program reads through appvirt: /proc/sys/kernel/hostname, /proc/modules,
/proc/PID/status under a virtual identity.

An open of one of them for reading is redirected to a fresh file in a private spool directory
of the run, written with what the program must see at that moment (the virtual host name,
the host's modules plus the app's virtual ones); the spool file is unlinked as soon as the
open returns, so the program's fd is the only thing that keeps it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..fs.machinetree import MachineTree

Provider = Callable[[], bytes]
PathProvider = Callable[[bytes], "bytes | None"]     # for a family of paths (/proc/PID/...)


class MachineFiles:
    def __init__(self, app_root: Path) -> None:
        self.providers: dict[bytes, Provider] = {}
        self.path_providers: list[PathProvider] = []
        self._root = app_root
        self._dir: Path | None = None
        self._n = 0
        self._closing: list[Callable[[], None]] = []

    def provide(self, path: bytes, provider: Provider) -> None:
        self.providers[path] = provider

    def provide_paths(self, provider: PathProvider) -> None:
        """provider(path) answers the content of the paths it knows, None for others."""
        self.path_providers.append(provider)

    def content(self, path: bytes) -> bytes | None:
        provider = self.providers.get(path)
        if provider is not None:
            return provider()
        for paths in self.path_providers:
            got = paths(path)
            if got is not None:
                return got
        return None

    def tree(self, prefixes: tuple[bytes, ...]) -> MachineTree:
        """A MachineTree in the spool directory, for entries added under `prefixes`."""
        return MachineTree(os.fsencode(self.spool_dir() / "tree"), prefixes)

    def before_close(self, fn: Callable[[], None]) -> None:
        """Run fn at the end of the run, before the spool directory goes."""
        self._closing.append(fn)

    def spool_path(self) -> Path:
        """Where the run's private spool directory is (in the app's state directory, which
        the program cannot see); spool_dir() creates it."""
        return self._root / f"spool-{os.getpid()}"

    def spool_dir(self) -> Path:
        if self._dir is None:
            self._sweep()
            self._dir = self.spool_path()
            self._dir.mkdir(mode=0o755, exist_ok=True)
        return self._dir

    def _sweep(self) -> None:
        """Remove spool directories of runs that died without cleaning up."""
        for d in self._root.glob("spool-*"):
            pid = d.name[len("spool-"):]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                import shutil     # here: it loads bz2 and lzma, a cost at every start
                shutil.rmtree(d, ignore_errors=True)

    def serve(self, path: bytes) -> bytes | None:
        """Host path of a file with the content of machine file `path`; None if not ours."""
        content = self.content(path)
        if content is None:
            return None
        self._n += 1
        host = self.spool_dir() / str(self._n)
        fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        with open(fd, "wb") as f:
            f.write(content)
        return os.fsencode(host)

    @staticmethod
    def release(host: bytes) -> None:
        try:
            os.unlink(host)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        closing, self._closing = self._closing, []
        for fn in closing:
            fn()
        if self._dir is not None:
            import shutil
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
