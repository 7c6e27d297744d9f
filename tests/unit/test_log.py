"""The intercept log: whole lines only, results merged, strace rendering."""

from __future__ import annotations

import json

from hypothesis import given, strategies as st

from appvirt.log.formats import strace_line
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
