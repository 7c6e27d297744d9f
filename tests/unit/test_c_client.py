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
    assert (kind, origin) == ("run", (C_ORIGIN, b"/bin/sh"))
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
