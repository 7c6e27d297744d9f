"""The policy's processes section: exec rules, the live-process limit and /proc's view."""

from __future__ import annotations

import errno

import pytest
from hypothesis import given, strategies as st

from appvirt.core import sysnums
from appvirt.core.action import Allow, Deny, ExitResult
from appvirt.fs.resolver import Resolved
from appvirt.handlers.filemodes import Intent, check
from appvirt.syscalls.process import CLONE_THREAD, CLONE_UNTRACED
from appvirt.errors import PolicyError
from appvirt.policy import load_policy_text
from appvirt.testing import FakeContext, handle, make_stop
from appvirt.tracer import seccomp as sc
from appvirt.handlers import TABLE
from appvirt.virt.procpolicy import ProcView

RULES = """\
processes:
  exec:
    - {path: /usr/bin/**, action: deny}
    - {path: /usr/bin/git*, action: allow}
    - {path: /usr/bin/git-shell, action: deny}
"""


def test_exec_rules_later_rules_win_and_unmatched_paths_run():
    p = load_policy_text(RULES, "p.yaml").processes
    assert p.exec_decision(b"/usr/bin/curl") == (False, "processes.exec[0]")
    assert p.exec_decision(b"/usr/bin/git") == (True, "processes.exec[1]")
    assert p.exec_decision(b"/usr/bin/git-shell") == (False, "processes.exec[2]")
    assert p.exec_decision(b"/bin/sh") == (True, "processes.exec (no rule)")
    assert p.max_processes is None and p.proc is ProcView.ALL


@pytest.mark.parametrize("text, line, key", [
    ("processes:\n  exec:\n    - {path: /bin/sh, action: run}\n", 3, "processes.exec[0].action"),
    ("processes:\n  exec:\n    - {path: '/bin/[', action: deny}\n", 3, "processes.exec[0].path"),
    ("processes:\n  max: 0\n", 2, "processes.max"),
    ("processes:\n  proc: mine\n", 2, "processes.proc"),
    ("processes:\n  limit: 3\n", 2, "processes.limit"),
])
def test_bad_sections_name_their_line_and_key(text, line, key):
    with pytest.raises(PolicyError) as e:
        load_policy_text(text, "p.yaml")
    assert e.value.line == line and e.value.key == key, str(e.value)


def _exec_ctx(policy_text: str, fs) -> FakeContext:
    fs.create_file("/usr/bin/curl", contents="\x7fELF")
    fs.create_file("/usr/bin/git", contents="\x7fELF")
    fs.create_file("/usr/bin/perl", contents="\x7fELF")
    fs.create_file("/w/script", contents="#!/usr/bin/perl\nprint 1\n")
    ctx = FakeContext(load_policy_text(policy_text, "p.yaml"), cwd=b"/w").use_overlay()
    ctx.memory[0x1000] = bytes(8)
    return ctx


def test_a_denied_program_gets_eacces_with_its_rule(fs):
    ctx = _exec_ctx(RULES, fs)
    act = handle(make_stop("execve", 1, 0x1000, 0, paths={0: b"../usr/bin/curl"}), ctx)
    assert isinstance(act, Deny) and act.errno == errno.EACCES and not act.native
    assert act.note.rule == "processes.exec[0]" and act.note.path == b"/usr/bin/curl"
    assert "action: allow" in act.note.hint
    act = handle(make_stop("execve", 1, 0x1000, 0, paths={0: b"/usr/bin/git"}), ctx)
    assert not isinstance(act, Deny)


def test_a_script_is_refused_when_its_interpreter_is(fs):
    ctx = _exec_ctx("processes:\n  exec: [{path: /usr/bin/perl, action: deny}]\n", fs)
    act = handle(make_stop("execve", 1, 0x1000, 0, paths={0: b"script"}), ctx)
    assert isinstance(act, Deny) and act.errno == errno.EACCES
    assert act.note.path == b"/usr/bin/perl"


def test_fexecve_asks_the_rules_about_the_fds_file(fs):
    ctx = _exec_ctx(RULES, fs)
    ctx.fds[5] = b"/usr/bin/curl"
    act = handle(make_stop("execveat", 5, 0, 0x1000, 0, 0x1000, paths={1: b""}), ctx)
    assert isinstance(act, Deny) and act.errno == errno.EACCES
    ctx.fds[5] = b"/usr/bin/git"
    assert isinstance(handle(make_stop("execveat", 5, 0, 0x1000, 0, 0x1000, paths={1: b""}),
                             ctx), Allow)


def test_new_processes_beyond_the_limit_get_eagain_and_failed_ones_free_their_place():
    ctx = FakeContext(load_policy_text("processes: {max: 2}\n", "p.yaml"))
    first = handle(make_stop("fork"), ctx)
    assert isinstance(first, Allow) and first.on_exit is not None
    # One member plus one fork in flight: the limit is reached until that fork ends.
    for name, args in (("vfork", ()), ("clone", (0x11,)), ("fork", ())):
        act = handle(make_stop(name, *args, tid=1001), ctx)
        assert isinstance(act, Deny) and act.errno == errno.EAGAIN, name
        assert act.note.rule == "processes.max"
    assert first.on_exit(make_stop("fork"), -errno.ENOMEM) == ExitResult()
    assert isinstance(handle(make_stop("clone", 0x11), ctx), Allow)


