"""The process tree of a run, rebuilt from the log's spawn, exec and exit records."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class ProcessNode:
    """One process: how it was created, every program it ran, how it ended."""

    pid: int
    how: str                                   # start | fork | vfork | clone
    program: str = ""                          # what it ran when created (its parent's)
    execs: list[tuple[str, list[str]]] = field(default_factory=list)   # (program, argv)
    end: str | None = None                     # "status N" | "signal NAME" | None: no record
    children: list["ProcessNode"] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "how": self.how, "program": self.program,
                "execs": [{"program": p, "argv": a} for p, a in self.execs],
                "end": self.end, "children": [c.as_dict() for c in self.children]}


def process_forest(records: Iterable[dict[str, Any]]) -> list[ProcessNode]:
    """Trees of processes in log order. A pid used again after its exit starts a new node;
    a child whose first record came before its parent's spawn record is moved under it."""
    roots: list[ProcessNode] = []
    live: dict[int, ProcessNode] = {}

    def node_of(pid: int, program: str = "") -> ProcessNode:
        node = live.get(pid)
        if node is None:
            node = live[pid] = ProcessNode(pid, "start", program)
            roots.append(node)
        return node

    for r in records:
        kind, pid = r.get("kind"), r.get("pid")
        if not isinstance(pid, int):
            continue
        if kind == "spawn" and r.get("how") != "thread" and isinstance(r.get("child"), int):
            parent = node_of(pid, r.get("program", ""))
            child = live.get(r["child"])
            early = next((i for i, n in enumerate(roots) if n is child), None)
            if child is not None and child is not parent and early is not None:
                del roots[early]               # its records came before its parent's spawn
            else:
                child = live[r["child"]] = ProcessNode(r["child"], "")
            child.how, child.program = r.get("how", "fork"), r.get("program", "")
            parent.children.append(child)
        elif kind == "exec":
            node_of(pid).execs.append((r.get("program", ""), list(r.get("argv", []))))
        elif kind == "exit":
            node = live.pop(pid, None)
            if node is not None:
                node.end = f"status {r['status']}" if "status" in r \
                    else f"signal {r.get('signal', '?')}"
    return roots


def label(node: ProcessNode) -> str:
    """One line: pid, what it ran (argv of its last exec, else the program it forked from),
    how it was made, how it ended."""
    if node.execs:
        program, argv = node.execs[-1]
        ran = " ".join(argv) or program
        if len(node.execs) > 1:
            ran += f"  (after {len(node.execs) - 1} earlier exec)"
    else:
        ran = f"{node.program} (no exec)" if node.program else "(no exec)"
    how = "" if node.how == "start" else f"  [{node.how}]"
    return f"{node.pid} {ran}{how}  -> {node.end or 'no exit record'}"
