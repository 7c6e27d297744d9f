"""`appvirt log`: read an intercept log as a table, JSON or strace-style lines."""

from __future__ import annotations

import fnmatch
import json
import os
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from .log.formats import strace_line
from .log.proctree import ProcessNode, label, process_forest
from .log.reader import follow_log, read_log
from .state import APP_NAME_RE, app_dir

DECISIONS = ("allowed", "redirected", "emulated", "denied", "killed")
CLASSES = ("file", "process", "time", "network", "system", "identity")


def log_path_of(target: str | None) -> str:
    """A log file path from an app name or a file path (default: the `default` app)."""
    if target and (os.sep in target or Path(target).is_file()):
        return target
    name = target or "default"
    if not APP_NAME_RE.match(name):
        raise click.BadParameter(f"{name!r} is neither a log file nor an app name")
    return str(app_dir(name).default_log)


def _keep(rec: dict[str, Any], f: dict[str, Any]) -> bool:
    if f["cls"] and rec.get("class") not in f["cls"]:
        return False
    if f["pid"] and rec.get("pid") not in f["pid"] and rec.get("tid") not in f["pid"]:
        return False
    if f["decision"] and rec.get("decision") not in f["decision"]:
        return False
    if f["syscall"] and rec.get("syscall") not in f["syscall"]:
        return False
    if f["path"] and not fnmatch.fnmatchcase(str(rec.get("path", "")), f["path"]):
        return False
    if (f["cls"] or f["decision"] or f["syscall"] or f["path"]) and rec.get("kind") != "syscall":
        return False
    return True


def _table(records: list[dict[str, Any]]) -> Table:
    t = Table(show_lines=False)
    for col in ("seq", "pid", "tid", "program", "call", "class", "decision", "path / detail",
                "result"):
        t.add_column(col, overflow="fold")
    for r in records:
        kind = r.get("kind")
        if kind == "syscall":
            what = r.get("path") or r.get("detail") or ""
            if r.get("host_path"):
                what += f" -> {r['host_path']}"
            res = r.get("errno") or ("" if r.get("result") is None else str(r["result"]))
            t.add_row(str(r.get("seq", "")), str(r.get("pid", "")), str(r.get("tid", "")),
                      os.path.basename(r.get("program", "")), r.get("syscall", ""),
                      r.get("class", ""), r.get("decision", ""), what, res)
        else:
            detail = " ".join(r.get("argv", [])) if kind == "exec" else (
                f"child {r.get('child')}" if kind == "spawn" else
                f"status {r['status']}" if "status" in r else f"signal {r.get('signal')}")
            t.add_row(str(r.get("seq", "")), str(r.get("pid", "")), str(r.get("tid", "")),
                      os.path.basename(r.get("program", "")), kind or "", "process",
                      "", detail, "")
    return t


def _tracer_time(records: list[dict[str, Any]]) -> tuple[Table, dict[str, Any]]:
    """The tracer's time per system call (each record's tracer_us: from the stop's report to
    the record), as `strace -c` gives the program's: where a slow run's interception goes."""
    spent: defaultdict[str, list[float]] = defaultdict(list)
    for r in records:
        us = r.get("tracer_us")
        if r.get("kind") == "syscall" and isinstance(us, (int, float)):
            spent[str(r.get("syscall", "?"))].append(float(us))
    rows = sorted(spent.items(), key=lambda kv: (-sum(kv[1]), kv[0]))
    t = Table(title="the tracer's time by system call (logged calls)")
    for col in ("syscall", "calls", "total ms", "µs per call", "median µs"):
        t.add_column(col, justify="left" if col == "syscall" else "right")
    data: dict[str, Any] = {}
    all_us = 0.0
    for name, times in rows:
        total, median = sum(times), statistics.median(times)
        all_us += total
        data[name] = {"calls": len(times), "total_us": round(total, 1),
                      "median_us": round(median, 1)}
        t.add_row(name, str(len(times)), f"{total / 1e3:.1f}", f"{total / len(times):.1f}",
                  f"{median:.1f}")
    if rows:
        calls = sum(d["calls"] for d in data.values())
        t.add_row("all", str(calls), f"{all_us / 1e3:.1f}", f"{all_us / calls:.1f}", "",
                  style="bold")
    return t, data


