"""Exec: the program, and each "#!" interpreter on the way, decided on its resolved path
(declared in syscalls/files.py)."""

from __future__ import annotations

import errno
import os
import stat

from ..core import sysnums
from ..core.action import Action, Allow, Decision, Deny, Note, Rewrite, SlotData
from ..core.context import Context
from ..core.stop import Stop
from ..errors import GuestErrno
from ..fs.resolver import Resolved
from .filemodes import Intent, check
from .paths import AT_FDCWD, slot_path

BINPRM_BUF_SIZE = 256          # the kernel reads this much of a file to find "#!"
MAX_SCRIPT_DEPTH = 4           # and follows at most this many interpreters (BINPRM_MAX_RECURSION)
NR_EXECVE = sysnums.nr("execve")


def _shebang(host: bytes) -> tuple[bytes, bytes | None] | None:
    """(interpreter, optional argument) of a "#!" script, as the kernel parses them. Only a
    regular file is one (the kernel runs nothing else), and only a regular file is read: the
    open of a FIFO the program names would block the tracer until someone writes to it."""
    try:
        fd = os.open(host, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            head = os.read(fd, BINPRM_BUF_SIZE)
        finally:
            os.close(fd)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].strip(b" \t")
    if not line:
        return None
    interp, _, rest = line.partition(b" ")
    interp, _, tabbed = interp.partition(b"\t")
    rest = (tabbed + b" " + rest if tabbed else rest).strip(b" \t")
    return interp, rest or None


def _argv(ctx: Context, stop: Stop, addr: int, limit: int) -> list[int]:
    """The program's argv pointers (up to the NULL), at most `limit` of them."""
    out: list[int] = []
    while addr and len(out) < limit:
        p = int.from_bytes(ctx.read(stop.tid, addr + 8 * len(out), 8), "little")
        if p == 0:
            return out
        out.append(p)
    if addr == 0:
        return out
    raise GuestErrno(errno.E2BIG, "too many arguments for a script run from the overlay")


def _exec_refused(ctx: Context, path: bytes) -> Deny | None:
    """EACCES when the policy's exec rules refuse the program (or a #! interpreter) at path."""
    if not ctx.policy.processes.exec_rules:
        return None
    allowed, rule = ctx.policy.processes.exec_decision(path)
    if allowed:
        return None
    return Deny(errno.EACCES, Note(rule=rule, path=path, hint=(
        f"to allow it, add a later processes.exec rule {{path: '{os.fsdecode(path)}', "
        "action: allow}")))


def _may_run(ctx: Context, r: Resolved) -> tuple[Deny | None, Note]:
    """Whether the program or #! interpreter at r may run: the file modes, its existence,
    the exec rules. (refusal or None, the file-mode note)."""
    deny, note = check(ctx.policy, r, Intent.READ, ctx.is_member)
    if deny is not None:
        return Deny(deny.errno, note), note
    if not r.exists:
        return Deny(errno.ENOENT, note, native=True), note
    return _exec_refused(ctx, r.path), note


def sys_execve(stop: Stop, ctx: Context) -> Action:
    """Implement execve(2)/execveat(2): decide on the resolved path. The kernel gets the
    program's own path bytes when the host alone resolves them (and any "#!" interpreter) to
    the same files, so `$0` and AT_EXECFN stay what it passed. Otherwise (a program or an
    interpreter in the upper layer) the tracer does what the kernel's script loader does: it
    runs the interpreter's host path with argv [interpreter, optional arg, script, args...]."""
    at = stop.name == "execveat"
    path_arg, argv_arg = (1, 2) if at else (0, 1)
    path = stop.path(path_arg)
    if path is None:
        return Deny(errno.EFAULT, native=True)
    if at and path == b"" and stop.arg(4) & 0x1000:
        # fexecve: the fd was opened, and its file checked, before; only the exec rules
        # remain to be asked (about the file's path, when it has one).
        if not ctx.policy.processes.exec_rules:
            return Allow()
        obj = ctx.fd_object(stop.tid, stop.sarg(0))
        return (_exec_refused(ctx, obj.path) if obj.magic is None else None) or Allow()
    r = ctx.resolve(stop, stop.sarg(0) if at else None, path, follow=True)
    refused, note = _may_run(ctx, r)
    if refused is not None:
        return refused
    if r.magic is not None:
        return Rewrite(((path_arg, slot_path(path)),), note=note, decision=Decision.ALLOWED)
    host = ctx.fs.host_for_read(r.path)
    chain: list[tuple[bytes, bytes | None]] = []      # interpreters to put in front, in order
    native = host == r.path and ctx.host_resolves_alike(stop, path, r.path)
    while (sb := _shebang(host)) is not None and len(chain) < MAX_SCRIPT_DEPTH:
        interp, arg = sb
        ri = ctx.resolve(stop, None, interp, follow=True)
        refused, _ = _may_run(ctx, ri)
        if refused is not None:
            return refused
        chain.append(sb)
        host = ctx.fs.host_for_read(ri.path)
        native = native and host == ri.path and ctx.host_resolves_alike(stop, interp, ri.path)
    if native:
        return Rewrite(((path_arg, slot_path(path)),), note=note, decision=Decision.ALLOWED)
    if not chain:
        args: list[tuple[int, object]] = [(path_arg, slot_path(host))]
        if at:
            args.append((0, AT_FDCWD))
        return Rewrite(tuple(args), note=Note(rule=note.rule, path=r.path, host_path=host),  # type: ignore[arg-type]
                       decision=Decision.REDIRECTED)
    # argv as the kernel's script loader builds it, innermost interpreter first.
    words = [path]
    for interp, arg in chain:
        words = [interp] + ([arg] if arg else []) + words
    rest = _argv(ctx, stop, stop.arg(argv_arg), 1000)[1:]
    strings = [SlotData(w + b"\0") for w in words]
    # blob 0: the interpreter's host path; blob 1: the argv table, whose first entries point
    # at the strings (blobs 2...), the rest at the program's own arguments.
    table = SlotData(b"".join([bytes(8 * len(words))] + [p.to_bytes(8, "little") for p in rest]
                              + [bytes(8)]),
                     refs=tuple((8 * i, 2 + i) for i in range(len(words))))
    return Rewrite(((0, slot_path(host)), (1, table), (2, stop.arg(argv_arg + 1))),
                   nr=NR_EXECVE, extra=tuple(strings),
                   note=Note(rule=note.rule, path=r.path, host_path=host,
                             detail="#! interpreter run by the tracer"),
                   decision=Decision.REDIRECTED)



HANDLERS = {"execve": sys_execve, "execveat": sys_execve}
