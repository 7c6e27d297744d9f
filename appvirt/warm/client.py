"""The client side of a warm start, tried first by every `appvirt run` line.

Without a server socket (one failed connect) the run starts cold, as it always did. With one,
the server checks that a run it forks would see what this process would give it (peer.py),
and either refuses (the run starts cold here, silently) or forks a tracer that runs the same
command line with this process's standard fds, cwd, environment, umask, limits and CPUs; this
process then waits for its exit status, forwarding the signals a cold appvirt forwards to its
program, and dies the way the run ended. If this process dies, the tracer kills itself and
its program (nothing outlives the run, as with a cold one).

Builtin modules only (no `socket`, `signal`: their enums cost milliseconds).
"""

import _signal
import _socket
import os
import sys

from ..forwarding import FORWARDED, forward_signals
from ..homepath import home_dir
from . import wire

PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The server runs only its own code, on its own interpreter and environment (python3 and
# python in a venv are one).
ORIGIN = (PACKAGE, sys.prefix, os.path.realpath(sys.executable))
SERVER_ENV = "APPVIRT_SERVER"       # "off": never ask the server (autostart.py: the rest)
# The origin of bin/appvirt.c's requests: (C_ORIGIN, the interpreter as bytes), the command
# line as bytes.
C_ORIGIN = "c1"


def socket_path(home: str) -> str:
    return os.path.join(home, "run", wire.SOCKET_NAME)


def connect(home: str):
    """A connection to the server of this appvirt home, or None (no server: start cold)."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    path = socket_path(home)
    try:
        if len(os.fsencode(path)) >= 108:          # sun_path: reach it through its directory
            fd = os.open(os.path.dirname(path), os.O_PATH | os.O_CLOEXEC)
            try:
                sock.connect(f"/proc/self/fd/{fd}/{wire.SOCKET_NAME}")
            finally:
                os.close(fd)
        else:
            sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def run_warm(args: list[str]) -> int | None:
    """Run `appvirt ARGS` (a `run` line) in the server; its exit status, or None when the run
    is to start cold here (no server, or the server refused it)."""
    if os.environ.get(SERVER_ENV) == "off" or has_terminal():
        return None                 # (the server would refuse a terminal: no need to ask)
    sock = connect(home_dir())
    if sock is None:
        return None
    try:
        wire.send(sock, ("run", ORIGIN, args, dict(os.environb)), (0, 1, 2))
        answer = wire.receive(sock)
    except (OSError, EOFError, ValueError):
        sock.close()
        return None                 # e.g. a standard fd closed: the cold start says what
    if answer is None or answer[0][0] != "pid":
        sock.close()
        return None
    return _wait(sock, answer[0][1])


def parse_status(text: str) -> dict[str, str]:
    """/proc/PID/status as its fields."""
    fields = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields[name] = value.strip()
    return fields


def tty_of_stat(stat: bytes) -> int:
    """tty_nr of /proc/PID/stat (0: no controlling terminal)."""
    return int(stat[stat.rfind(b")") + 2:].split()[4])


def has_terminal() -> bool:
    """Whether this process has a controlling terminal."""
    try:
        with open("/proc/self/stat", "rb") as f:
            return tty_of_stat(f.read()) != 0
    except OSError:
        return False                # the server reads it too, and refuses what it cannot


def _wait(sock, tracer: int) -> int:
    forward_signals(tracer)             # the tracer passes them on to its program
    try:
        answer = wire.receive(sock)
    except (OSError, EOFError, ValueError):
        answer = None
    if answer is None:
        sys.stderr.write("appvirt: internal error: the warm server's tracer ended without "
                         "a status\n")
        return 125                  # ExitStatus.INTERNAL
    kind, value = answer[0][0], answer[0][1]
    if kind == "exit":
        return value
    if os.WIFSIGNALED(value):       # the tracer was killed: die the same way
        sig = os.WTERMSIG(value)
        for default in {*FORWARDED, sig} - {_signal.SIGKILL, _signal.SIGSTOP}:
            _signal.signal(default, _signal.SIG_DFL)
        sock.close()
        os.kill(os.getpid(), sig)
        return 128 + sig
    return os.waitstatus_to_exitcode(value)
