"""Whether appvirt's code on disk changed since the warm server imported it.

The stamp (name, size and mtime of every code file) is what decides; walking the package for
it at every run took a millisecond of each warm start. inotify watches on the package's
directories say when a file there may have changed: only then is the stamp walked again.
Without inotify (or its watches), every run walks it, as before.
"""

from __future__ import annotations

import ctypes
import os

CODE_SUFFIXES = (".py", ".so", ".yaml", ".json")
SKIPPED_DIRS = ("__pycache__",)     # bytecode: written by the interpreter, not code

IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
# anything that can change a file's size or mtime, or a name in the directory, or it
IN_CHANGES = (0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800)
_libc = ctypes.CDLL(None, use_errno=True)


def code_stamp(package: str) -> tuple:
    """Name, size and mtime of every file of the package: a changed one makes the imported
    modules stale."""
    stamp = []
    for root, dirs, files in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for name in sorted(files):
            if name.endswith(CODE_SUFFIXES):
                st = os.stat(os.path.join(root, name))
                stamp.append((root, name, st.st_size, st.st_mtime_ns))
    return tuple(stamp)


class CodeWatch:
    """The package's stamp when watched, and whether it still holds."""

    def __init__(self, package: str) -> None:
        self.package = package
        self.fd = _watch(package)       # first: a change while the stamp is taken is seen
        self.stamp = code_stamp(package)
        self.stale = False

    def changed(self) -> bool:
        """Whether the code differs from the stamp, walked again when inotify said something
        happened there, or without watches; once it differed, it has changed for good."""
        if self.stale:
            return True
        if self.fd >= 0:
            if not self._events():
                return False
            if _add_watches(self.fd, self.package) < 0:     # a directory made meanwhile
                self.close()
        self.stale = code_stamp(self.package) != self.stamp
        return self.stale

    def _events(self) -> bool:
        seen = False
        while True:
            try:
                seen = bool(os.read(self.fd, 65536)) or seen
            except BlockingIOError:
                return seen
            except OSError:             # (a queue overflow reads fine: it is an event too)
                return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _watch(package: str) -> int:
    """An inotify fd watching every directory of the package; -1 when that cannot be had."""
    fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    if fd >= 0 and _add_watches(fd, package) < 0:
        os.close(fd)
        return -1
    return fd


def _add_watches(fd: int, package: str) -> int:
    """Watch every directory of the package (again: one already watched keeps its watch);
    -1 when one cannot be (too few left: max_user_watches)."""
    for root, dirs, _files in os.walk(package):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS]
        if _libc.inotify_add_watch(fd, os.fsencode(root), IN_CHANGES) < 0:
            return -1
    return 0
