"""The terminal passes through: Ctrl-C and Ctrl-Z act on the program as they would natively,
in a cold run and in a warm one (the C client forks the program for the server's tracer)."""

from __future__ import annotations

import os
import pty
import select
import signal
import time

import psutil
import pytest

from ..conftest import appvirt_cmd
from .test_warm_start import _counts, c_client, server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration


@pytest.fixture(params=["cold", "warm"])
def on_terminal(request, home, ptrace_ok):
    """How `appvirt` is started on a terminal: cold, or by the C client with a server (the
    run must be served)."""
    if request.param == "cold":
        yield appvirt_cmd()
        return
    request.getfixturevalue("server")
    yield [str(request.getfixturevalue("c_client"))]
    assert _counts()[1] == 1, "the run should have been served warm"


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


def test_ctrl_c_reaches_the_program(on_terminal):
    cmd = [*on_terminal, "run", "--", "sh", "-c",
           "trap 'echo got-INT; exit 5' INT; echo ready; while :; do sleep 0.1; done"]
    pid, master = _spawn_in_pty(*cmd)
    try:
        assert b"ready" in _read_until(master, b"ready")
        os.write(master, b"\x03")
        assert b"got-INT" in _read_until(master, b"got-INT")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 5
    finally:
        os.close(master)


def test_ctrl_z_stops_appvirt_with_the_program_and_fg_resumes(on_terminal):
    cmd = [*on_terminal, "run", "--", "sh", "-c", "echo ready; read line; echo got-$line"]
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


def _run_in_pty(*argv: str) -> tuple[int, bytes]:
    """Run argv on a new terminal to its end: its exit status and what it wrote there."""
    pid, master = _spawn_in_pty(*argv)
    try:
        out = _read_until(master, b"\0never\0")         # to the end of the output
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(master)
    return os.waitstatus_to_exitcode(status), out.replace(b"\r\n", b"\n")


def test_the_program_has_the_terminal_its_session_and_the_foreground(on_terminal, tmp_path):
    """Its own process group, in the foreground of the terminal of appvirt's session, with
    /dev/tty; an orphan it leaves is waited for; what it writes is in the overlay."""
    target = tmp_path / "written"
    script = ("set -- $(cut -d' ' -f5,6,8 /proc/$$/stat); "
              "[ \"$1\" = $$ ] && echo own-group; [ \"$3\" = $$ ] && echo foreground; "
              "[ \"$2\" = $PPID ] && echo appvirts-session; "
              "(: </dev/tty) 2>/dev/null && echo dev-tty; tty | grep -q '^/dev/pts/' && echo pty; "
              f"echo made > {target} && cat {target}; "
              "(sleep 0.3; echo orphan-done) & exit 4")
    code, out = _run_in_pty(*on_terminal, "run", "--", "sh", "-c", script)
    assert (code, out) == (4, b"own-group\nforeground\nappvirts-session\ndev-tty\npty\nmade\n"
                              b"orphan-done\n")
    assert not target.exists()


def test_a_program_that_cannot_start_is_reported_as_cold(on_terminal, tmp_path):
    """Found but not an executable format: the exec fails in the program's own process."""
    bad = tmp_path / "not-a-program"
    bad.write_bytes(b"\x7fELF garbage")
    bad.chmod(0o755)
    code, out = _run_in_pty(*on_terminal, "run", "--", str(bad))
    assert (code, out) == (126, f"appvirt: {bad}: Exec format error\n".encode())


def test_a_killed_appvirt_takes_its_program_with_it(on_terminal, tmp_path):
    marker = tmp_path / "marker"
    pid, master = _spawn_in_pty(*on_terminal, "run", "--", "sh", "-c",
                                f"echo ready; exec sh -c 'sleep 60; : {marker}'")
    try:
        assert b"ready" in _read_until(master, b"ready")
        deadline = time.time() + 20
        program: list[psutil.Process] = []
        while time.time() < deadline and len(program) < 2:     # the shell and its sleep
            program = [q for p in _sleepers(marker) for q in (p, *p.children())]
            time.sleep(0.05)
        assert len(program) == 2
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        _, alive = psutil.wait_procs(program, timeout=15)
        assert not alive
    finally:
        os.close(master)


def _sleepers(marker) -> list[psutil.Process]:
    """The program's shell, by the marker its command line ends with."""
    return [p for p in psutil.process_iter(["cmdline"])
            if (p.info["cmdline"] or [""])[-1].endswith(f": {marker}")]
