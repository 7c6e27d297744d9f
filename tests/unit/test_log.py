"""The intercept log: whole lines only, results merged, strace rendering."""

from __future__ import annotations

import json
import os

from hypothesis import given, strategies as st

from appvirt.core.stop import Stop
from appvirt.handlers import TABLE
from appvirt.log.formats import strace_line
from appvirt.log.records import decode_args
from appvirt.log.reader import read_log
from appvirt.log.writer import LogWriter


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


def test_a_full_disk_is_reported_not_raised(tmp_path):
    log = LogWriter(str(tmp_path / "l.jsonl"))
    import os
    os.close(log.fd)
    log.fd = os.open("/dev/full", os.O_WRONLY)
    log.write({"seq": 1})
    assert log.failed and "No space left" in log.failed


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
