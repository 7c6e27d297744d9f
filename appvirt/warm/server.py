"""`appvirt server`: a process that has imported everything a run uses and forks a tracer for
each warm run a client hands it (client.py), so runs skip the imports of a cold start. The
tracer is forked ahead of the run when it can be: a spare (spare.py), made while no run goes
on, which has already copied the pages it shares with the server.

The server listens on `$APPVIRT_HOME/run/server.sock` (a directory only its user can enter),
answers only its own user (SO_PEERCRED), and forks a run only for a client whose process
context the run would inherit unchanged (peer.py) and whose appvirt is the server's own code,
unchanged on disk since the server started: a Python client's ORIGIN, or the C client's
interpreter (bin/appvirt.c). Else it refuses, and exits when the code changed: the client
starts cold. The forked tracer takes the client's standard fds, cwd, environment, umask,
resource limits, CPUs and nice value, runs the command line as a cold appvirt would
(entry.main), and sends the exit status; if the client goes away first, the tracer kills
itself, and with it (PTRACE_O_EXITKILL) its program. A tracer that dies first is reported by
the server. For a run-here (the C client's request) the client forks the program, so that
it has the client's session and terminal (tracer/clientspawn.py). An idle server exits after
`--idle` seconds.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import pkgutil
import resource
import select
import signal
import socket
import sys
import time
from typing import NamedTuple

from ..entry import import_quietly
from ..errors import AppvirtError
from . import peer, wire
from .client import C_ORIGIN, ORIGIN, PACKAGE, socket_path
from .codewatch import CodeWatch
from .spare import Spare, fork_spare

POLL_SECONDS = 0.2          # how often an idle server checks its --idle
SPARE_RETRY_SECONDS = 1.0   # after a spare died untold or could not be forked: no fork loop
REQUEST_SECONDS = 10.0      # a client that connects and says nothing does not hold it up
RLIMITS = tuple(getattr(resource, n) for n in dir(resource) if n.startswith("RLIMIT_"))


class ServerError(AppvirtError):
    """The server cannot start, or cannot be reached."""


class Counts(NamedTuple):
    served: int
    refused: int
    last_refusal: str
    by_spare: int = 0           # of the served: by a ready spare, not a fork at the request


def preload() -> None:
    """Import what a run imports, including the handlers a run imports at its first stops;
    learn that seccomp filters work here (EnvironmentUnsupported: they do not); and work out
    what a run of the default policy computes from the code alone (runs find it done)."""
    run = import_quietly("appvirt.run")
    handlers = sys.modules["appvirt.handlers"]
    for info in pkgutil.iter_modules(handlers.__path__, "appvirt.handlers."):
        import_quietly(info.name)
    import_quietly("appvirt.core.context")
    from ..policy import loader
    from ..tracer import fastpath, launcher, seccomp
    seccomp.check_available()
    loader._cache_salt()
    policy = loader.load_policy(run.default_policy_path(), remember_valid=True)
    for empty, meta in ((True, False), (False, False), (False, True)):
        traced = launcher.traced_calls(run.TABLE, policy, empty, meta)
        for notified in {fastpath.notified(policy, traced), None}:   # (APPVIRT_NOTIFY=0)
            seccomp.packed_filter(run.TABLE, traced, notified)


class Server:
    def __init__(self, home: str, idle: float, lock: int) -> None:
        self.idle, self.lock = idle, lock
        self.path = socket_path(home)
        self.code = CodeWatch(PACKAGE)
        self.context = peer.read_context("self")
        self.interpreter_env = peer.interpreter_env(dict(os.environb))
        self.children: dict[int, socket.socket] = {}
        self.counts = Counts(0, 0, "", 0)
        self.stopping = False
        self.listener = _listen(self.path)
        self.spare: Spare | None = None
        self.spares_wanted = os.environ.get("APPVIRT_SPARE", "1") != "0"
        self.next_spare = 0.0           # time.monotonic() from which a spare may be forked
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)   # signals arrived

    # -- the loop ----------------------------------------------------------------------------

    def serve(self) -> None:
        """Answer until stopped (a stop request, SIGTERM or SIGINT, or --idle) and the runs
        in progress have ended."""
        asked_to_stop: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _frame: asked_to_stop.append(signum))
        signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)    # wakes the select
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        last = time.monotonic()
        self.listener.setblocking(False)
        while not (self.stopping and not self.children):
            self._reap()
            if asked_to_stop:
                self._stop()
            if self._spare_due():
                self.spare = fork_spare(self._leave_server, _run_handed_over)
                if self.spare is None:              # (no fork: a process limit, say)
                    self.next_spare = time.monotonic() + SPARE_RETRY_SECONDS
            waited = [self.wake_r] if self.stopping else [self.wake_r, self.listener]
            readable = select.select(waited, [], [], POLL_SECONDS)[0]
            if self.wake_r in readable:
                _drain(self.wake_r)
            if self.stopping or self.listener not in readable:
                if self.idle and not self.children and time.monotonic() - last > self.idle:
                    self._stop()
                continue
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                continue
            last = time.monotonic()
            conn.settimeout(REQUEST_SECONDS)
            try:
                self._answer(conn)
            except (OSError, EOFError, ValueError):
                pass
            if conn.fileno() >= 0 and conn not in self.children.values():
                conn.close()

    def _answer(self, conn: socket.socket) -> None:
        pid, uid, gid = _peer_credentials(conn)
        if (uid, gid) != (os.getuid(), os.getgid()):
            return                          # not our user: not a word
        received = wire.receive(conn, max_fds=3)
        if received is None:
            return
        message, fds = received
        try:
            kind = message[0]
            if kind == "status":
                self._reap()
                c = self.counts
                wire.send(conn, ("status", c.served, c.refused, c.last_refusal,
                                 len(self.children), os.getpid(), c.by_spare,
                                 *self._spare_state()))
            elif kind == "stop":
                self._stop()            # first: `stop; start` must find the home free
                wire.send(conn, ("stopping",))
            elif kind in ("run", "run-here") and len(fds) == 3 and len(message) == 4:
                origin, argv, environ = _run_request(message)
                here = kind == "run-here"
                reason, context = self._refusal(pid, origin, environ, here)
                if reason is not None:
                    self.counts = self.counts._replace(refused=self.counts.refused + 1,
                                                       last_refusal=reason)
                    wire.send(conn, ("refused", reason))
                    return
                conn.settimeout(None)   # the tracer's wait on it lasts the run
                request = ("run", pid, context.umask, argv, environ, here)
                child = self._hand_to_spare(conn, request, fds)
                if child is not None:
                    self.counts = self.counts._replace(by_spare=self.counts.by_spare + 1)
                else:
                    child = os.fork()
                    if child == 0:      # pragma: no cover - the forked tracer
                        self._leave_server()
                        _run_forked(conn, pid, context.umask, argv, environ, fds, here)
                self.children[child] = conn
                self.counts = self.counts._replace(served=self.counts.served + 1)
        finally:
            for fd in fds:
                os.close(fd)

    def _spare_state(self) -> tuple[str, int]:
        """The spare's state for `status` ("ready", "copying" its pages, or "none") and pid."""
        if self.spare is None:
            return "none", 0
        return ("ready" if self.spare.is_ready() else "copying"), self.spare.pid

    def _spare_due(self) -> bool:
        """Whether to fork a spare now: none is there, and no run goes on (a spare copying
        its pages would slow it: they share the CPUs)."""
        return (self.spare is None and not self.children and not self.stopping
                and self.spares_wanted and time.monotonic() >= self.next_spare)

    def _hand_to_spare(self, conn: socket.socket, request: tuple, fds: list[int]
                       ) -> int | None:
        """The pid of the spare that took this run, or None: none was ready (still copying
        its pages, or dead), and the caller forks a tracer."""
        spare, self.spare = self.spare, None    # the next is forked once no run goes on
        if spare is None:
            return None
        if not spare.is_ready():
            spare.end()                 # still copying: it would slow the run forked now
            return None
        return spare.pid if spare.hand_over(conn, request, fds) else None

    def _leave_server(self) -> None:
        """In a forked tracer or spare: let go of what only the server holds."""
        signal.set_wakeup_fd(-1)
        os.close(self.wake_r)
        os.close(self.wake_w)
        self.listener.close()
        os.close(self.lock)             # a new server may start while this run goes on
        for other in self.children.values():
            other.close()
        self.code.close()

    def _refusal(self, pid: int, origin: tuple, environ: dict[bytes, bytes], here: bool
                 ) -> tuple[str | None, peer.ProcessContext | None]:
        """Why the server will not fork this client's run (None: it will), and the client's
        context, read for it (the run takes its umask). here: the client forks the program
        (it may have a terminal)."""
        if not runs_this_code(origin):
            return f"the client's appvirt or interpreter is another ({origin})", None
        if peer.interpreter_env(environ) != self.interpreter_env:
            return "the client's interpreter variables (PYTHON*, LC_*, LANG) differ", None
        if self.code.changed():
            self._stop()
            return "appvirt's code changed since the server started (it exits)", None
        try:
            context = peer.read_context(pid)
        except OSError as e:
            return f"the client's /proc cannot be read ({e.strerror})", None
        return peer.refusal(self.context, context, terminal_ok=here), context

    def _reap(self) -> None:
        while self.children or self.spare:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.spare is not None and pid == self.spare.pid:
                self.spare.channel.close()  # killed: another, in a while
                self.spare = None
                self.next_spare = time.monotonic() + SPARE_RETRY_SECONDS
                continue
            conn = self.children.pop(pid, None)
            if conn is not None:
                try:            # a tracer that ended normally said so itself, and its
                    wire.send(conn, ("status", status))     # client may be gone
                except OSError:
                    pass
                conn.close()

    def _stop(self) -> None:
        """Take no more runs; the loop ends when the running ones have. The socket and the
        lock go now, so a new server may start while those runs finish."""
        if not self.stopping:
            self.stopping = True
            try:
                os.unlink(self.path)
            except OSError:
                pass
            self.listener.close()
            os.close(self.lock)
            if self.spare is not None:
                self.spare.end()
                self.spare = None


