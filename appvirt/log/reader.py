"""Read an intercept log back: whole records, results merged in, a torn last line skipped."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import LogFormatError


@dataclass
class LogRead:
    records: list[dict[str, Any]] = field(default_factory=list)
    bad_lines: int = 0            # lines that did not parse (a torn tail after a crash)


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        rec = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    return rec if isinstance(rec, dict) else None


def _merge(records: list[dict[str, Any]], rec: dict[str, Any],
           by_seq: dict[int, dict[str, Any]]) -> None:
    if rec.get("kind") == "result":
        call = by_seq.get(rec.get("call", -1))
        if call is not None:
            call["result"] = rec.get("result")
            if "errno" in rec:
                call["errno"] = rec["errno"]
        return
    if rec.get("kind") == "syscall" and "seq" in rec:
        by_seq[rec["seq"]] = rec
    records.append(rec)


def read_log(path: str) -> LogRead:
    """Read every record of a log file, merging each call's result into the call."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise LogFormatError(f"no intercept log at {path}") from None
    except OSError as e:
        raise LogFormatError(f"cannot read {path}: {e.strerror}") from None
    out = LogRead()
    by_seq: dict[int, dict[str, Any]] = {}
    for line in data.splitlines():
        if not line.strip():
            continue
        rec = _parse(line)
        if rec is None:
            out.bad_lines += 1
            continue
        _merge(out.records, rec, by_seq)
    return out


def follow_log(path: str, poll: float = 0.2) -> Iterator[dict[str, Any]]:
    """Yield records as they are appended (like `tail -f`); results arrive as their own items."""
    with open(path, "rb") as f:
        buf = b""
        while True:
            chunk = f.read()
            if not chunk:
                time.sleep(poll)
                if os.stat(path).st_size < f.tell():    # truncated or replaced
                    f.seek(0)
                continue
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                rec = _parse(line) if line.strip() else None
                if rec is not None:
                    yield rec
