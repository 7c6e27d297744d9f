"""Starting the warm-start server on demand: a cold `appvirt run` line that the server would
have taken (not itself sandboxed; with a controlling terminal, only from the C client, which
alone can have a run served there) and that found no server leaves one starting in the
background, so the runs after it start warm (README, "Warm starts").

The server is a new interpreter (`python -P -m appvirt.warm.autostart HOME`), spawned after
the run has ended, in a session of its own, with /dev/null for its standard fds, none of the
client's other fds, and the client's environment, which the server compares with its
clients' (peer.py). It exits after AUTO_IDLE seconds without a request, or when appvirt's code
changes. APPVIRT_SERVER=manual asks a running server but starts none; off does neither.

It runs at the end of every cold run: builtin modules, and fcntl once there is a lock to try.
"""

import os
import sys

from .client import SERVER_ENV, has_terminal, parse_status

AUTO_IDLE = 600.0           # seconds: an idle server started on demand then exits
# /proc/self/status fields of a sandboxed process, which a server spawned from it would
# inherit: traced (its tracer would wait for the server as for any tracee), filtered, or
# with no_new_privs. appvirt's own programs have all three; they leave nothing behind.
_SANDBOXED = ("TracerPid", "Seccomp", "NoNewPrivs")


def wanted(environ=os.environ) -> bool:
    """Whether a cold run may start a server (APPVIRT_SERVER unset, empty or `auto`)."""
    return environ.get(SERVER_ENV, "auto") in ("", "auto")


def sandboxed(status: bytes) -> bool:
    """Whether a process of this /proc/PID/status is traced, filtered or has no_new_privs."""
    fields = parse_status(status.decode(errors="replace"))
    return any(fields.get(name, "0") not in ("0", "") for name in _SANDBOXED)


def server_held(home: str) -> bool:
    """Whether a server of this home runs or is starting (it holds run/server.lock)."""
    import fcntl
    try:
        fd = os.open(os.path.join(home, "run", "server.lock"), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return True                 # cannot tell: start none
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)      # let go of at the close
    except OSError:
        return True                 # held (EWOULDBLOCK), or cannot tell: start none
    finally:
        os.close(fd)
    return False


def start_after_cold_run(home: str, terminal_ok: bool = False) -> int | None:
    """Start a server for home in the background if a cold run may (see the module); its
    pid, or None. terminal_ok: the C client asked (it can hand over a run with a terminal).
    Never raises: the run's own status is what the caller reports."""
    try:
        if not wanted():
            return None
        if has_terminal() and not terminal_ok:
            return None
        with open("/proc/self/status", "rb") as f:
            status = f.read()
        if sandboxed(status) or server_held(home):
            return None
        return _spawn(home)
    except (OSError, ValueError):
        return None


def _spawn(home: str) -> int:
    """The server, spawned detached; its pid (reaped by whoever adopts it)."""
    import _signal
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDWR, 0),
               (os.POSIX_SPAWN_DUP2, 0, 1), (os.POSIX_SPAWN_DUP2, 0, 2)]
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and _inheritable(fd):
            actions.append((os.POSIX_SPAWN_CLOSE, fd))     # a pipe's reader waits for EOF
    defaults = set(_signal.valid_signals()) - {_signal.SIGKILL, _signal.SIGSTOP}
    return os.posix_spawn(sys.executable,
                          [sys.executable, "-P", "-m", __name__, home, repr(AUTO_IDLE)],
                          os.environ, file_actions=actions, setsid=True, setsigmask=(),
                          setsigdef=defaults)


def _inheritable(fd: int) -> bool:
    try:
        return os.get_inheritable(fd)
    except OSError:                 # the listing's own fd, closed since
        return False


def main(argv: list[str]) -> int:
    """The spawned server: serve home until idle for argv[1] seconds, stopped, or the code
    changes. Exits 0 at once when another server holds the home (two cold runs raced)."""
    os.chdir("/")
    from .server import ServerError, serve_here
    try:
        serve_here(argv[0], float(argv[1]))
    except ServerError:
        pass
    return 0


if __name__ == "__main__":
    os._exit(main(sys.argv[1:]))
