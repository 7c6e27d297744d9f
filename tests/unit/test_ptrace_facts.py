"""The facts the log takes from python-ptrace, remembered between runs (log/ptrace_facts.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appvirt.log import ptrace_facts
from appvirt.log.ptrace_facts import _Facts, _stamp

pytestmark = pytest.mark.timeout(60)

OPEN_FLAGS = 0o4501        # O_WRONLY|O_CREAT|O_NOCTTY|O_NONBLOCK


def _real_text(formatter: str, value: int) -> str:
    from ptrace.syscall import posix_arg
    return getattr(posix_arg, formatter)(ptrace_facts._Arg(value))


@pytest.fixture
def facts(tmp_path, monkeypatch) -> _Facts:
    """Facts kept in tmp_path, used by the module's functions."""
    f = _Facts(str(tmp_path / "cache" / "python-ptrace.json"), _stamp())
    monkeypatch.setattr(ptrace_facts, "_facts", lambda: f)
    return f


def test_the_stamp_names_python_ptraces_files():
    stamp = _stamp()
    assert stamp is not None
    import ptrace
    assert os.path.samefile(stamp[0], os.path.dirname(ptrace.__file__))
    assert [s[0] for s in stamp[1:]] == list(ptrace_facts._SOURCES)


def test_facts_are_python_ptraces_and_saved_once_learned(facts):
    from ptrace.syscall.prototypes import SYSCALL_PROTOTYPES
    assert ptrace_facts.prototype("openat") == [tuple(a) for a in SYSCALL_PROTOTYPES["openat"][1]]
    assert ptrace_facts.prototype("no_such_call") is None
    assert ptrace_facts.text("formatOpenFlags", OPEN_FLAGS) == \
        _real_text("formatOpenFlags", OPEN_FLAGS)
    assert facts.dirty
    facts.save()
    again = _Facts(facts.path, _stamp())
    assert again.prototypes == facts.prototypes and again.texts == facts.texts
    assert again.prototypes["no_such_call"] is None and not again.dirty


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(["formatOpenFlags", "formatAccessMode", "formatMmapProt"]),
       st.integers(0, 2**64 - 1))
def test_a_remembered_text_is_the_formatters(tmp_path_factory, formatter, value):
    path = str(tmp_path_factory.mktemp("facts") / "f.json")
    first = _Facts(path, _stamp())
    first.texts[formatter] = {str(value): _real_text(formatter, value)}
    first.dirty = True
    first.save()
    assert _Facts(path, _stamp()).texts[formatter][str(value)] == \
        _real_text(formatter, value)


def _write(path: str, data) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(data if isinstance(data, str) else json.dumps(data))


@pytest.mark.parametrize("content", [
    "{not json",
    {"stamp": "other files", "prototypes": {}, "texts": {"formatOpenFlags": {"1": "LIE"}}},
    {"prototypes": {"openat": [["int"]]}, "texts": {}},            # a malformed prototype
    {"prototypes": {}, "texts": {"formatOpenFlags": {"x1": "LIE"}}},
    {"prototypes": {}, "texts": {"formatOpenFlags": {"1": 2}}},
    [],
])
def test_a_damaged_or_foreign_cache_is_ignored(facts, content):
    if isinstance(content, dict) and "stamp" not in content:
        content = {**content, "stamp": _stamp()}
    _write(facts.path, content)
    f = _Facts(facts.path, _stamp())
    assert f.prototypes == {} and f.texts == {}


def test_a_cache_of_other_files_gives_python_ptraces_texts(facts):
    stamp = _stamp()
    stamp[1][2] += 1                    # python-ptrace's version.py changed (an upgrade)
    _write(facts.path, {"stamp": stamp, "prototypes": {},
                        "texts": {"formatOpenFlags": {str(OPEN_FLAGS): "LIE"}}})
    f = _Facts(facts.path, _stamp())
    assert f.texts == {}
    assert _Facts(facts.path, stamp).texts == {"formatOpenFlags": {str(OPEN_FLAGS): "LIE"}}


def test_an_unwritable_cache_costs_nothing_but_the_import(tmp_path):
    (tmp_path / "cache").write_text("a file where the directory should be")
    f = _Facts(str(tmp_path / "cache" / "python-ptrace.json"), _stamp())
    f.prototypes["openat"] = None
    f.dirty = True
    f.save()                             # no exception
    assert sorted(os.listdir(tmp_path)) == ["cache"]


def test_texts_kept_are_bounded(facts, monkeypatch):
    monkeypatch.setattr(ptrace_facts, "TEXTS_MAX", 3)
    for v in range(10):
        assert ptrace_facts.text("formatAccessMode", v) == _real_text("formatAccessMode", v)
    assert len(facts.texts["formatAccessMode"]) == 3


def test_a_second_run_does_not_import_python_ptrace(tmp_path):
    """The point of the cache: the first process learns and saves, the next one shows the
    same records without importing python-ptrace."""
    code = textwrap.dedent(f"""
        import json, sys
        from appvirt.log.records import arg_specs
        specs = arg_specs("openat", (1,))
        flags = specs[2].symbolic({OPEN_FLAGS})
        print(json.dumps([[s.name, int(s.fmt)] for s in specs] + [flags,
                         "ptrace" in sys.modules]))
    """)
    env = {**os.environ, "APPVIRT_HOME": str(tmp_path)}
    runs = [json.loads(subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                      capture_output=True, text=True, timeout=30).stdout)
            for _ in range(2)]
    assert runs[0][-1] is True and runs[1][-1] is False
    assert runs[0][:-1] == runs[1][:-1]
    assert runs[1][-2] == _real_text("formatOpenFlags", OPEN_FLAGS)
