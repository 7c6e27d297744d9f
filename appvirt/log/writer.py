"""Append records to the intercept log.

Each record is one complete line, handed over before the traced call is resumed: a killed
tracer loses nothing it decided. With the compiled module, a record goes into a ring in
memory that a writer process shares with the tracer and appends to the log in batches
(`_fastpath_ring.c`: a `write(2)` per record cost tar 3% of its run); the writer
outlives the tracer, writes what the ring holds, and exits. Without it (or with
APPVIRT_LOG_RING=0, or a log that is not a regular file), each record is one `write(2)` on an
O_APPEND descriptor. A line left incomplete by a crash mid-write is cut off when the log is
next opened, so every line of a log parses.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
from typing import Any

from ..errors import StateDirError

# One encoder for every record: json.dumps with options builds a new one per call.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode


def encode(value: Any) -> bytes:
    """A value's JSON text as the log's lines hold it (the compiled loop builds its records
    from such pieces)."""
    return _encode(value).encode("utf-8", "surrogateescape")


def _trim_partial_tail(fd: int) -> None:
    size = os.fstat(fd).st_size
    if size == 0:
        return
    pos = size
    while pos > 0:
        chunk = os.pread(fd, min(4096, pos), max(0, pos - 4096))
        start = max(0, pos - 4096)
        if pos == size and chunk.endswith(b"\n"):
            return
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            os.ftruncate(fd, start + nl + 1)
            return
        pos = start
    os.ftruncate(fd, 0)


def _share(fd: int) -> bool:
    """A shared lock on the log for as long as this run (its writer included) writes it;
    whether it was alone (no other run, or a killed run's writer, writing it), so that a torn
    tail can be cut without cutting another's record in flight."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fcntl.flock(fd, fcntl.LOCK_SH)
        return False
    except OSError:
        return True                     # no locks there (ENOLCK): trimmed, as ever
    fcntl.flock(fd, fcntl.LOCK_SH)
    return True


class LogWriter:
    """An append-only JSONL sink; `write` hands each record over at once."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            if _share(self.fd):
                rfd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
                try:
                    _trim_partial_tail(rfd)
                finally:
                    os.close(rfd)
        except OSError as e:
            raise StateDirError(f"cannot open the intercept log {path}: {e.strerror}") from e
        self.failed: str | None = None
        self.ring = _ring(self.fd)

    def write(self, record: dict[str, Any]) -> None:
        """Hand one record over. A full disk is remembered and reported, not raised."""
        line = encode(record) + b"\n"
        try:
            if self.ring is not None:
                self.ring.put(line)
                return
            n = os.write(self.fd, line)
            if n != len(line):
                # A short append (disk full mid-line): cut it off so the log stays parseable.
                os.ftruncate(self.fd, os.fstat(self.fd).st_size - n)
                raise OSError(errno.ENOSPC, "short write")
        except OSError as e:
            self.failed = self.failed or f"intercept log {self.path}: {e.strerror or e}"

    def close(self) -> None:
        """Every record in the log (the writer has written the ring and is gone), then the
        fd closed."""
        if self.ring is not None:
            error = self.ring.close()
            self.ring = None
            if error and self.failed is None:
                self.failed = f"intercept log {self.path}: {os.strerror(error)}"
        os.close(self.fd)


def _ring(fd: int) -> Any:
    """The log's ring and its writer for a regular file, when the compiled module has them;
    None: each record is a write(2)."""
    try:
        from ..tracer import _fastpath
    except ImportError:
        return None
    if os.environ.get("APPVIRT_LOG_RING", "1") == "0" or not stat.S_ISREG(os.fstat(fd).st_mode):
        return None
    try:
        return _fastpath.LogRing(fd)
    except OSError:
        return None                     # no writer process: write(2) it is
