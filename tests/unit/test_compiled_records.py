"""The compiled loop writes the intercept log's records of the calls it makes itself: the very
lines the Python loop writes for them (Tracer.log_call, the same argument formats), byte for
byte, for every syscall in the table and any arguments, paths, program names and rules."""

from __future__ import annotations

import json
import os
import time
from types import SimpleNamespace

import pytest
from hypothesis import given, settings, strategies as st

from appvirt.core import sysnums
from appvirt.core.action import Decision, Emulate, Note, Rewrite
from appvirt.core.stop import Stop
from appvirt.handlers import TABLE
from appvirt.log.writer import encode
from appvirt.tracer import fastpath
from appvirt.tracer.loop import Tracer

_fastpath = pytest.importorskip("appvirt.tracer._fastpath")

_WORD = st.one_of(st.sampled_from([0, 1, 0xFFFFFF9C, 0xFFFFFFFFFFFFFF9C, 0x80000000,
                                   0o100644, 0x241, 0o4777, 0xFFFFFFFFFFFFFFFF]),
                  st.integers(0, 2**64 - 1))
# Paths as programs pass them: any bytes but NUL (not UTF-8, quotes, control characters ...).
_PATH = st.binary(max_size=40).map(lambda b: b.replace(b"\0", b"")) | st.sampled_from(
    [b"/tmp/caf\xc3\xa9", b"/a\"b\\c\n\t\x01\x7f", b"\xff\xfe/\xed\xa0\x80"])


class _Capture:
    def __init__(self) -> None:
        self.records: list[dict] = []

    def write(self, rec: dict) -> None:
        self.records.append(rec)


def _python_line(entry, seq, pid, tid, program, args, paths, rule, path, host, result,
                 when, micros) -> bytes:
    """The line Tracer.log_call writes, with the time and tracer_us the engine wrote."""
    log = _Capture()
    tracer = SimpleNamespace(log=log, seq=seq - 1, tasks=SimpleNamespace(program={pid: program}))
    note = Note(rule=rule, path=path, host_path=host)
    action = Rewrite((), note=note) if result is None else \
        Emulate(result, note=note, decision=Decision.REDIRECTED)
    stop = Stop(tid, pid, entry, tuple(args), tuple(paths[i] for i in entry.path_args))
    Tracer.log_call(tracer, SimpleNamespace(pid=pid, tid=tid), entry.name, entry, stop,
                    action, None, time.perf_counter())
    (rec,) = log.records
    rec["time"], rec["tracer_us"] = when, micros
    return encode(rec) + b"\n"


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(TABLE.entries), st.lists(_WORD, min_size=6, max_size=6),
       st.lists(st.none() | _PATH, min_size=6, max_size=6), st.binary(max_size=20),
       st.sampled_from(["", "files.default", "files.rules[3]", 'odd "rule" \u00e9']),
       st.none() | _PATH, st.none() | _PATH, st.none() | st.integers(-4095, 2**31),
       st.integers(1, 2**22), st.integers(1, 2**22), st.integers(1, 2**40))
def test_a_record_is_the_python_loops_line(entry, args, paths, program, rule, path, host,
                                           result, pid, tid, seq):
    name = os.fsdecode(program)
    spec = fastpath.call_spec(entry)
    line = _fastpath.format_call(spec, seq, pid, tid, name, tuple(args), tuple(paths),
                                 encode(rule) if rule else None, path, host, result)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    got = json.loads(line.decode("utf-8", "surrogateescape"))      # as the reader reads it
    assert isinstance(got["time"], float) and abs(got["time"] - time.time()) < 60
    assert line == _python_line(entry, seq, pid, tid, name, args, paths, rule, path, host,
                                result, got["time"], got["tracer_us"])


def test_the_time_is_shown_as_python_shows_a_rounded_float():
    spec = fastpath.record_spec(TABLE, fastpath.LOGGED, sysnums.nr("unlink"))
    for _ in range(2000):
        got = _fastpath.format_call(spec, 1, 1, 1, "", (0,) * 6, (b"/x",), None, None, None,
                                    None)
        text = got.split(b'"time":')[1].split(b",")[0].decode()
        assert text == repr(round(float(text), 6)) and "." in text


def test_the_engine_logs_its_own_calls_only():
    for names in (fastpath.LOGGED, fastpath.LOGGED + fastpath.READS_LOGGED):
        logged = [e.name for e in TABLE.entries
                  if fastpath.record_spec(TABLE, names, e.nr) is not None]
        assert sorted(logged) == sorted(names)
