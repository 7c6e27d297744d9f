"""Presentation of simulator results: rich tables for people, plain dicts for `--json`."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from .opclasses import SEQUENCES, OperationClass
from .replay import ReplayReport
from .simulator import HandledExit, Row, RowKind, RunResult


def _qual_text(h: HandledExit) -> str:
    fields = h.exit.qualification_fields()
    shown = ", ".join(f"{k}={v:#x}" if isinstance(v, int) and not isinstance(v, bool) else
                      f"{k}={v}" for k, v in fields.items() if v not in (False, 0) or k in (
                          "cr", "port", "size", "dr"))
    return f"{h.exit.qualification:#x}" + (f" ({shown})" if shown else "")


def _exit_json(h: HandledExit) -> dict[str, Any]:
    out = h.exit.to_dict()
    out["vmm"] = h.handler.to_dict()
    out["estimated_cycles"] = h.cycles
    if h.trace:
        out["trace"] = list(h.trace)
    return out


def row_json(row: Row) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": row.kind.value, "executed": row.executed,
                           "exits": [_exit_json(h) for h in row.exits],
                           "exit": bool(row.exits), "decided_by": row.decision,
                           "delivered_to_guest": list(row.delivered), "notes": list(row.notes)}
    if row.insn is not None:
        out.update(address=row.insn.address, bytes=row.insn.raw.hex(" "),
                   instruction=row.insn.att, length=row.insn.length)
        if row.insn.listing_text:
            out["listing_text"] = row.insn.listing_text
    if row.possible is not None:
        out["exit_possible"] = row.possible.possible
        out["possible_exits"] = list(row.possible.own) + list(row.possible.memory)
        out["possible_at_any_instruction"] = list(row.possible.always)
    if row.accesses:
        out["memory_accesses"] = [a.describe() for a in row.accesses]
        out["memory_written"] = any(a.write for a in row.accesses)
    if row.lookups:
        out["tlb_lookups"] = [lk.describe() for lk in row.lookups]
    if row.entry is not None:
        out["entry"] = {"ok": row.entry.ok, "vm_instruction_error": row.entry.vm_instruction_error,
                        "problems": list(row.entry.problems), "steps": list(row.entry.steps)}
    return out


def explain_json(result: RunResult) -> dict[str, Any]:
    return {"vmcs": result.vmcs_name, "stopped": result.stopped,
            "rows": [row_json(r) for r in result.rows], "tlb_after": list(result.tlb_after),
            "final_state": result.final_state}


def explain_tables(console: Console, result: RunResult, *, trace: bool, memory: bool) -> None:
    table = Table(title=f"VM exits under VMCS '{result.vmcs_name}'", show_lines=True)
    for name, kw in (("address", {"no_wrap": True}), ("bytes", {}), ("instruction", {}),
                     ("exit", {}), ("reason", {}), ("qualification", {}), ("len", {}),
                     ("deciding condition", {"ratio": 3}), ("VMM", {"ratio": 2}),
                     ("possible", {})):
        table.add_column(name, **kw)
    for row in result.rows:
        if row.kind is RowKind.ENTRY:
            if not row.executed or row.exits:
                table.add_row("", "", "VM entry", "FAIL", "; ".join(
                    f"{h.exit.reason.value} {h.exit.reason.name}" for h in row.exits) or "VMfailValid",
                    "", "", row.decision, "", "")
            continue
        addr = f"{row.insn.address:#x}" if row.insn else ""
        raw = row.insn.raw.hex(" ") if row.insn else ""
        text = row.insn.att if row.insn else "(boundary)"
        if row.kind is RowKind.BOUNDARY:
            text = "(events before this instruction)" if row.insn else "(events at the end)"
            addr, raw = "", ""
        possible = ("yes" if row.possible.possible else "no") if row.possible else ""
        if not row.exits:
            extra = ("; " + "; ".join(row.delivered)) if row.delivered else ""
            table.add_row(addr, raw, text, "no" if row.executed else "-", "", "", "",
                          row.decision + extra, "", possible)
            continue
        for i, h in enumerate(row.exits):
            length = "undef." if h.exit.instruction_length is None else str(h.exit.instruction_length)
            vmm = f"{h.handler.handler}: {h.handler.action} [{h.handler.outcome.value}]"
            if h.handler.injection:
                vmm += f"; {h.handler.injection.description}"
            table.add_row(addr if i == 0 else "", raw if i == 0 else "", text if i == 0 else "",
                          "YES", f"{int(h.exit.reason)} {h.exit.reason.name}", _qual_text(h),
                          length, h.exit.decided_by, vmm, possible if i == 0 else "")
    console.print(table)
    if result.stopped:
        console.print(f"[bold]VM stopped:[/bold] {result.stopped}")
    if trace or memory:
        for row in result.rows:
            label = row.insn.att if row.insn else row.kind.value
            lines: list[str] = []
            if memory:
                lines += [f"  memory: {a.describe()}" for a in row.accesses]
                lines += [f"  TLB lookup: {lk.describe()}" for lk in row.lookups]
            if trace:
                if row.entry is not None:
                    lines += [f"  {s}" for s in row.entry.steps]
                for h in row.exits:
                    lines += [f"  {s}" for s in h.trace]
                lines += [f"  note: {n}" for n in row.notes]
            if lines:
                console.print(f"[bold]{label}[/bold]")
                for line in lines:
                    console.print(line, highlight=False, markup=False)
        if memory:
            console.print("[bold]TLB after the run[/bold]")
            for entry in result.tlb_after or ("(empty)",):
                console.print(f"  {entry}", highlight=False, markup=False)


def replay_json(report: ReplayReport) -> dict[str, Any]:
    cost = report.cost
    return {
        "vmcs": report.vmcs_name,
        "classes": [{
            "class": s.op.value if s.op else None,
            "calls": s.calls, "syscalls": dict(s.syscalls),
            "tracer_us_total": round(s.tracer_us, 3),
            "tracer_us_per_call": round(s.tracer_us_per_call, 3),
            "exits_per_call": {r.name: n for r, n in s.hardware.exits} if s.hardware else None,
            "cycles_per_call": s.hardware.cycles if s.hardware else None,
            "hardware_us_per_call": round(cost.microseconds(s.hardware.cycles), 3)
            if s.hardware else None,
            "cycles_total": s.hardware.cycles * s.calls if s.hardware else None,
        } for s in report.classes],
        "exits_by_reason": [{"reason": int(r), "name": r.name, "exits": n, "cycles": c}
                            for r, n, c in report.reason_totals],
        "totals": {"calls": report.total_calls, "tracer_us": round(report.total_tracer_us, 3),
                   "exits": report.total_exits, "cycles": report.total_cycles,
                   "hardware_us": round(cost.microseconds(report.total_cycles), 3)},
        "cost_model": {"ghz": cost.ghz, "figures": [
            {"what": what, "cycles": f.cycles, "measured": f.measured, "source": f.source}
            for what, f in cost.citations()]},
    }


def replay_tables(console: Console, report: ReplayReport) -> None:
    cost = report.cost
    table = Table(title=f"Intercepted calls seen as VM exits under VMCS '{report.vmcs_name}'")
    for col in ("operation class", "calls", "appvirt µs/call", "exits per call",
                "est. cycles/call", "est. µs/call", "est. cycles total"):
        table.add_column(col, justify="right" if col != "operation class" and col != "exits per call" else "left")
    for s in report.classes:
        if s.hardware is None:
            table.add_row("(unmapped: " + ", ".join(sorted(s.syscalls)) + ")", str(s.calls),
                          f"{s.tracer_us_per_call:.1f}", "-", "-", "-", "-")
            continue
        exits = ", ".join(f"{n}x {r.value} {r.name}" for r, n in s.hardware.exits) or "none"
        table.add_row(s.op.value if s.op else "", str(s.calls), f"{s.tracer_us_per_call:.1f}",
                      exits, f"{s.hardware.cycles:,}",
                      f"{cost.microseconds(s.hardware.cycles):.2f}",
                      f"{s.hardware.cycles * s.calls:,}")
    console.print(table)
    reasons = Table(title="Exits by reason (whole log)")
    for col in ("reason", "exits", "est. cycles"):
        reasons.add_column(col)
    for r, n, c in report.reason_totals:
        reasons.add_row(f"{int(r)} {r.name}", f"{n:,}", f"{c:,}")
    console.print(reasons)
    console.print(f"Totals: {report.total_calls} intercepted calls, appvirt spent "
                  f"{report.total_tracer_us:,.1f} µs; hardware view: {report.total_exits:,} exits, "
                  f"~{report.total_cycles:,} cycles (~{cost.microseconds(report.total_cycles):,.1f} µs "
                  f"at {cost.ghz} GHz).", highlight=False)
    console.print("Cost figures (cycles per exit round trip):", highlight=False)
    for what, f in cost.citations():
        console.print(f"  {what}: {f.cycles:,} ({'measured' if f.measured else 'estimate'}) - "
                      f"{f.source}", highlight=False, markup=False)


def classes_json(results: dict[OperationClass, RunResult] | None) -> list[dict[str, Any]]:
    out = []
    for op, seq in SEQUENCES.items():
        insns, events = seq.program()
        item: dict[str, Any] = {
            "class": op.value, "summary": seq.summary,
            "steps": [{"address": i.address, "bytes": i.raw.hex(" "), "instruction": i.att,
                       "why": s.why} for i, s in zip(insns, [st for st in seq.steps if st.event is None])],
            "events": [{"before_step": e.before, "type": e.kind.value, "vector": e.vector}
                       for e in events]}
        if results is not None:
            item["exits"] = [{"reason": int(h.exit.reason), "name": h.exit.reason.name,
                              "qualification": h.exit.qualification,
                              "handler": h.handler.handler, "cycles": h.cycles}
                             for h in results[op].exits]
        out.append(item)
    return out


def classes_tables(console: Console, results: dict[OperationClass, RunResult], vmcs_name: str) -> None:
    for item in classes_json(results):
        table = Table(title=f"{item['class']}: {item['summary']}", title_justify="left")
        for col in ("step", "bytes", "instruction", "why"):
            table.add_column(col)
        for n, step in enumerate(item["steps"]):
            for ev in item["events"]:
                if ev["before_step"] == n:
                    table.add_row("", "", f"(event: {ev['type']} vector {ev['vector']:#x})", "")
            table.add_row(str(n), step["bytes"], step["instruction"], step["why"])
        console.print(table)
        exits = ", ".join(f"{e['reason']} {e['name']}" for e in item["exits"]) or "none"
        console.print(f"  exits under '{vmcs_name}': {exits}\n", highlight=False)
