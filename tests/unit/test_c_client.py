"""The C client of warm starts (bin/appvirt.c) against a stand-in server speaking wire.py: the
request it marshals is the one the server reads, it ends as the answers say, and it becomes
the Python executable beside it (told that the server was asked) for everything else. No
ptrace: the run itself is the integration tests' (test_warm_start.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from appvirt.tracer import clientspawn, seccomp
from appvirt.tracer.slots import SlotArena
from appvirt.warm import wire
from appvirt.warm.client import C_ORIGIN
from tests.conftest import install_c_client

# The stand-in for the Python executable: what it was started with.
COLD = '#!/bin/sh\necho "cold asked=${_APPVIRT_SERVER_ASKED-unset} $*"\n'


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Path:
    return install_c_client(tmp_path_factory.mktemp("c-client"), COLD)


class StandIn:
    """A server socket in an appvirt home that answers one request with `answers`."""

    def __init__(self, home: Path, answers: list[tuple]) -> None:
        (home / "run").mkdir(parents=True)
        self.path = str(home / "run" / wire.SOCKET_NAME)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(1)
        self.listener.settimeout(30)
        self.answers, self.request, self.fds = answers, None, 0
        self.thread = threading.Thread(target=self._serve)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except TimeoutError:
            return
        with conn:
            received = wire.receive(conn, max_fds=3)
            if received is None:
                return                      # release(): nobody asked
            self.request, fds = received
            self.fds = len(fds)
            for fd in fds:          # as the server does: else the client's pipes stay open
                os.close(fd)
            for answer in self.answers:
                if callable(answer):
                    answer(conn)            # a step of a run-here's exchange
                else:
                    wire.send(conn, answer)

    def release(self) -> None:
        """End the wait of a stand-in nobody asked."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as nobody:
            nobody.connect(self.path)
        self.close()

    def close(self) -> None:
        self.thread.join(timeout=30)
        self.listener.close()


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "APPVIRT_HOME": str(tmp_path / "home"),
            "A_VARIABLE": "a value"}


def _run(client: Path, args: list, env: dict, **kw) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(client), *args], env=env, capture_output=True, timeout=30,
                          start_new_session=True, **kw)


def test_the_request_is_the_one_the_server_reads(client, env, tmp_path):
    server = StandIn(tmp_path / "home", [("pid", os.getpid()), ("exit", 7)])
    args = ["run", "--", "printf", "%s", b"caf\xc3\xa9 \xff"]
    env = {**env, "": "a value with no name", "EMPTY": ""}     # as os.environb has them
    r = _run(client, args, env, stdin=subprocess.DEVNULL)
    server.close()
    assert (r.returncode, r.stdout, r.stderr) == (7, b"", b"")
    kind, origin, argv, environ = server.request
    assert (kind, origin) == ("run-here", (C_ORIGIN, b"/bin/sh"))
    assert argv == [os.fsencode(a) for a in args]
    assert environ == {os.fsencode(k): os.fsencode(v) for k, v in env.items()}
    assert server.fds == 3


@pytest.mark.parametrize("status, returncode", [
    (0x0300, 3),                                    # exited 3
    (int(signal.SIGTERM), -signal.SIGTERM),         # killed: the client dies the same way
    (int(signal.SIGKILL), -signal.SIGKILL)])
def test_a_tracer_that_died_first_is_the_clients_end(client, env, tmp_path, status,
                                                      returncode):
    server = StandIn(tmp_path / "home", [("pid", os.getpid()), ("status", status)])
    r = _run(client, ["run", "--", "true"], env)
    server.close()
    assert (r.returncode, r.stdout, r.stderr) == (returncode, b"", b"")


def test_a_run_without_its_end_is_an_internal_error(client, env, tmp_path):
    server = StandIn(tmp_path / "home", [("pid", os.getpid())])
    r = _run(client, ["run", "--", "true"], env)
    server.close()
    assert (r.returncode, r.stdout) == (125, b"")
    assert r.stderr == (b"appvirt: internal error: the warm server's tracer ended without a "
                        b"status\n")


@pytest.mark.parametrize("answers", [[("refused", "a reason " * 100)], [], [("pid", "x")],
                                     [("exit", 0)]])
def test_a_refusal_or_an_odd_answer_starts_cold_once_asked(client, env, tmp_path, answers):
    server = StandIn(tmp_path / "home", answers)
    r = _run(client, ["run", "--", "true"], env)
    server.close()
    assert server.request is not None
    assert (r.returncode, r.stdout) == (0, b"cold asked=1 run -- true\n")


def test_no_server_starts_cold_once_asked(client, env):
    r = _run(client, ["run", "--", "true"], env)
    assert (r.returncode, r.stdout) == (0, b"cold asked=1 run -- true\n")


@pytest.mark.parametrize("args, extra", [
    (["--version"], {}), (["server", "status"], {}), (["run", "--", "true"],
                                                        {"APPVIRT_SERVER": "off"}),
    (["run", "--", "true"], {"_APPVIRT_COMPLETE": "bash_complete"})])
def test_what_is_not_for_the_server_is_not_asked(client, env, tmp_path, args, extra):
    server = StandIn(tmp_path / "home", [("pid", os.getpid()), ("exit", 9)])
    r = _run(client, args, {**env, **extra})
    server.release()
    assert server.request is None
    assert (r.returncode, r.stdout) == (0, f"cold asked=unset {' '.join(args)}\n".encode())


def test_a_first_line_that_is_not_one_path_leaves_the_asking_to_python(client, env, tmp_path):
    other = install_c_client(tmp_path / "bin", COLD.replace("#!/bin/sh", "#!/bin/sh -e"))
    r = _run(other, ["run", "--", "true"], env)
    assert (r.returncode, r.stdout) == (0, b"cold asked=unset run -- true\n")


