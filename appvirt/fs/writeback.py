"""Spool files a program writes, folded back into the store at sync points.

Writes through an fd are not intercepted (write, pwrite, ftruncate, mmap run natively on the
spool file), so the tracer folds a watched file's whole content into the store whenever it
could have changed and someone may look: before serving a registry or /proc/sys path, when a
process ends or execs, and at the end of the run. A file stays watched while any process can
still write to it; the kernel tells (a read lease is refused while a writer has it open).

What the store refuses (a well-known value of another type, a value too large) is reported and
dropped: the program's write had already succeeded.
"""

import errno
import fcntl
import os
from collections.abc import Callable
from typing import NamedTuple

from ..errors import GuestErrno

F_SETLEASE = getattr(fcntl, "F_SETLEASE", 1024)
F_RDLCK, F_UNLCK = fcntl.F_RDLCK, fcntl.F_UNLCK

Fold = Callable[[bytes], None]          # store this content; GuestErrno: refused
Settled = Callable[[], None]            # no writer is left: tidy the spool file
Report = Callable[[bytes, str], None]   # (the path the program wrote, what went wrong)


class Fingerprint(NamedTuple):
    """What changes when a file's content may have changed."""

    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> "Fingerprint":
        return cls(st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def fingerprint(path: bytes) -> Fingerprint | None:
    try:
        return Fingerprint.of(os.lstat(path))
    except OSError:
        return None


def held_for_writing(path: bytes) -> bool:
    """Whether some process has the file open for writing (or mapped writable). A read lease
    is refused (EAGAIN) exactly then; when leases cannot be taken at all, assume it is."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.fcntl(fd, F_SETLEASE, F_RDLCK)
    except OSError:
        return True
    else:
        fcntl.fcntl(fd, F_SETLEASE, F_UNLCK)
        return False
    finally:
        os.close(fd)


class Watched:
    """One spool file and how to fold it back."""

    __slots__ = ("shown_as", "fold", "settled", "seen")

    def __init__(self, shown_as: bytes, fold: Fold, settled: Settled | None,
                 seen: Fingerprint | None) -> None:
        self.shown_as = shown_as      # the path the program knows it by (for reports)
        self.fold = fold
        self.settled = settled
        self.seen = seen              # at the last fold; None: fold whatever is there


class WriteBacks:
    """The spool files programs may be writing, by host path."""

    def __init__(self, max_content: int, report: Report) -> None:
        self._files: dict[bytes, Watched] = {}
        self._max = max_content          # read one byte more: the store then refuses it
        self._report = report

    def __bool__(self) -> bool:
        return bool(self._files)

    def __contains__(self, host: bytes) -> bool:
        return host in self._files

    def watch(self, host: bytes, shown_as: bytes, fold: Fold,
              settled: Settled | None = None) -> None:
        """Watch a spool file a program opened for writing; its current content counts as
        folded (the caller stored it, or it is what the store already holds)."""
        self._files[host] = Watched(shown_as, fold, settled, fingerprint(host))

    def forget(self, host: bytes) -> None:
        self._files.pop(host, None)

    def forget_below(self, host_dir: bytes) -> None:
        prefix = host_dir.rstrip(b"/") + b"/"
        for h in [h for h in self._files if h.startswith(prefix)]:
            del self._files[h]

    def flush(self, host: bytes) -> None:
        """Fold one file now if it changed (before the tracer acts on its name)."""
        w = self._files.get(host)
        if w is not None:
            self._fold(host, w)

    def sync(self) -> None:
        """Fold every changed file; stop watching those no process can write any more."""
        for host, w in list(self._files.items()):
            writing = held_for_writing(host)
            if not self._fold(host, w):
                continue                       # gone
            if not writing:
                del self._files[host]
                if w.settled is not None:
                    try:
                        w.settled()
                    except OSError as e:
                        self._report(w.shown_as, f"cannot tidy its spool file: {e}")

    def _fold(self, host: bytes, w: Watched) -> bool:
        fp = fingerprint(host)
        if fp is None:
            self._files.pop(host, None)
            return False
        if fp == w.seen:
            return True
        try:
            with open(host, "rb") as f:
                content = f.read(self._max + 1)
        except OSError as e:
            self._report(w.shown_as, f"cannot read what the program wrote: {e.strerror}")
            w.seen = fp
            return True
        try:
            w.fold(content)
        except GuestErrno as e:
            code = errno.errorcode.get(e.errno, e.errno)
            self._report(w.shown_as, f"the store refused what the program wrote "
                                     f"({code}: {e.detail})")
        except Exception as e:  # noqa: BLE001 - runs between stops: never end the tracer
            self._report(w.shown_as, f"internal error folding it: {type(e).__name__}: {e}")
        w.seen = fp
        return True

    def close(self) -> None:
        """The end of the run: every process is gone, fold everything one last time."""
        self.sync()
        self._files.clear()
