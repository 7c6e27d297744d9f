"""The terminal passes through: Ctrl-C and Ctrl-Z act on the program as they would natively."""

from __future__ import annotations

import os
import pty
import select
import signal
import time

import pytest

from ..conftest import appvirt_cmd

pytestmark = pytest.mark.integration


def _read_until(fd: int, needle: bytes, timeout: float = 20) -> bytes:
    out = b""
    deadline = time.time() + timeout
    while needle not in out and time.time() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


def _spawn_in_pty(*argv: str) -> tuple[int, int]:
    pid, master = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execv(argv[0], list(argv))
    return pid, master


def test_ctrl_c_reaches_the_program(home, ptrace_ok):
    cmd = appvirt_cmd("run", "--", "sh", "-c",
                      "trap 'echo got-INT; exit 5' INT; echo ready; while :; do sleep 0.1; done")
    pid, master = _spawn_in_pty(*cmd)
    try:
        assert b"ready" in _read_until(master, b"ready")
        os.write(master, b"\x03")
        assert b"got-INT" in _read_until(master, b"got-INT")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 5
    finally:
        os.close(master)


def test_ctrl_z_stops_appvirt_with_the_program_and_fg_resumes(home, ptrace_ok):
    cmd = appvirt_cmd("run", "--", "sh", "-c",
                      "echo ready; read line; echo got-$line")
    pid, master = _spawn_in_pty(*cmd)
    try:
        assert b"ready" in _read_until(master, b"ready")
        os.write(master, b"\x1a")                        # Ctrl-Z
        deadline = time.time() + 20
        stopped = False
        while time.time() < deadline and not stopped:
            wpid, status = os.waitpid(pid, os.WUNTRACED | os.WNOHANG)
            stopped = wpid == pid and os.WIFSTOPPED(status)
            time.sleep(0.05)
        assert stopped, "appvirt should stop like the program, so the shell gets control"
        os.kill(pid, signal.SIGCONT)                     # what a shell's `fg` sends
        time.sleep(0.5)
        os.write(master, b"hello\n")
        assert b"got-hello" in _read_until(master, b"got-hello")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(master)
