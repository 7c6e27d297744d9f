"""The one table: every syscall classified, entries consistent, the filter derived from it."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

import pytest

from appvirt.core import sysnums
from appvirt.core.table import NEVER_PROCEED, UNTRACED, Support
from appvirt.handlers import TABLE
from appvirt.tracer import seccomp as sc


def test_every_known_syscall_is_traced_or_deliberately_untraced():
    assert TABLE.unclassified() == []
    assert not set(TABLE.by_name) & UNTRACED


def test_untraced_names_are_real_syscalls():
    assert UNTRACED <= set(sysnums.NR_BY_NAME)


def test_syscall_numbers_agree_with_python_ptrace():
    """sysnums writes the table out (python-ptrace's costs start-up time); it must say what
    python-ptrace says wherever python-ptrace knows a native number."""
    from ptrace.syscall.linux.x86_64 import SYSCALL_NAMES
    renamed = {283: ("timerfd", "timerfd_create")}
    for nr, name in SYSCALL_NAMES.items():
        if nr >= 512:                                   # the x32 ABI's own entries
            assert nr not in sysnums.NAME_BY_NR
            continue
        if nr in renamed and name == renamed[nr][0]:
            name = renamed[nr][1]
        assert sysnums.NAME_BY_NR[nr] == name, nr
    assert len(sysnums.NR_BY_NAME) == len(sysnums.NAME_BY_NR)   # no name twice
    assert sysnums.nr("file_setattr") == sysnums.MAX_NR == 469


def test_never_proceed_calls_are_refused_or_emulated_by_their_handlers():
    """Fail closed twice: the tracer converts any Allow of these into EPERM, and their
    handlers never ask for one in the first place, whatever the policy."""
    from appvirt.core.action import Allow, Rewrite
    from appvirt.errors import GuestErrno
    from appvirt.policy import load_policy_text
    from appvirt.testing import FakeContext, make_stop
    from appvirt.virt.clock import StoredClock, VirtualClock, parse_clock_spec
    assert NEVER_PROCEED <= set(TABLE.by_name)
    for text in ("{}", "time: '+1d'\nnetwork: {preset: none}\n"):
        ctx = FakeContext(load_policy_text(text, "p.yaml"))
        ctx.clock = VirtualClock(parse_clock_spec("+1d"), StoredClock())
        ctx.memory[0x1000] = bytes(256)
        for name in NEVER_PROCEED:
            stop = make_stop(name, 0, 0x1000, 0x1000, 0, 0, 0)
            try:
                action = stop.entry.handler(stop, ctx)
            except GuestErrno:
                continue
            assert not isinstance(action, (Allow, Rewrite)), (name, action)


def test_entries_that_let_the_kernel_run_declare_their_exit_stop(fs):
    """A handler that rewrites a call needs its exit stop (to restore the registers); one
    that answers in the tracer does not. Checked by running every path entry once."""
    from appvirt.core.action import Allow, Rewrite
    from appvirt.policy import load_policy_text
    from appvirt.testing import FakeContext, handle, make_stop
    fs.create_file("/d/f", contents="x")
    ctx = FakeContext(load_policy_text("{}", "p.yaml"), cwd=b"/d").use_overlay()
    ctx.memory[0x1000] = bytes(256)
    for e in TABLE.entries:
        if not e.path_args:
            continue
        paths = {i: b"f" for i in e.path_args}
        action = handle(make_stop(e.name, -100, 0x1000, 0x1000, 0x1000, 0, 0, paths=paths), ctx)
        needs = isinstance(action, Rewrite) or (isinstance(action, Allow) and action.on_exit)
        assert not needs or e.needs_exit, (e.name, action)


def test_handlers_are_named_and_documented():
    for e in TABLE.entries:
        assert e.handler.__doc__, e.name


def test_every_entry_resolves_to_its_modules_handler_and_every_handler_is_declared():
    """An entry's handler is HANDLERS[name] of the module it names, and a handler module has
    a handler for exactly the calls declared with it (none missing, none left over)."""
    import importlib
    declared: dict[str, set[str]] = {}
    for e in TABLE.entries:
        declared.setdefault(e.module, set()).add(e.name)
        assert e.handler is importlib.import_module(e.module).HANDLERS[e.name], e.name
        assert e.handler is e.handler, e.name           # resolved once
    for module, names in declared.items():
        assert set(importlib.import_module(module).HANDLERS) == names, module


def test_the_table_loads_no_handler_module():
    """Handler modules are imported at their calls' first dispatch, not with the table."""
    import subprocess
    import sys
    code = ("import sys, appvirt.handlers; "
            "print(' '.join(m for m in sys.modules if m.startswith('appvirt.handlers.')))")
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                            text=True).stdout.split()
    assert loaded == []