def runs_this_code(origin: tuple) -> bool:
    """Whether a client of this origin would run this server's code cold: a Python client's
    ORIGIN, or the C client's (C_ORIGIN, the interpreter of the script it would become),
    naming this server's interpreter: the same file and the same venv, whose packages are
    the server's (the PYTHON* variables are compared apart)."""
    if origin == ORIGIN:
        return True
    if len(origin) != 2 or origin[0] != C_ORIGIN or not isinstance(origin[1], bytes):
        return False
    interpreter = os.fsdecode(origin[1])
    return (os.path.isabs(interpreter) and os.path.realpath(interpreter) == ORIGIN[2]
            and prefix_of(interpreter) == sys.prefix)


def _run_request(message: tuple) -> tuple[tuple, list[str], dict[bytes, bytes]]:
    """A run request's origin, command line and environment, as either client sends them
    (ValueError: not a run request). The command line is a Python client's strs, or the C
    client's bytes as this interpreter decodes its own arguments."""
    _, origin, argv, environ = message
    if (not isinstance(origin, tuple) or not isinstance(argv, list)
            or not all(isinstance(a, (str, bytes)) for a in argv)
            or not isinstance(environ, dict)
            or not all(type(k) is bytes and type(v) is bytes for k, v in environ.items())):
        raise ValueError("not a run request")
    return origin, [os.fsdecode(a) for a in argv], environ


