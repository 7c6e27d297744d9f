"""What keeps the start-up of `appvirt run` short stays correct (and short)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import threading

import pytest

from hypothesis import given, settings, strategies as st

from appvirt.tracer import _ptrace as pt
from appvirt.tracer import seccomp


def _own_status() -> dict[str, str]:
    with open("/proc/thread-self/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def test_the_seccomp_probe_leaves_the_tracer_as_it_was(ptrace_ok, monkeypatch):
    """check_available installs its trial filter on a thread of its own: the calling thread
    (the tracer) gets neither no_new_privs nor a filter."""
    monkeypatch.setattr(seccomp, "_available", False)
    before = _own_status()
    seccomp.check_available()
    after = _own_status()
    for field in ("NoNewPrivs", "Seccomp", "Seccomp_filters"):
        assert after.get(field) == before.get(field), field
    assert not any(t.name == "appvirt-seccomp-check" for t in threading.enumerate())


def test_the_seccomp_probe_runs_once_a_process(ptrace_ok, monkeypatch):
    """A warm server probes before it forks its runs; they, and a cold run's restarts, do
    not probe again."""
    monkeypatch.setattr(seccomp, "_available", False)
    started: list[str] = []
    real = threading.Thread

    def counting(*args, **kwargs):
        started.append(kwargs.get("name", ""))
        return real(*args, **kwargs)

    monkeypatch.setattr(seccomp.threading, "Thread", counting)
    seccomp.check_available()
    seccomp.check_available()
    assert started == ["appvirt-seccomp-check"]


def test_the_seccomp_probe_really_installs_a_filter(ptrace_ok):
    seen: list[dict[str, str]] = []

    def probe() -> None:
        seccomp.install([seccomp.Insn(seccomp.RET_K, 0, 0, seccomp.RET_ALLOW)])
        seen.append(_own_status())

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    assert seen[0]["NoNewPrivs"] == "1" and seen[0]["Seccomp"] == "2"


def test_register_layout_is_the_kernels():
    """_ptrace declares struct user_regs_struct itself; python-ptrace's is the reference."""
    from ptrace.binding.linux_struct import user_regs_struct
    assert [n for n, _ in pt.user_regs_struct._fields_] == \
        [n for n, _ in user_regs_struct._fields_]
    assert ctypes.sizeof(pt.user_regs_struct) == ctypes.sizeof(user_regs_struct) == 27 * 8


def test_run_imports_nothing_it_does_not_need():
    """The modules `appvirt run` imports before the program starts leave out the parsers,
    validators and viewers a remembered policy, an empty log and a quiet run never use."""
    code = ("import sys, appvirt.entry, appvirt.run, appvirt.tracer.launcher; "
            "print(' '.join(sorted(sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                text=True).stdout.split())
    for heavy in ("click", "yaml", "jsonschema", "ptrace", "ctypes.util", "rich", "capstone",
                  "elftools", "appvirt.vmx", "appvirt.store.cli", "appvirt.overlay.cli",
                  "appvirt.cli_log", "importlib.resources", "appvirt.store.diff",
                  "appvirt.store.transfer", "appvirt.store.textformat", "gzip", "random",
                  "socket", "calendar", "shutil", "appvirt.virt.modules",
                  "appvirt.virt.credentials", "appvirt.handlers.files"):
        assert heavy not in loaded, heavy


def test_a_run_with_the_default_policy_imports_only_what_it_uses(ptrace_ok, home):
    """`appvirt run -- true` with the default policy, remembered as every start after the first
    has it: neither hashlib (it loads OpenSSL; appvirt.hashes has the digests) nor what only a
    fresh policy (copy) or a program's network call (net.addresses) needs."""
    code = ("import atexit, sys; "
            "atexit.register(lambda: print(' '.join(sorted(sys.modules)))); "
            "from appvirt.entry import console; "
            "sys.argv = ['appvirt', 'run', '--', 'true']; console()")
    for _ in range(2):          # the first run checks the policy and remembers it
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=False, timeout=60)
        assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert "appvirt.tracer.loop" in loaded and "yaml" not in loaded     # ran, remembered
    for unused in ("hashlib", "_hashlib", "copy", "appvirt.net.addresses"):
        assert unused not in loaded, unused


def test_the_digests_without_openssl_are_hashlibs():
    """The store keeps its base digest, the policy cache its keys: the same as before."""
    import hashlib
    from appvirt import hashes
    for data in (b"", b"appvirt", bytes(range(256)) * 300):
        assert hashes.sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()
        assert (hashes.blake2b(data, digest_size=8, person=b"appvirt-reg").digest()
                == hashlib.blake2b(data, digest_size=8, person=b"appvirt-reg").digest())


def test_the_packed_filter_is_the_kernels_sock_filter_array():
    from appvirt.handlers import TABLE
    prog = seccomp.build_filter(TABLE)
    one_by_one = (seccomp._SockFilter * len(prog))(
        *[seccomp._SockFilter(i.code, i.jt, i.jf, i.k) for i in prog])
    packed = b"".join(seccomp._SOCK_FILTER.pack(i.code, i.jt, i.jf, i.k) for i in prog)
    assert bytes(one_by_one) == packed


def test_a_packed_filter_holds_the_program_it_was_made_of():
    """The launcher packs the filter before it forks; the child installs the packed form."""
    from appvirt.handlers import TABLE
    prog = seccomp.build_filter(TABLE)
    packed = seccomp.PackedFilter(prog)
    assert packed.fprog.len == len(prog)
    raw = ctypes.string_at(packed.fprog.filter, len(prog) * ctypes.sizeof(seccomp._SockFilter))
    assert raw == b"".join(seccomp._SOCK_FILTER.pack(*i) for i in prog)