def _summary(records: list[dict[str, Any]]) -> tuple[Table, dict[str, Any]]:
    counts: Counter[tuple[str, str]] = Counter()
    events: Counter[str] = Counter()
    for r in records:
        if r.get("kind") == "syscall":
            counts[(r.get("class", "?"), r.get("decision", "?"))] += 1
        else:
            events[r.get("kind", "?")] += 1
    classes = sorted({c for c, _ in counts})
    t = Table(title="intercepted calls by class and decision")
    t.add_column("class")
    for d in DECISIONS:
        t.add_column(d, justify="right")
    t.add_column("total", justify="right")
    data: dict[str, Any] = {"calls": {}, "events": dict(events)}
    for c in classes:
        row = [counts[(c, d)] for d in DECISIONS]
        data["calls"][c] = {d: n for d, n in zip(DECISIONS, row) if n}
        t.add_row(c, *[str(n or "") for n in row], str(sum(row)))
    t.add_row("all", *[str(sum(counts[(c, d)] for c in classes) or "") for d in DECISIONS],
              str(sum(counts.values())), style="bold")
    return t, data


def _print_tree(out: Console, records: list[dict[str, Any]], fmt: str) -> None:
    forest = process_forest(records)
    if fmt == "json":
        click.echo(json.dumps([n.as_dict() for n in forest], indent=2, ensure_ascii=False))
        return
    if fmt == "strace":
        def walk(node: ProcessNode, depth: int) -> None:
            sys.stdout.write("  " * depth + label(node) + "\n")
            for c in node.children:
                walk(c, depth + 1)
        for root in forest:
            walk(root, 0)
        return
    for root in forest:
        top = Tree(Text(label(root)))
        stack = [(root, top)]
        while stack:
            node, branch = stack.pop()
            for c in node.children:
                stack.append((c, branch.add(Text(label(c)))))
        out.print(top)


@click.command("log")
@click.argument("target", required=False)
@click.option("--class", "cls", multiple=True, type=click.Choice(CLASSES),
              help="Only calls of this operation class (repeatable).")
@click.option("--pid", multiple=True, type=int, help="Only this process or thread (repeatable).")
@click.option("--decision", multiple=True, type=click.Choice(DECISIONS),
              help="Only calls with this decision (repeatable).")
@click.option("--syscall", multiple=True, help="Only this system call (repeatable).")
@click.option("--path", "path_glob", help="Only calls whose path matches this glob.")
@click.option("--summary", is_flag=True,
              help="Counts per class and decision, and the tracer's time per system call.")
@click.option("--tree", is_flag=True,
              help="The process tree: every process, what it ran and how it ended.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing records as they arrive.")
@click.option("--format", "fmt", type=click.Choice(("table", "json", "strace")),
              default="table", show_default=True)
def log_cmd(target: str | None, cls: tuple[str, ...], pid: tuple[int, ...],
            decision: tuple[str, ...], syscall: tuple[str, ...], path_glob: str | None,
            summary: bool, tree: bool, follow: bool, fmt: str) -> None:
    """Show the intercept log of an app (TARGET: app name or log file; default app: default)."""
    path = log_path_of(target)
    filters = {"cls": set(cls), "pid": set(pid), "decision": set(decision),
               "syscall": set(syscall), "path": path_glob}
    out = Console(soft_wrap=fmt != "table")
    if follow:
        try:
            for rec in follow_log(path):
                if rec.get("kind") != "result" and _keep(rec, filters):
                    click.echo(json.dumps(rec, ensure_ascii=False) if fmt == "json"
                               else strace_line(rec))
        except KeyboardInterrupt:
            return
        return
    got = read_log(path)
    records = [r for r in got.records if _keep(r, filters)]
    if got.bad_lines:
        click.echo(f"appvirt: {got.bad_lines} unreadable line(s) skipped in {path}", err=True)
    if tree:
        _print_tree(out, [r for r in got.records if not pid or _keep(r, filters)], fmt)
        return
    if summary:
        table, data = _summary(records)
        times, data["tracer_time"] = _tracer_time(records)
        if fmt == "json":
            click.echo(json.dumps(data, indent=2))
        else:
            out.print(table)
            out.print(times)
        return
    if fmt == "json":
        for r in records:
            sys.stdout.write(json.dumps(r, ensure_ascii=False) + "\n")
    elif fmt == "strace":
        for r in records:
            sys.stdout.write(strace_line(r) + "\n")
    else:
        out.print(_table(records))
