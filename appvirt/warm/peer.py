"""Whether a run forked by the warm server would see what its client would give a cold run.

A forked tracer inherits the server's process context, not the client's. What a process can
be handed (its standard fds, cwd, environment, umask, limits, CPUs, nice value) is handed
(server.py); everything else must already be the same, or the run starts cold: the user and
groups, capabilities, no_new_privs, seccomp, being traced, namespaces, cgroup, LSM label,
personality, OOM score, the interpreter's environment and code, and having no controlling
terminal (a forked run could not have the client's; a client that forks the program itself,
a run-here, may have one). The last four also keep a client that is itself sandboxed
(appvirt's own programs are traced and filtered) from running anything outside its sandbox
through the server.
"""

from __future__ import annotations

import errno
import os
from typing import NamedTuple

from .client import parse_status, tty_of_stat

STATUS_FIELDS = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
                 "NoNewPrivs", "Seccomp", "Seccomp_filters")
NAMESPACES = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")
SAME_FILES = ("cgroup", "attr/current", "personality", "oom_score_adj")
# The interpreter's own start (its paths, its encodings) followed these when the server began.
INTERPRETER_ENV_PREFIXES = (b"PYTHON", b"LC_")
INTERPRETER_ENV_NAMES = (b"LANG", b"LANGUAGE")
# ... except this one, which only says whether imports write bytecode (many shells set it).
INTERPRETER_ENV_HARMLESS = (b"PYTHONDONTWRITEBYTECODE",)


class ProcessContext(NamedTuple):
    """What a process cannot hand over to a forked run: compared as a whole."""

    status: tuple[tuple[str, str], ...]     # STATUS_FIELDS, in order
    namespaces: tuple[str, ...]             # NAMESPACES' links, in order
    files: tuple[bytes, ...]                # SAME_FILES' contents, in order
    tracer_pid: int
    tty_nr: int
    umask: int


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.EINVAL):
            return b""          # not on this kernel, or no LSM: the same for both sides
        raise


def read_context(pid: int | str) -> ProcessContext:
    """The context of process pid ("self": this one). OSError if it cannot be read."""
    base = f"/proc/{pid}"
    status = parse_status(_read(f"{base}/status").decode())
    namespaces = []
    for ns in NAMESPACES:
        try:
            namespaces.append(os.readlink(f"{base}/ns/{ns}"))
        except FileNotFoundError:
            namespaces.append("")
    return ProcessContext(
        status=tuple((name, status.get(name, "")) for name in STATUS_FIELDS),
        namespaces=tuple(namespaces),
        files=tuple(_read(f"{base}/{name}") for name in SAME_FILES),
        tracer_pid=int(status.get("TracerPid", "0")),
        tty_nr=tty_of_stat(_read(f"{base}/stat")),
        umask=int(status.get("Umask", "0022"), 8))


def refusal(server: ProcessContext, client: ProcessContext, terminal_ok: bool = False
            ) -> str | None:
    """Why a run forked by the server would differ from the client's cold one; None: it
    would not. terminal_ok: the client forks the program, which keeps its terminal."""
    if client.tracer_pid:
        return "the client is being traced"
    if client.tty_nr and not terminal_ok:
        return "the client has a controlling terminal"
    for (name, mine), (_, theirs) in zip(server.status, client.status):
        if mine != theirs:
            return f"a different {name} ({theirs} against the server's {mine})"
    for name, mine, theirs in zip(NAMESPACES, server.namespaces, client.namespaces):
        if mine != theirs:
            return f"another {name} namespace"
    for name, mine, theirs in zip(SAME_FILES, server.files, client.files):
        if mine != theirs:
            return f"a different {name}"
    return None


def interpreter_env(environ: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """The variables that shaped the interpreter's start (PYTHON*, LC_*, LANG, LANGUAGE)."""
    return {k: v for k, v in environ.items()
            if (k.startswith(INTERPRETER_ENV_PREFIXES) or k in INTERPRETER_ENV_NAMES)
            and k not in INTERPRETER_ENV_HARMLESS}
