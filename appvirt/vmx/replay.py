"""`appvirt vmexit replay LOG`: an intercept log seen from one level down.

Reads the JSON Lines intercept log (`load_calls`), maps each intercepted system call to an
operation class, runs that class's guest-kernel sequence once under the VMCS, and multiplies:
exits per reason, their count and estimated cycles (cost model, spec §8), side by side with
the time appvirt's tracer spent per call in that run (`tracer_us`).

Mapping (documented in docs/vmexit.md): by syscall name, refined by the log's `class` field
and, for user creation, by the program name or a path under /etc.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from appvirt.errors import LogFormatError

from .cost import CostModel
from .opclasses import OperationClass, run_sequence
from .reasons import ExitReason
from .vmcs import Vmcs

_REQUIRED = {"seq": int, "pid": int, "tid": int, "syscall": str, "tracer_us": (int, float)}


@dataclass(frozen=True, slots=True)
class InterceptedCall:
    """One `"kind": "syscall"` line of an intercept log."""

    seq: int
    time: float
    pid: int
    tid: int
    program: str
    syscall: str
    cls: str
    decision: str
    tracer_us: float
    result: int | None = None
    errno: str | None = None
    path: str | None = None
    flags: str | int | None = None


def load_calls(path: str | Path) -> list[InterceptedCall]:
    """Read the intercepted system calls of a JSON Lines log.

    "spawn" and "exec" events count as process creation (an allowed execve call record is
    left out: its exec event stands for it); other kinds ("exit", "result", ...) are ignored.
    A truncated last line (the tracer was killed mid-write) is skipped.

    Raises:
        LogFormatError: unreadable file, or a malformed line other than the last.
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise LogFormatError(f"{p}: cannot read: {e.strerror or e}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    calls: list[InterceptedCall] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break                      # truncated last line
            raise LogFormatError(f"{p}:{number}: not a JSON object") from None
        if not isinstance(record, dict):
            raise LogFormatError(f"{p}:{number}: expected a JSON object")
        kind = record.get("kind")
        if kind in ("spawn", "exec") and isinstance(record.get("pid"), int):
            # Process creation is logged as events (fork/clone are not intercepted calls;
            # a successful execve is its exec event): count each as one call, costless to
            # the tracer beyond the stop it already took.
            name = "execve" if kind == "exec" else (
                "clone" if record.get("how") in ("thread", "clone") else str(record.get("how")))
            calls.append(InterceptedCall(
                int(record.get("seq", 0)), float(record.get("time", 0.0)), record["pid"],
                int(record.get("tid", record["pid"])), str(record.get("program", "")), name,
                "process", "allowed", 0.0))
            continue
        if kind != "syscall" or (record.get("syscall") in ("execve", "execveat")
                                 and record.get("decision") == "allowed"):
            continue
        for key, kind in _REQUIRED.items():
            if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
                raise LogFormatError(f"{p}:{number}: syscall line lacks a valid '{key}'")
        paths = record.get("path") or record.get("paths")
        args = record.get("args") if isinstance(record.get("args"), dict) else {}
        if isinstance(paths, list):
            paths = next((x for x in paths if isinstance(x, str)), None)
        if not paths:          # appvirt's writer puts paths among the decoded arguments
            paths = next((v for v in args.values() if isinstance(v, str) and v.startswith("/")),
                         None)
        flags = args.get("flags")
        calls.append(InterceptedCall(
            record["seq"], float(record.get("time", 0.0)), record["pid"], record["tid"],
            str(record.get("program", "")), record["syscall"], str(record.get("class", "")),
            str(record.get("decision", "")), float(record["tracer_us"]),
            record.get("result") if isinstance(record.get("result"), int) else None,
            record.get("errno") if isinstance(record.get("errno"), str) else None,
            paths if isinstance(paths, str) else None,
            flags if isinstance(flags, (str, int)) and not isinstance(flags, bool) else None))
    return calls


_BY_NAME: dict[str, OperationClass] = {}
for _names, _op in (
    (("open", "openat", "openat2", "creat", "mkdir", "mkdirat", "mknod", "mknodat", "link",
      "linkat", "symlink", "symlinkat", "rename", "renameat", "renameat2", "truncate",
      "ftruncate"), OperationClass.FILE_OPEN_CREATE),
    (("unlink", "unlinkat", "rmdir"), OperationClass.FILE_DELETE),
    (("getdents", "getdents64"), OperationClass.FILE_LIST),
    (("chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat",
      "stat", "lstat", "fstat", "newfstatat", "statx", "access", "faccessat", "faccessat2",
      "utime", "utimes", "utimensat", "futimesat", "readlink", "readlinkat", "setxattr",
      "lsetxattr", "fsetxattr", "getxattr", "lgetxattr", "fgetxattr", "listxattr",
      "removexattr", "statfs", "fstatfs"), OperationClass.FILE_ATTRIBUTES),
    (("clone", "clone3", "fork", "vfork", "execve", "execveat"), OperationClass.PROCESS_CREATE),
    (("kill", "tkill", "tgkill", "exit", "exit_group", "pidfd_send_signal"),
     OperationClass.PROCESS_TERMINATE),
    (("clock_gettime", "gettimeofday", "time", "clock_getres"), OperationClass.TIME_QUERY),
    (("settimeofday", "clock_settime", "adjtimex", "clock_adjtime", "stime"),
     OperationClass.TIME_SET),
    (("connect",), OperationClass.NETWORK_CONNECT),
    (("reboot",), OperationClass.REBOOT),
    (("init_module", "finit_module"), OperationClass.DRIVER_LOAD),
):
    for _name in _names:
        _BY_NAME[_name] = _op

USER_TOOLS = frozenset({"useradd", "adduser", "newusers", "groupadd", "addgroup", "usermod"})
USER_FILES = ("/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow")
_WRITES = frozenset({"open", "openat", "openat2", "creat", "rename", "renameat", "renameat2",
                     "link", "linkat", "write", "pwrite64", "writev", "fsync", "truncate",
                     "ftruncate"})


_OPENS = frozenset({"open", "openat", "openat2"})
_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")


def _writes(call: InterceptedCall) -> bool:
    """Whether the call modifies a file (an open only with a write/create flag)."""
    if call.syscall not in _WRITES:
        return False
    if call.syscall not in _OPENS:
        return True
    if isinstance(call.flags, int):
        return bool(call.flags & 0o3 or call.flags & 0o1000 or call.flags & 0o100)
    if isinstance(call.flags, str):
        return any(f in call.flags for f in _WRITE_FLAGS)
    return False


def classify(call: InterceptedCall) -> OperationClass | None:
    """The operation class of one call, or None when it has no modelled hardware path."""
    program = call.program.rsplit("/", 1)[-1]
    if _writes(call) and (program in USER_TOOLS or (
            call.path is not None and call.path.startswith(USER_FILES))):
        return OperationClass.USER_CREATE
    op = _BY_NAME.get(call.syscall)
    if op is None:
        return None
    # The tracer's class is authoritative where it disagrees (e.g. a "time" class utime).
    if call.cls == "time" and op is OperationClass.FILE_ATTRIBUTES:
        return None
    return op


@dataclass(frozen=True, slots=True)
class ClassHardware:
    """What one operation of a class costs in hardware terms, per the sequence."""

    exits: tuple[tuple[ExitReason, int], ...]
    cycles: int
    stopped: str | None


@dataclass
class ClassSummary:
    """All the calls of one class in the log, with the hardware view."""

    op: OperationClass | None
    calls: int = 0
    tracer_us: float = 0.0
    syscalls: Counter[str] = field(default_factory=Counter)
    hardware: ClassHardware | None = None

    @property
    def tracer_us_per_call(self) -> float:
        return self.tracer_us / self.calls if self.calls else 0.0


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """The whole replay: per class, per reason, totals."""

    vmcs_name: str
    classes: tuple[ClassSummary, ...]
    reason_totals: tuple[tuple[ExitReason, int, int], ...]   # reason, exits, cycles
    total_calls: int
    total_tracer_us: float
    total_exits: int
    total_cycles: int
    cost: CostModel


def replay(calls: Iterable[InterceptedCall], vmcs: Vmcs,
           cost: CostModel | None = None) -> ReplayReport:
    """Aggregate calls by class and attach the hardware view of each class."""
    cost = cost or CostModel()
    summaries: dict[OperationClass | None, ClassSummary] = {}
    for call in calls:
        op = classify(call)
        s = summaries.setdefault(op, ClassSummary(op))
        s.calls += 1
        s.tracer_us += call.tracer_us
        s.syscalls[call.syscall] += 1
    reason_exits: Counter[ExitReason] = Counter()
    reason_cycles: Counter[ExitReason] = Counter()
    for op, s in summaries.items():
        if op is None:
            continue
        result = run_sequence(op, vmcs)
        counts: Counter[ExitReason] = Counter()
        cycles = 0
        for h in result.exits:
            c = cost.cycles(h.handler.cost)
            counts[h.exit.reason] += 1
            cycles += c
            reason_exits[h.exit.reason] += s.calls
            reason_cycles[h.exit.reason] += c * s.calls
        s.hardware = ClassHardware(tuple(sorted(counts.items())), cycles, result.stopped)
    ordered = sorted(summaries.values(), key=lambda s: (s.op is None, -s.calls,
                                                        s.op.value if s.op else ""))
    totals = tuple((r, reason_exits[r], reason_cycles[r]) for r in sorted(reason_exits))
    return ReplayReport(vmcs.name, tuple(ordered), totals,
                        sum(s.calls for s in ordered), sum(s.tracer_us for s in ordered),
                        sum(reason_exits.values()), sum(reason_cycles.values()), cost)
