"""The intercept log: whole lines only, results merged, strace rendering."""

from __future__ import annotations

import json
import os
import resource
import signal
import time
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from appvirt.core.stop import Stop
from appvirt.handlers import TABLE
from appvirt.log.formats import strace_line
from appvirt.log.records import decode_args
from appvirt.log.reader import read_log
from appvirt.log.writer import LogWriter

try:
    from appvirt.tracer import _fastpath
except ImportError:
    _fastpath = None


def test_each_record_is_one_complete_line(tmp_path):
    log = LogWriter(str(tmp_path / "l.jsonl"))
    log.write({"seq": 1, "kind": "syscall", "path": "/caf\u00e9\nnewline"})
    log.write({"seq": 2, "kind": "exit", "pid": 3, "status": 0})
    log.close()
    lines = (tmp_path / "l.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 3
    assert json.loads(lines[0])["path"] == "/caf\u00e9\nnewline"


@given(st.binary(max_size=300))
def test_a_torn_tail_is_cut_when_the_log_is_reopened(tmp_path_factory, junk):
    path = tmp_path_factory.mktemp("log") / "l.jsonl"
    good = b'{"seq":1,"kind":"exit","pid":1,"status":0}\n'
    path.write_bytes(good + junk.replace(b"\n", b""))
    LogWriter(str(path)).close()
    assert path.read_bytes() == good


def test_reader_merges_results_and_skips_a_torn_line(tmp_path):
    path = tmp_path / "l.jsonl"
    path.write_text(
        '{"seq":1,"kind":"syscall","syscall":"openat","decision":"allowed","pid":5,"tid":5}\n'
        '{"seq":2,"kind":"result","call":1,"pid":5,"tid":5,"result":-2,"errno":"ENOENT"}\n'
        '{"seq":3,"kind":"syscall","sysc')
    got = read_log(str(path))
    assert got.bad_lines == 1
    assert got.records == [{"seq": 1, "kind": "syscall", "syscall": "openat",
                            "decision": "allowed", "pid": 5, "tid": 5, "result": -2,
                            "errno": "ENOENT"}]


def test_strace_rendering():
    rec = {"kind": "syscall", "pid": 7, "tid": 8, "syscall": "openat",
           "args": {"dirfd": "AT_FDCWD", "filename": "/etc/x", "flags": "O_WRONLY",
                    "mode": "0o644"},
           "decision": "denied", "rule": "files.rules[0]", "result": -30, "errno": "EROFS"}
    assert strace_line(rec) == ('8       openat(AT_FDCWD, "/etc/x", O_WRONLY, 0o644) = -1 EROFS '
                                '(Read-only file system) <denied files.rules[0]>')
    assert strace_line({"kind": "exit", "pid": 9, "signal": "SIGKILL"}) == \
        "9       +++ killed by SIGKILL +++"
    assert strace_line({"kind": "store", "path": "/run/appvirt/registry/a/b",
                        "detail": "refused"}) == \
        "-       --- store: /run/appvirt/registry/a/b: refused ---"


def test_a_full_disk_is_reported_not_raised(tmp_path, monkeypatch):
    monkeypatch.setenv("APPVIRT_LOG_RING", "0")         # each record a write(2)
    log = LogWriter(str(tmp_path / "l.jsonl"))
    assert log.ring is None
    os.close(log.fd)
    log.fd = os.open("/dev/full", os.O_WRONLY)
    log.write({"seq": 1})
    assert log.failed and "No space left" in log.failed


needs_ring = pytest.mark.skipif(_fastpath is None, reason="the compiled module is not built")
_RECORD = {"seq": 0, "kind": "syscall", "path": "/x" * 60}


def _lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), "a torn record"
    return [json.loads(x) for x in data.splitlines()]