def prefix_of(interpreter: str) -> str:
    """sys.prefix of the interpreter at this path, which is this server's file: its venv's
    directory (site.venv: a pyvenv.cfg beside it or one level up), else the base prefix."""
    bin_dir = os.path.dirname(os.path.abspath(interpreter))
    venv = os.path.dirname(bin_dir)
    if any(os.path.isfile(os.path.join(d, "pyvenv.cfg")) for d in (bin_dir, venv)):
        return venv
    return sys.base_prefix


def _listen(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        os.unlink(path)                 # a dead server's (the lock says none is alive)
    except FileNotFoundError:
        pass
    dirfd = os.open(os.path.dirname(path), os.O_PATH | os.O_CLOEXEC)
    try:
        sock.bind(f"/proc/self/fd/{dirfd}/{wire.SOCKET_NAME}")   # any length of home
    finally:
        os.close(dirfd)
    sock.listen(64)
    return sock


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 256):
            pass
    except BlockingIOError:
        pass


def _peer_credentials(conn: socket.socket) -> tuple[int, int, int]:
    import struct
    data = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", data)


# -- the forked tracer -----------------------------------------------------------------------

def _run_handed_over(conn: socket.socket, request: tuple, fds: list[int]
                     ) -> None:  # pragma: no cover - a spare becoming a run's tracer
    """_run_forked, for the request a spare was handed (Server._answer made it)."""
    _, client, umask, argv, environ, here = request
    _run_forked(conn, client, umask, argv, environ, fds, here)


def _run_forked(conn: socket.socket, client: int, umask: int,
                argv: list[str], environ: dict[bytes, bytes], fds: list[int],
                here: bool) -> None:  # pragma: no cover
    """Become the client's cold appvirt, run its command line, report; never returns.
    here: the client forks the program (tracer/clientspawn.py)."""
    status = 125
    try:
        try:
            _take_over(client, umask, environ, fds)
        except Exception as e:  # noqa: BLE001 - whatever it is, the client starts cold
            wire.send(conn, ("refused", f"its context could not be given to a run: {e}"))
            os._exit(0)
        wire.send(conn, ("pid", os.getpid()))
        _die_with_client(conn)
        if here:
            from ..tracer import clientspawn
            clientspawn.current = clientspawn.ClientSpawner(conn)
        from ..entry import main
        sys.argv = ["appvirt", *argv]
        status = main(argv)
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        wire.send(conn, ("exit", status))
    finally:
        os._exit(status)


