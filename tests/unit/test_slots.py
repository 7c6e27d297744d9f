"""The slot area's keeper: a small exec'd process holding the read-only memfd for tracees."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from appvirt.errors import EnvironmentUnsupported
from appvirt.tracer import slots
from appvirt.tracer.slots import SlotArena

CAT = shutil.which("cat", path=os.pathsep.join((os.defpath, os.environ.get("PATH", ""))))


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _state(pid: int) -> str:
    """The process state letter; "" once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def _wait_for(cond, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def arena():
    try:
        a = SlotArena()
    except EnvironmentUnsupported as e:
        pytest.skip(str(e))
    yield a
    a.close()


@pytest.fixture
def keeper(arena: SlotArena) -> int:
    """The started keeper's pid, once it runs cat (its exec done: /proc shows the new exe a
    moment before the new command line)."""
    if CAT is None:
        pytest.skip("no cat here")
    arena.start_keeper()
    assert _wait_for(lambda: _exe(arena.keeper_pid) == os.path.realpath(CAT)
                     and _cmdline(arena.keeper_pid) == b"cat\0")
    return arena.keeper_pid


@pytest.mark.parametrize("with_cat", [True, False])
def test_a_keeper_holds_the_area_when_start_keeper_returns(arena, monkeypatch, with_cat):
    """A tracee's first exec opens the area through the keeper at once: start_keeper waits for
    a keeper that a loaded machine runs late (here a fork keeper that dawdles before taking
    the fd; a spawned cat has it before posix_spawn returns, at its exec)."""
    if with_cat and CAT is None:
        pytest.skip("no cat here")
    if not with_cat:
        monkeypatch.setattr(slots, "which", lambda *a, **k: None)
    real_dup2 = os.dup2

    def slow_dup2(fd, fd2, inheritable=True):
        if fd2 == arena.keeper_fd:          # in the keeper, before it holds the area
            time.sleep(0.3)
        return real_dup2(fd, fd2, inheritable)
    monkeypatch.setattr(os, "dup2", slow_dup2)
    arena.start_keeper()
    fd = os.open(arena.keeper_path(), os.O_RDONLY)
    try:
        st = os.fstat(fd)
        assert (st.st_dev, st.st_ino) == (arena.dev, arena.ino)
    finally:
        os.close(fd)


def test_keeper_is_cat_holding_the_read_only_area_and_nothing_else(arena, keeper):
    assert _exe(keeper) != os.path.realpath(sys.executable)
    # (once cat is past its start: the dynamic loader holds each library's fd a moment)
    assert _wait_for(lambda: sorted(int(fd) for fd in os.listdir(f"/proc/{keeper}/fd")) == [
        0, 1, 2, arena.keeper_fd]), os.listdir(f"/proc/{keeper}/fd")
    fd = os.open(arena.keeper_path(), os.O_RDONLY)      # what a tracee opens
    try:
        st = os.fstat(fd)
        assert (st.st_dev, st.st_ino) == (arena.dev, arena.ino)
    finally:
        os.close(fd)
    with open(f"/proc/{keeper}/fdinfo/{arena.keeper_fd}") as f:
        flags = int(next(x for x in f if x.startswith("flags:")).split()[1], 8)
    assert flags & os.O_ACCMODE == os.O_RDONLY


def test_keeper_gets_no_fd_the_tracer_could_pass_on(arena):
    """An inheritable fd of the tracer's (one its own caller gave it, say) stays out of the
    keeper: posix_spawn closes every fd but the keeper's."""
    if CAT is None:
        pytest.skip("no cat here")
    r, w = os.pipe()
    os.set_inheritable(r, True)
    try:
        arena.start_keeper()
        pid = arena.keeper_pid
        assert _wait_for(lambda: sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd")) == [
            0, 1, 2, arena.keeper_fd]), os.listdir(f"/proc/{pid}/fd")
    finally:
        os.close(r)
        os.close(w)


def test_keeper_ignores_terminal_and_termination_signals(keeper):
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGTSTP,
              signal.SIGTTIN, signal.SIGTTOU):
        os.kill(keeper, s)
    time.sleep(0.1)
    assert _state(keeper) in ("S", "R")


def test_keeper_exits_when_the_pipe_closes(arena, keeper):
    os.close(arena._keeper_pipe)                 # as the kernel does when the tracer dies
    _, status = os.waitpid(keeper, 0)
    arena.keeper_pid = 0
    assert os.waitstatus_to_exitcode(status) == 0


def test_close_kills_and_reaps_the_keeper(arena, keeper):
    arena.close()
    assert arena.keeper_pid == 0
    assert _state(keeper) == ""


def test_keeper_dies_with_a_sigkilled_owner():
    if CAT is None:
        pytest.skip("no cat here")
    owner = subprocess.Popen(
        [sys.executable, "-c", "import time; from appvirt.tracer.slots import SlotArena\n"
         "a = SlotArena(); a.start_keeper(); print(a.keeper_pid, flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        keeper = int(owner.stdout.readline())
        assert _wait_for(lambda: _exe(keeper) == os.path.realpath(CAT))
    finally:
        owner.kill()
        owner.wait()
    assert _wait_for(lambda: _state(keeper) in ("", "Z"))


def test_without_cat_the_fork_itself_keeps_the_area(arena, monkeypatch):
    monkeypatch.setattr(slots, "which", lambda *a, **k: None)
    arena.start_keeper()
    pid = arena.keeper_pid
    assert _wait_for(lambda: os.path.exists(f"/proc/{pid}/fd/{arena.keeper_fd}"))
    assert _exe(pid) == _exe(os.getpid())
    os.close(os.open(arena.keeper_path(), os.O_RDONLY))
    arena.close()
    assert _state(pid) == ""


def test_without_an_executable_mapping_there_are_no_trampolines(monkeypatch):
    """A security module that refuses PROT_EXEC on the memfd: the area is read-only alone and
    no result cells are asked for (the engine restores registers at exit stops)."""
    import mmap
    real = mmap.mmap

    def refusing(*args, **kw):
        prot = kw.get("prot", args[3] if len(args) > 3 else 0)
        if prot & mmap.PROT_EXEC:
            raise PermissionError(13, "Permission denied")
        return real(*args, **kw)
    monkeypatch.setattr(slots.mmap, "mmap", refusing)
    a = SlotArena()
    try:
        assert (a.trampolines, a.prot) == (False, mmap.PROT_READ)
    finally:
        a.close()
    monkeypatch.setattr(slots.mmap, "mmap", real)
    for wanted, env in ((True, "1"), (False, "0")):
        monkeypatch.setenv("APPVIRT_TRAMPOLINES", env)
        a = SlotArena()
        try:
            assert a.trampolines is wanted
        finally:
            a.close()