def _child(body) -> int:
    """Run body() in a forked child (a tracer's stand-in); its wait status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            body()
        finally:
            os._exit(0)
    return os.waitpid(pid, 0)[1]


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except FileNotFoundError:
        return True


def _eventually(check, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "the writer did not write the ring out"
        time.sleep(0.01)


@needs_ring
def test_the_ring_writes_every_record_in_order_long_ones_included(tmp_path):
    path = tmp_path / "l.jsonl"
    log = LogWriter(str(path))
    assert log.ring is not None and log.ring.writer > 0
    sizes = [10, 700_000, 5, 300, 2_000_000, 1]       # two longer than half the ring
    for seq in range(1, 30_001):                       # 4 MB: the ring (1 MB) wraps
        log.write({**_RECORD, "seq": seq, "pad": "z" * sizes[seq % len(sizes)]
                   if seq % 997 == 0 else ""})
    log.close()
    assert [r["seq"] for r in _lines(path)] == list(range(1, 30_001))
    assert log.failed is None


@needs_ring
@pytest.mark.parametrize("kill", ["process", "group"])
def test_a_killed_tracers_records_are_all_written(tmp_path, kill):
    """Its writer outlives it (and its process group) and writes what the ring holds."""
    path = tmp_path / "l.jsonl"
    writer = tmp_path / "writer"

    def tracer() -> None:
        os.setsid()                  # a group of its own, as a run's tracer may have
        log = LogWriter(str(path))
        writer.write_text(str(log.ring.writer))
        for seq in range(1, 5001):
            log.write({**_RECORD, "seq": seq})
        if kill == "group":
            os.killpg(0, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
    status = _child(tracer)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    _eventually(lambda: path.exists() and path.read_bytes().count(b"\n") == 5000)
    assert [r["seq"] for r in _lines(path)] == list(range(1, 5001))
    _eventually(lambda: _gone(int(writer.read_text())))          # and then it exits
    # A run opening the log meanwhile or after cuts nothing (no torn tail, whole records).
    LogWriter(str(path)).close()
    assert len(_lines(path)) == 5000


@needs_ring
@pytest.mark.parametrize("limit", [50_000, "wrap"])
def test_a_write_the_writer_cannot_make_is_reported_and_tears_no_record(tmp_path, limit):
    """Out of room (RLIMIT_FSIZE, which the writer shares): the log ends at its last whole
    record, a record split where the ring wraps included ("wrap": records of 1,000 bytes, the
    room ending 300 bytes after the ring's size, inside record 1049)."""
    path = tmp_path / "l.jsonl"
    report = tmp_path / "report"
    room = _fastpath.LOG_RING_SIZE + 300 if limit == "wrap" else limit
    one = len(json.dumps({**_RECORD, "seq": 1000, "pad": ""}, separators=(",", ":"))) + 1

    def tracer() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (room, room))
        log = LogWriter(str(path))
        for seq in range(1000, 3000):                  # 2,000 records of 1,000 bytes
            log.write({**_RECORD, "seq": seq, "pad": "p" * (1000 - one)})
        log.close()
        report.write_text(log.failed or "")
    assert _child(tracer) == 0
    failed = report.read_text()        # a short write is reported as a full disk, as write(2)'s
    assert failed.startswith("intercept log") and ("No space left" in failed
                                                    or "File too large" in failed)
    got = [r["seq"] for r in _lines(path)]
    assert got == list(range(1000, 1000 + room // 1000))


def _reference_args(stop) -> dict:
    """How arguments are shown, spelled out once per stop (the rules decode_args compiles
    per syscall): python-ptrace's names and flag formatters, AT_FDCWD, octal creation modes,
    pointers in hex, C ints signed."""
    from ptrace.syscall.posix_arg import formatAccessMode, formatMmapProt, formatOpenFlags
    from ptrace.syscall.prototypes import SYSCALL_PROTOTYPES

    class Arg:
        def __init__(self, value):
            self.value = value
    fmts = {("flags", "open"): formatOpenFlags, ("flags", "openat"): formatOpenFlags,
            ("mode", "access"): formatAccessMode, ("mode", "faccessat"): formatAccessMode,
            ("prot", "mmap"): formatMmapProt, ("prot", "mprotect"): formatMmapProt}
    ints = {"int", "unsigned int", "long", "unsigned long", "size_t", "pid_t", "uid_t",
            "gid_t", "umode_t", "loff_t", "off_t", "u32", "clockid_t", "key_serial_t"}
    proto = SYSCALL_PROTOTYPES.get(stop.name)
    names = list(proto[1]) if proto else [("long", f"arg{i}") for i in range(6)]
    out = {}
    for i, (ctype, name) in enumerate(names[:6]):
        v = stop.args[i]
        if i in stop.entry.path_args:
            p = stop.path(i)
            out[name] = None if p is None else os.fsdecode(p)
        elif (name, stop.name) in fmts:
            out[name] = fmts[(name, stop.name)](Arg(v))
        elif name in ("dfd", "dirfd", "olddfd", "newdfd", "fd") \
                and v & 0xFFFFFFFF == 0xFFFFFF9C:
            out[name] = "AT_FDCWD"
        elif name == "mode" and stop.name in ("open", "openat", "creat", "mkdir", "mkdirat",
                                              "chmod", "fchmodat", "mknod", "mknodat"):
            out[name] = oct(v & 0o7777)
        elif "*" in ctype:
            out[name] = hex(v) if v else "NULL"
        elif ctype in ints:
            w = v & 0xFFFFFFFF if "int" in ctype and "long" not in ctype else v
            out[name] = w - (1 << 32) if ctype == "int" and w & 0x80000000 else w
        else:
            out[name] = hex(v)
    return out


_WORD = st.one_of(st.sampled_from([0, 1, 0xFFFFFF9C, 0xFFFFFFFFFFFFFF9C, 0x80000000,
                                   0o100644, 0x241, 0xFFFFFFFFFFFFFFFF]),
                  st.integers(0, 2**64 - 1))


@given(st.sampled_from(TABLE.entries), st.lists(_WORD, min_size=6, max_size=6),
       st.lists(st.one_of(st.none(), st.binary(max_size=20)), min_size=6, max_size=6))
def test_arguments_are_shown_as_the_rules_say(entry, args, paths):
    stop = Stop(1, 1, entry, tuple(args), tuple(paths[:len(entry.path_args)]))
    assert decode_args(stop) == _reference_args(stop)


def test_the_summary_gives_the_tracers_time_per_system_call(tmp_path):
    from click.testing import CliRunner

    from appvirt.cli_log import log_cmd
    path = tmp_path / "l.jsonl"
    rows = [("openat", 10.0), ("openat", 30.0), ("openat", 11.0), ("fchown", 4.5),
            ("unlinkat", 100.0)]
    lines = [{"seq": i, "kind": "syscall", "syscall": name, "class": "file",
              "decision": "redirected", "pid": 7, "tid": 7, "tracer_us": us}
             for i, (name, us) in enumerate(rows, 1)]
    lines.append({"seq": 9, "kind": "exit", "pid": 7, "status": 0})    # no tracer_us: skipped
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    got = CliRunner().invoke(log_cmd, [str(path), "--summary", "--format", "json"])
    assert got.exit_code == 0, got.output
    times = json.loads(got.output)["tracer_time"]
    assert list(times) == ["unlinkat", "openat", "fchown"]     # the dearest first
    assert times["openat"] == {"calls": 3, "total_us": 51.0, "median_us": 11.0}
    assert times["fchown"] == {"calls": 1, "total_us": 4.5, "median_us": 4.5}
    shown = CliRunner().invoke(log_cmd, [str(path), "--summary"], terminal_width=120)
    assert shown.exit_code == 0 and "openat" in shown.output and "17.0" in shown.output


@needs_ring
def test_a_fork_of_the_tracer_neither_waits_for_nor_writes_the_rings_records(tmp_path):
    """The launcher's fork holds a copy of the ring; closing that copy must not write what
    it holds again or wait for a writer that is not its child."""
    path = tmp_path / "l.jsonl"
    log = LogWriter(str(path))
    for seq in range(1, 101):
        log.write({**_RECORD, "seq": seq})
    status = _child(lambda: os._exit(0 if log.ring.close() == 0 else 1))
    assert status == 0
    log.close()
    assert [r["seq"] for r in _lines(path)] == list(range(1, 101))


@needs_ring
def test_records_after_the_writer_died_are_written_by_the_tracer_in_order(tmp_path):
    path = tmp_path / "l.jsonl"
    log = LogWriter(str(path))
    for seq in range(1, 101):
        log.write({**_RECORD, "seq": seq})
    os.kill(log.ring.writer, signal.SIGKILL)
    for seq in range(101, 20_001):                     # 3 MB: the ring fills, with no writer
        log.write({**_RECORD, "seq": seq})
    log.close()
    assert [r["seq"] for r in _lines(path)] == list(range(1, 20_001))
    assert log.failed is None