@pytest.mark.parametrize("close_range", [True, False])
def test_the_launched_child_keeps_only_the_fds_it_names(monkeypatch, close_range):
    """_close_all_but closes every other fd, with close_range or (a kernel before Linux 5.9,
    here a number the kernel does not know) through /proc/self/fd; a high fd too."""
    from appvirt.tracer import launcher
    if not close_range:
        monkeypatch.setattr(launcher, "SYS_CLOSE_RANGE", 100_000)
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(4)]
    high = os.dup2(fds[0], 5000)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            launcher._close_all_but(0, 1, 2, fds[2], w)
            left = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
            os.write(w, repr(left).encode())
        finally:
            os._exit(0)
    os.close(w)
    try:
        left = eval(os.read(r, 4096))
        os.waitpid(pid, 0)
    finally:
        for fd in (r, high, *fds):
            os.close(fd)
    kept = {0, 1, 2, fds[2], w}
    assert kept <= set(left) and high not in left
    assert len(left) == len(kept) + 1           # and the listing's own fd


def test_a_remembered_filter_is_the_one_built_for_the_same_calls(monkeypatch):
    """build_filter builds each filter once a process (a warm server's runs find the default
    policy's built); conditions of two kinds with the same fields are two filters."""
    from appvirt.core.table import ArgIn, ArgNotIn
    from appvirt.handlers import TABLE
    monkeypatch.setattr(seccomp, "_built", {})
    traced = {"openat": (ArgIn(2, frozenset({5})),), "unlinkat": ()}
    other = {"openat": (ArgNotIn(2, frozenset({5})),), "unlinkat": ()}
    first, second = seccomp.build_filter(TABLE, traced), seccomp.build_filter(TABLE, other)
    assert first != second
    assert first == seccomp._build(TABLE, traced) and second == seccomp._build(TABLE, other)
    first.clear()                                  # a caller's copy, not the remembered one
    assert seccomp.build_filter(TABLE, dict(reversed(traced.items()))) == \
        seccomp._build(TABLE, traced)
    assert len(seccomp._built) == 2


def test_a_packed_filter_is_packed_once_for_the_same_calls(monkeypatch):
    """A warm server packs the default policy's filters; its runs find them packed."""
    from appvirt.core.table import ArgIn
    from appvirt.handlers import TABLE
    monkeypatch.setattr(seccomp, "_built", {})
    monkeypatch.setattr(seccomp, "_packed", {})
    traced = {"openat": (ArgIn(2, frozenset({5})),), "unlinkat": ()}
    packed = seccomp.packed_filter(TABLE, traced)
    assert seccomp.packed_filter(TABLE, dict(reversed(traced.items()))) is packed
    assert seccomp.packed_filter(TABLE, {"unlinkat": ()}) is not packed
    prog = seccomp._build(TABLE, traced)
    size = len(prog) * ctypes.sizeof(seccomp._SockFilter)
    assert packed.fprog.len == len(prog)
    assert ctypes.string_at(packed.fprog.filter, size) == \
        ctypes.string_at(seccomp.PackedFilter(prog).fprog.filter, size)


def test_address_families_written_out_are_the_socket_modules():
    """net.addresses writes them out: importing socket would cost every start-up."""
    import socket
    from appvirt.net import addresses
    assert (addresses.AF_UNIX, addresses.AF_INET, addresses.AF_INET6) == (
        socket.AF_UNIX, socket.AF_INET, socket.AF_INET6)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["bin", "sbin", "dir", "file", "plain", "", ".", "missing",
                                 "bin"]), max_size=6),
       st.sampled_from(["tool", "data", "sub", "none"]))
def test_the_program_search_finds_what_shutil_which_finds(tmp_path_factory, dirs, name):
    """pathsearch.which stands in for shutil.which (whose import costs every start)."""
    import shutil
    from appvirt.tracer.pathsearch import which
    root = tmp_path_factory.getbasetemp() / "search"
    if not root.exists():
        for d in ("bin", "sbin", "dir", "plain"):
            (root / d).mkdir(parents=True)
        for d, mode in (("bin", 0o755), ("sbin", 0o755), ("plain", 0o644)):
            for f in ("tool", "data"):
                (root / d / f).write_text("#!/bin/sh\n")
                (root / d / f).chmod(mode if f == "tool" else 0o644)
        (root / "dir" / "tool").mkdir()
        (root / "sbin" / "sub").mkdir()
        (root / "file").write_text("")
    path = os.pathsep.join(str(root / d) if d else "" for d in dirs)
    assert which(name, path) == shutil.which(name, path=path)


def test_a_child_its_tracer_never_lets_go_ends_running_nothing(tmp_path):
    """The go pipe's write end is the tracer's alone: when the tracer closes it (it died)
    before seizing the child, the child sees the pipe's end and exits 125 without its exec."""
    from appvirt.tracer import launcher
    from appvirt.tracer.slots import SlotArena
    arena = SlotArena()
    marker = tmp_path / "ran"
    go, report, hand = os.pipe(), os.pipe2(os.O_CLOEXEC), os.pipe2(os.O_CLOEXEC)
    allow_all = seccomp.PackedFilter([seccomp.Insn(0x06, 0, 0, 0x7FFF0000)])
    pid = launcher._fork_child("/bin/sh", ["sh", "-c", f"echo > {marker}"], {}, allow_all,
                               arena, go, report, hand)
    try:
        os.close(go[1])
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 125
        assert os.read(report[0], 64) == b""
        assert not marker.exists()
    finally:
        os.close(report[0])
        os.close(hand[0])
        arena.close()