def test_a_handler_module_that_cannot_be_imported_denies_the_call():
    """Fail closed: the dispatcher turns the failed import into EPERM, never a pass."""
    from types import SimpleNamespace
    from appvirt.core.action import Deny
    from appvirt.core.table import OpClass, SyscallEntry
    from appvirt.policy import load_policy_text
    from appvirt.tracer.loop import Tracer
    broken = SyscallEntry("getpid", OpClass.PROCESS, "appvirt.handlers.no_such_module")
    tracer = Tracer(TABLE, load_policy_text("{}", "p.yaml"), None, None)
    task = SimpleNamespace(tid=4242, pid=4242)
    info = SimpleNamespace(args=(0,) * 6, ip=0)
    stop, action = tracer._decide(task, broken, info)
    assert isinstance(action, Deny) and action.errno == errno.EPERM
    assert action.note.rule == "builtin:internal-error"
    assert tracer.first_error.startswith("getpid: internal error: ModuleNotFoundError")
    missing = SyscallEntry("getpid", OpClass.PROCESS, "appvirt.handlers.process")
    stop, action = tracer._decide(task, missing, info)      # no handler of that name there
    assert isinstance(action, Deny) and action.errno == errno.EPERM


PROG = sc.build_filter(TABLE)


def _verdict(nr: int, args=(0,) * 6, arch=sc.AUDIT_ARCH_X86_64) -> int:
    return sc.run_filter(PROG, nr, args, arch) & 0xFFFF0000


def test_filter_traces_exactly_the_table_and_unknown_numbers():
    for nr in range(sysnums.MAX_NR + 64):
        name = sysnums.NAME_BY_NR.get(nr)
        v = _verdict(nr)
        if name in UNTRACED:
            assert v == sc.RET_ALLOW, name
        elif name is None or not TABLE.by_name[name].trace_if:
            assert v == sc.RET_TRACE, (nr, name)


def test_filter_data_names_the_entry():
    for e in TABLE.entries:
        if not e.trace_if:
            data = sc.run_filter(PROG, e.nr) & 0xFFFF
            assert TABLE.entries[(data & sc.DATA_INDEX_MASK) - 1] is e
            assert bool(data & sc.DATA_NEEDS_EXIT) == e.needs_exit


@pytest.mark.parametrize("arch", [0x40000003, 0xC00000B7, 0])   # i386, aarch64, nonsense
def test_other_arches_are_killed(arch):
    assert sc.run_filter(PROG, 0, arch=arch) == sc.RET_KILL_PROCESS


def test_x32_numbers_are_killed_and_negative_ones_traced():
    assert sc.run_filter(PROG, 0x40000000 | 257) == sc.RET_KILL_PROCESS
    assert sc.run_filter(PROG, 0x40000000 | 0) == sc.RET_KILL_PROCESS
    assert _verdict(-1) == sc.RET_TRACE


@pytest.mark.parametrize("name, args, traced", [
    ("clone", (0x11, 0, 0, 0, 0, 0), False),
    ("clone", (0x00800000 | 0x11, 0, 0, 0, 0, 0), True),
    ("clone", (0x10000000, 0, 0, 0, 0, 0), True),                    # CLONE_NEWUSER
    ("ioctl", (0, 0x5401, 0, 0, 0, 0), False),                        # TCGETS
    ("ioctl", (0, 0x5412, 0, 0, 0, 0), True),                         # TIOCSTI
    ("ioctl", (0, 0xFFFFFFFF00005412, 0, 0, 0, 0), True),             # high bits ignored
    ("personality", (0xFFFFFFFF, 0, 0, 0, 0, 0), False),
    ("personality", (0x0040000, 0, 0, 0, 0, 0), True),                # ADDR_NO_RANDOMIZE
    ("socket", (2, 1, 0, 0, 0, 0), False),
    ("socket", (38, 5, 0, 0, 0, 0), True),                            # AF_ALG
    ("mmap", (0x7F0000000000, 4096, 3, 0x22, -1, 0), False),
    ("mmap", (0x6FFF00002000, 4096, 3, 0x32, -1, 0), True),
    ("mmap", (0x6FFEFFFFF000, 8192, 3, 0x32, -1, 0), True),
    ("munmap", (0x1000, 1 << 40, 0, 0, 0, 0), True),                  # huge length
    ("munmap", (0x7F0000000000, 4096, 0, 0, 0, 0), False),
    ("prlimit64", (0, 7, 0, 1, 0, 0), False),
    ("prlimit64", (0, 4, 1, 0, 0, 0), True),                          # RLIMIT_CORE
    ("prlimit64", (1, 7, 0, 1, 0, 0), True),                          # another process
    ("seccomp", (1, 0, 1, 0, 0, 0), False),
    ("seccomp", (1, 8, 1, 0, 0, 0), True),                            # NEW_LISTENER
])
def test_register_prefilters(name, args, traced):
    assert (_verdict(sysnums.nr(name), args) == sc.RET_TRACE) is traced


def test_filter_fits_the_kernel_limit():
    assert len(PROG) < 4096