def _take_over(client: int, umask: int, environ: dict[bytes, bytes], fds: list[int]) -> None:
    """The client's standard fds, cwd, environment, umask, limits, CPUs and nice value."""
    os.setsid()     # no controlling terminal (a foreground server's terminal is not the
                    # run's; a run-here's program has the client's from the client); the
                    # server's group signals are not the run's
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    atexit._clear()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    cwd = os.open(f"/proc/{client}/cwd", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fchdir(cwd)
    finally:
        os.close(cwd)
    os.umask(umask)
    for limit in RLIMITS:
        resource.setrlimit(limit, resource.prlimit(client, limit))
    os.sched_setaffinity(0, os.sched_getaffinity(client))
    os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, client))
    os.environb.clear()
    os.environb.update(environ)


def _die_with_client(conn: socket.socket) -> None:  # pragma: no cover - the forked tracer
    """Die (and take the run along) when the client's end of the connection closes: the
    client sends nothing more, so that is its end (killed, say). Told by SIGIO, not by a
    thread waiting on it: a second thread would switch glibc to its multi-threaded paths
    (locked malloc, cancellable syscalls), 5% more on find's 22,000 stops."""
    fd = conn.fileno()

    def check(_signum=None, _frame=None) -> None:
        try:
            if conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                return
        except BlockingIOError:
            return
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGKILL)

    signal.signal(signal.SIGIO, check)
    fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)
    check()                             # gone before it could tell


# -- starting, stopping, asking --------------------------------------------------------------

def _lock(home: str) -> int:
    """The home's server lock, held (an fd); ServerError if another server holds it."""
    run_dir = os.path.join(home, "run")
    try:
        os.makedirs(run_dir, mode=0o700, exist_ok=True)
        os.chmod(run_dir, 0o700)
        lock = os.open(os.path.join(run_dir, "server.lock"),
                       os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise ServerError(f"cannot use {run_dir}: {e.strerror}") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        raise ServerError(f"a server already runs for {home}") from None
    return lock


def serve_here(home: str, idle: float) -> None:
    """Serve in this process until stopped or idle (`start --foreground`, for a service
    manager: it keeps its standard fds, and SIGTERM stops it as a stop request does)."""
    lock = _lock(home)
    preload()
    Server(home, idle, lock).serve()


def start(home: str, idle: float) -> int:
    """Start a server for this home in the background; its pid. ServerError if one runs."""
    lock = _lock(home)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the daemon's parent and the daemon
        os.close(ready_r)
        os.setsid()
        if os.fork():
            os._exit(0)
        _daemon(home, idle, lock, ready_w)
    os.close(ready_w)
    os.close(lock)                      # the daemon holds it
    os.waitpid(pid, 0)
    with os.fdopen(ready_r, "rb") as f:
        word = f.read().decode(errors="replace")
    if not word.startswith("ok "):
        raise ServerError(f"the server did not start: {word or 'it died'}")
    return int(word[3:])


def _daemon(home: str, idle: float, lock: int, ready: int) -> None:  # pragma: no cover
    """The server process: says "ok PID" or what failed on `ready`, then serves."""
    status = 1
    try:
        os.chdir("/")
        quiet = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(quiet, fd)
        os.close(quiet)
        preload()
        server = Server(home, idle, lock)
        os.write(ready, f"ok {os.getpid()}".encode())
        os.close(ready)
        server.serve()
        status = 0
    except BaseException as e:          # noqa: BLE001 - said to `appvirt server start`
        why = e.message if isinstance(e, AppvirtError) else f"{type(e).__name__}: {e}"
        try:
            os.close(lock)              # free before the word: `start` may be retried at once
        except OSError:
            pass
        try:
            os.write(ready, why.encode())
        except OSError:
            pass
    finally:
        os._exit(status)


def ask(home: str, message: tuple) -> tuple | None:
    """The server's answer to status or stop; None when no server runs."""
    from .client import connect
    sock = connect(home)
    if sock is None:
        return None
    try:
        wire.send(sock, message)
        answer = wire.receive(sock)
    except (OSError, EOFError, ValueError) as e:
        raise ServerError(f"the server did not answer: {e}") from None
    finally:
        sock.close()
    return None if answer is None else answer[0]