# -- a run-here: the client forks the program (tracer/clientspawn.py), here with no tracer -----

ALLOW_ALL = seccomp.PackedFilter([seccomp.Insn(0x06, 0, 0, 0x7FFF0000)])   # ret ALLOW


class Spawn:
    """The tracer's side of the exchange, without ptrace: asks for the program, lets it go
    at once, and keeps what came back (the child's pid, the report pipe's word)."""

    def __init__(self, path: str, argv: list[str], env: dict[str, str],
                 blob: bytes | None = None, fds: int = 3, seize: bool = True) -> None:
        self.path, self.argv, self.env, self.blob, self.nfds = path, argv, env, blob, fds
        self.seize = seize
        self.child: object = None
        self.report = b""

    def __call__(self, conn: socket.socket) -> None:
        arena = SlotArena()
        rep_r, rep_w = os.pipe2(os.O_CLOEXEC)
        hand_r, hand_w = os.pipe2(os.O_CLOEXEC)
        blob = self.blob if self.blob is not None else clientspawn.spawn_blob(
            self.path, self.argv, self.env, ALLOW_ALL, arena)
        wire.send(conn, ("spawn", blob), (arena.ro_fd, rep_w, hand_w)[:self.nfds])
        os.close(rep_w)
        os.close(hand_w)
        arena.close()
        (kind, self.child), _ = wire.receive(conn)
        assert kind == "child"
        if self.child and self.seize:
            wire.send(conn, ("seized", 0))
            wire.send(conn, ("stopped", 0))     # no terminal in its foreground: nothing to do
        if self.seize:
            self.report = os.read(rep_r, 64)    # EOF: it exec'd
        os.close(rep_r)
        os.close(hand_r)


def _run_here(client: Path, env: dict, tmp_path: Path, spawn: Spawn
              ) -> subprocess.CompletedProcess[bytes]:
    """The client's run of what spawn asks for, which exits 7."""
    server = StandIn(tmp_path / "home", [("pid", os.getpid()), spawn, ("exit", 7)])
    r = _run(client, ["run", "--", spawn.argv[0]], env, stdin=subprocess.DEVNULL)
    server.close()
    assert (r.returncode, r.stderr, spawn.report) == (7, b"", b"")
    return r


def test_a_run_here_childs_program_starts_as_the_launchers_would(client, env, tmp_path):
    """Its own group, every signal default and none blocked, no_new_privs and the filter
    (the slot area it maps for the execve's stop is gone after the exec: the integration
    tests' tracer maps it again). Read by the program itself as it starts: a shell's own
    mask changes while it waits for a child."""
    spawn = Spawn("/bin/cat", ["cat", "/proc/self/status", "/proc/self/stat"], {})
    out = _run_here(client, env, tmp_path, spawn).stdout.decode()
    status = dict(line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)
    assert (status["SigBlk"], status["SigIgn"], status["NoNewPrivs"], status["Seccomp"]) == \
        ("0" * 16, "0" * 16, "1", "2")
    stat = out.splitlines()[-1]
    assert stat[stat.rfind(")") + 2:].split()[2] == str(spawn.child)     # its pgrp


def test_a_run_here_childs_program_gets_its_command_line_and_no_more(client, env, tmp_path):
    """The path, arguments and environment the tracer said; no core dumps; fds 0-2 alone."""
    script = ("echo \"$SPAWNED $1 ${A_VARIABLE-unset}\"; ulimit -c; "    # (the client's variable)
              "ls /proc/$$/fd | tr '\\n' ' '")
    spawn = Spawn("/bin/sh", ["sh", "-c", script, "sh", "an argument"], {"SPAWNED": "yes"})
    out = _run_here(client, env, tmp_path, spawn).stdout.decode()
    assert out.split("\n") == ["yes an argument unset", "0", "0 1 2 "]


def test_a_run_here_child_that_cannot_exec_says_why_on_the_report_pipe(client, env, tmp_path):
    spawn = Spawn("/nonexistent/program", ["program"], {})
    server = StandIn(tmp_path / "home", [("pid", os.getpid()), spawn, ("exit", 127)])
    r = _run(client, ["run", "--", "program"], env)
    server.close()
    assert (r.returncode, spawn.report) == (127, b"2")      # ENOENT, told to the tracer


@pytest.mark.parametrize("blob, fds", [(b"short", 3), (None, 2)])
def test_a_spawn_the_client_cannot_read_gets_no_child(client, env, tmp_path, blob, fds):
    spawn = Spawn("/bin/true", ["true"], {}, blob, fds)
    server = StandIn(tmp_path / "home", [("pid", os.getpid()), spawn, ("exit", 2)])
    r = _run(client, ["run", "--", "true"], env)
    server.close()
    assert (spawn.child, r.returncode) == (0, 2)


def test_a_child_the_tracer_never_seized_ends_without_its_program(client, env, tmp_path):
    """The tracer failed after the fork (its seize, say): the client lets the child go
    nowhere but its end, and waits for it."""
    marker = tmp_path / "ran"
    spawn = Spawn("/bin/sh", ["sh", "-c", f"echo > {marker}"], {}, seize=False)
    server = StandIn(tmp_path / "home", [("pid", os.getpid()), spawn, ("exit", 2)])
    r = _run(client, ["run", "--", "sh"], env)
    server.close()
    assert spawn.child and r.returncode == 2
    assert not marker.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(spawn.child, 0)                 # ended, and reaped by the client


def test_an_argument_with_a_nul_is_not_packed():
    arena = SlotArena()
    try:
        with pytest.raises(ValueError):
            clientspawn.spawn_blob("/bin/echo", ["echo", "a\0b"], {}, ALLOW_ALL, arena)
    finally:
        arena.close()
