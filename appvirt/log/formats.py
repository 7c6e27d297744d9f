"""Render records: strace-style lines and one-line summaries."""

from __future__ import annotations

import json
import os
from typing import Any


def _arg(v: Any) -> str:
    if isinstance(v, str) and not v.startswith(("0x", "O_", "AT_", "NULL", "0o", "F_", "R_",
                                                 "W_", "X_", "PROT_")):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def strace_line(rec: dict[str, Any]) -> str:
    """One record as strace would print it, with appvirt's decision in a trailing comment."""
    pid = rec.get("tid", rec.get("pid", "?"))
    kind = rec.get("kind")
    if kind == "exec":
        return f"{pid:<7} execve({json.dumps(rec.get('program'))}, " \
               f"{json.dumps(rec.get('argv', []))}) = 0 +++ exec +++"
    if kind == "spawn":
        return f"{pid:<7} --- {rec.get('how')} {rec.get('child')} ---"
    if kind == "exit":
        how = (f"exited with {rec['status']}" if "status" in rec
               else f"killed by {rec.get('signal')}")
        return f"{pid:<7} +++ {how} +++"
    if kind == "power":
        return f"{'-':<7} +++ machine {rec.get('event')}: {rec.get('detail', '')} +++"
    if kind == "store":
        return f"{'-':<7} --- store: {rec.get('path')}: {rec.get('detail', '')} ---"
    if kind != "syscall":
        return f"{pid:<7} --- {kind} ---"
    args = ", ".join(_arg(v) for v in (rec.get("args") or {}).values())
    result = rec.get("result")
    if result is None:
        res = "?"
    elif isinstance(result, int) and result < 0 and rec.get("errno"):
        res = f"-1 {rec['errno']} ({os.strerror(-result)})"
    else:
        res = str(result)
    tail = rec.get("decision", "")
    if rec.get("rule"):
        tail += f" {rec['rule']}"
    if rec.get("host_path"):
        tail += f" -> {rec['host_path']}"
    if rec.get("address"):
        tail += f" {rec['address']}"
        if rec.get("redirected_to"):
            tail += f" -> {rec['redirected_to']}"
    return f"{pid:<7} {rec.get('syscall')}({args}) = {res} <{tail}>"