def test_running_kernel_has_no_syscall_beyond_the_table():
    """Threat #10: a syscall newer than the table must not exist on the machine we run on.
    Numbers past the table's end must all be ENOSYS natively (probed with invalid args)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pid = os.fork()
    if pid == 0:
        bad = [nr for nr in range(sysnums.MAX_NR + 1, sysnums.MAX_NR + 65)
               if libc.syscall(nr, -1, -1, -1, -1, -1, -1) != -1 or
               ctypes.get_errno() != errno.ENOSYS]
        os._exit(min(len(bad), 100))
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_trace_conditions_of_different_kinds_never_compare_equal():
    """Conditions are named tuples: an allowlist and a denylist of the same fields must stay
    two conditions (in a comparison, a set or a dict), never collapse into one."""
    from appvirt.core.table import (ArgBitsAny, ArgBitsClear, ArgHighIn, ArgHighNotIn, ArgIn,
                                    ArgNotIn)
    values = frozenset({1})
    kinds = [ArgIn(0, values), ArgNotIn(0, values), ArgHighIn(0, values),
             ArgHighNotIn(0, values), ArgBitsAny(0, 1), ArgBitsClear(0, 1)]
    assert len(set(kinds)) == len(kinds) == len({k: 0 for k in kinds})
    assert all(a != b and not a == b for a in kinds for b in kinds if a is not b)
    assert ArgIn(0, values) == ArgIn(0, frozenset({1})) and ArgIn(0, values) != (0, values)


# -- calls notified by seccomp (fastpath.NOTIFIED_*, _fastpath_notify.c) ---------------------
def _policy(name: str, log_level: str | None = None):
    from appvirt.policy import load_policy_text
    text = (Path(__file__).parents[2] / "policies" / name).read_text()
    if log_level is not None:
        text = text.replace("  level: changes", f"  level: {log_level}")
        assert f"level: {log_level}" in text
    return load_policy_text(text)


def test_notified_calls_notify_unless_their_sixth_argument_is_the_mark():
    """The filter sends a notified call to the listener, and to RET_TRACE (with the same
    data as without notification) only when both halves of r9 are the mark; every other
    call's verdict is the plain filter's."""
    from appvirt.tracer import fastpath
    names = set(fastpath.NOTIFIED_READS + fastpath.NOTIFIED_OTHERS + fastpath.CHANGES)
    mark = fastpath.NOTIFY_MARK
    prog = sc.build_filter(TABLE, None, sc.Notified(frozenset(names), mark))
    seen = 0
    for nr in range(sysnums.MAX_NR + 64):
        name = sysnums.NAME_BY_NR.get(nr)
        for args in ((0,) * 6, (3, 0, 0, 0, 0x100, 0)):
            plain = sc.run_filter(PROG, nr, args)
            if name not in names or plain & 0xFFFF0000 != sc.RET_TRACE:
                assert sc.run_filter(prog, nr, args) == plain, name
                continue
            seen += 1
            assert sc.run_filter(prog, nr, args) == sc.RET_USER_NOTIF, name
            assert sc.run_filter(prog, nr, args[:5] + (mark,)) == plain, name
            for half in (mark & 0xFFFFFFFF, mark & ~0xFFFFFFFF, mark ^ 1, mark ^ (1 << 63)):
                assert sc.run_filter(prog, nr, args[:5] + (half,)) == sc.RET_USER_NOTIF
    assert seen >= 2 * len(names) - 4        # (a few are not in the table on every kernel)


@pytest.mark.parametrize("policy, level", [("default.yaml", None), ("default.yaml", "all"),
                                           ("identity.yaml", None), ("time.yaml", None),
                                           ("network.yaml", None), ("files.yaml", None)])
def test_only_calls_answered_by_a_result_are_ever_notified(monkeypatch, policy, level):
    """Never a call whose answer rewrites registers (opens, execs), a dangerous one, or one
    the handlers must see first; at log level all only what the compiled loop logs; and only
    calls the filter traces at all."""
    from appvirt.tracer import fastpath
    monkeypatch.setattr(sc, "_notify_available", True)
    monkeypatch.delenv("APPVIRT_NOTIFY", raising=False)
    p = _policy(policy, level)
    traced = TABLE.traced_for(p)
    notified = fastpath.notified(p, traced)
    assert notified is not None and notified.mark == fastpath.NOTIFY_MARK
    calls = notified.calls
    assert calls <= traced.keys()
    assert not calls & NEVER_PROCEED
    assert not calls & {"openat", "open", "openat2", "creat", "execve", "execveat", "fstat",
                        "seccomp", "clone", "clone3", "fork", "vfork", "mmap", "kill"}
    assert calls <= set(fastpath.NOTIFIED_READS + fastpath.NOTIFIED_OTHERS
                        + fastpath.CHANGES)
    assert {"unlinkat", "fchmod", "utimensat"} <= calls
    assert bool(calls & set(fastpath.NOTIFIED_OTHERS)) is (level != "all")
    assert "newfstatat" in calls and "getdents64" in calls
    monkeypatch.setenv("APPVIRT_NOTIFY", "0")
    assert fastpath.notified(p, traced) is None
    monkeypatch.setenv("APPVIRT_NOTIFY", "1")
    monkeypatch.setattr(sc, "_notify_available", False)       # a kernel before 5.19
    assert fastpath.notified(p, traced) is None
