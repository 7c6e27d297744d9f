"""Append records to the intercept log.

Each record is one `write(2)` of one complete line on an O_APPEND descriptor, issued before the
traced call is resumed: a killed tracer loses nothing it decided. A line left incomplete by a
crash mid-write is cut off when the log is next opened, so every line of a log parses.
"""

from __future__ import annotations

import errno
import json
import os
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


class LogWriter:
    """An append-only JSONL sink; `write` never buffers."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            rfd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            try:
                _trim_partial_tail(rfd)
            finally:
                os.close(rfd)
        except OSError as e:
            raise StateDirError(f"cannot open the intercept log {path}: {e.strerror}") from e
        self.failed: str | None = None

    def write(self, record: dict[str, Any]) -> None:
        """Hand one record to the OS. A full disk is remembered and reported, not raised."""
        line = encode(record) + b"\n"
        try:
            n = os.write(self.fd, line)
            if n != len(line):
                # A short append (disk full mid-line): cut it off so the log stays parseable.
                os.ftruncate(self.fd, os.fstat(self.fd).st_size - n)
                raise OSError(errno.ENOSPC, "short write")
        except OSError as e:
            self.failed = self.failed or f"intercept log {self.path}: {e.strerror or e}"

    def close(self) -> None:
        os.close(self.fd)