def test_escaping_clone_flags_stay_refused_whatever_the_limit():
    for text in ("{}", "processes: {max: 50}\n"):
        ctx = FakeContext(load_policy_text(text, "p.yaml"))
        act = handle(make_stop("clone", CLONE_UNTRACED | 0x11), ctx)
        assert isinstance(act, Deny) and act.errno == errno.EPERM


@given(flags=st.integers(0, 2**32 - 1))
def test_the_filter_stops_clone_for_processes_only_when_they_are_counted(flags):
    counted = load_policy_text("processes: {max: 9}\n", "p.yaml")
    free = load_policy_text("{}", "p.yaml")
    escape = bool(flags & (CLONE_UNTRACED | 0x7E020000))
    for policy, stops in ((free, escape), (counted, escape or not flags & CLONE_THREAD)):
        verdict = sc.run_filter(_filter(policy), sysnums.nr("clone"), (flags,) + (0,) * 5)
        assert (verdict & 0xFFFF0000 == sc.RET_TRACE) is stops
    for name in ("fork", "vfork"):
        assert sc.run_filter(_filter(free), sysnums.nr(name)) == sc.RET_ALLOW
        assert sc.run_filter(_filter(counted), sysnums.nr(name)) & 0xFFFF0000 == sc.RET_TRACE


_FILTERS: dict[int, list] = {}


def _filter(policy):
    key = policy.processes.max_processes or 0
    if key not in _FILTERS:
        _FILTERS[key] = sc.build_filter(TABLE, TABLE.traced_for(policy))
    return _FILTERS[key]


def test_own_proc_hides_outsiders_entirely_and_all_keeps_their_public_entries():
    own = load_policy_text("processes: {proc: own}\n", "p.yaml")
    every = load_policy_text("{}", "p.yaml")
    member = {1000}.__contains__
    for path in (b"/proc/1", b"/proc/1/comm", b"/proc/1/task/1/stat"):
        deny, note = check(own, Resolved(path, None), Intent.READ, member)
        assert deny is not None and deny.errno == errno.ENOENT and note.rule == "processes.proc"
    assert check(every, Resolved(b"/proc/1/comm", None), Intent.READ, member)[0] is None
    assert check(every, Resolved(b"/proc/1/environ", None), Intent.READ, member)[0].errno \
        == errno.EACCES
    for path in (b"/proc/1000/comm", b"/proc/self", b"/proc/cpuinfo", b"/proc"):
        assert check(own, Resolved(path, None), Intent.READ, member)[0] is None, path


def test_own_proc_needs_the_listing_calls():
    policy = load_policy_text("files: {default: passthrough}\nprocesses: {proc: own}\n", "p")
    assert "getdents64" in TABLE.traced_for(policy)
    plain = load_policy_text("files: {default: passthrough}\n", "p")
    assert "getdents64" not in TABLE.traced_for(plain)


def test_the_process_tree_follows_spawns_execs_and_exits_in_log_order():
    from appvirt.log.proctree import label, process_forest
    recs = [
        {"kind": "exec", "pid": 10, "program": "/bin/sh", "argv": ["sh", "-c", "x"]},
        {"kind": "spawn", "pid": 10, "tid": 10, "child": 11, "how": "vfork",
         "program": "/bin/sh"},
        {"kind": "spawn", "pid": 10, "tid": 10, "child": 12, "how": "thread"},
        {"kind": "exec", "pid": 13, "program": "/bin/tr", "argv": ["tr"]},   # before its spawn
        {"kind": "spawn", "pid": 11, "tid": 11, "child": 13, "how": "fork",
         "program": "/bin/sh"},
        {"kind": "exit", "pid": 13, "signal": "SIGPIPE"},
        {"kind": "exit", "pid": 11, "status": 0},
        {"kind": "spawn", "pid": 10, "tid": 10, "child": 11, "how": "fork",   # pid reused
         "program": "/bin/sh"},
        {"kind": "exit", "pid": 10, "status": 3},
    ]
    (root,) = process_forest(recs)
    assert [(c.pid, c.how, c.end) for c in root.children] == [
        (11, "vfork", "status 0"), (11, "fork", None)]
    (tr,) = root.children[0].children
    assert tr.execs == [("/bin/tr", ["tr"])] and tr.end == "signal SIGPIPE"
    assert label(root) == "10 sh -c x  -> status 3"
    assert label(root.children[1]) == "11 /bin/sh (no exec)  [fork]  -> no exit record"


def test_syscalls_says_when_each_call_stops_under_a_policy(tmp_path):
    import json
    import subprocess
    import sys
    f = tmp_path / "p.yaml"
    f.write_text("files: {default: passthrough}\nprocesses: {max: 3}\n")
    r = subprocess.run([sys.executable, "-m", "appvirt", "syscalls", "--policy", str(f),
                        "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    when = {row["name"]: row["traced"] for row in json.loads(r.stdout)}
    assert when["fork"] == "always" and when["clone"] == "when arguments match"
    assert when["getdents64"] == when["clock_gettime"] == "never (this policy)"
