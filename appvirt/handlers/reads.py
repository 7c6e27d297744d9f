"""Path calls that only read: answered by the tracer, or done by the kernel on the host path.

Mirrored calls (stat, statx, access, readlink, statfs, getxattr, listxattr): the tracer makes
the same call on the host path it decided and copies the kernel's output into the program's
buffer, so the call never reaches the kernel from the program (no exit stop, nothing left to
race). The others (chdir, exec, inotify ...) give the kernel the host path from the slot.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from ..core import sysnums
from ..core.action import Action, Allow, Decision, Deny, Emulate, Note, Rewrite, SlotData
from ..core.context import Context
from ..core.stop import Stop
from ..errors import GuestErrno
from ..fs.resolver import Resolved
from .filemodes import Intent, check
from .paths import AT_FDCWD, AT_SYMLINK_NOFOLLOW, Decided, Operand, decide, slot_path
from .statmeta import meta_table, pack_stat, patch_at_exit, patch_stat, patch_statx

STAT_SIZE, STATX_SIZE, STATFS_SIZE = 144, 256, 120
AT_NO_AUTOMOUNT, AT_EACCESS, AT_STATX_SYNC_TYPE = 0x800, 0x200, 0x6000
XATTR_NAME_MAX = 255
OUT_MAX = 1 << 16


def host_path(ctx: Context, d: Decided) -> bytes:
    """Where the kernel finds what the program names (magic /proc links: as they are)."""
    if d.r.magic is not None:
        return d.r.kernel_path
    host = ctx.fs.host_for_read(d.r.path)
    return host + b"/" if d.r.trailing_slash and host != b"/" else host


def _note(d: Decided, host: bytes) -> Note:
    moved = host.rstrip(b"/") != d.r.path and d.r.magic is None
    return Note(rule=d.note.rule, path=d.r.path, host_path=host if moved else None)


@dataclass(frozen=True, slots=True)
class Mirror:
    """How to answer a read-only path call in the tracer (see tracer.hostcalls)."""

    run: str                                        # the syscall the tracer makes
    build: Callable[[Stop, Context, bytes, bool, int], tuple]  # (stop, ctx, path, follow, room)
    out_arg: int | None = None                      # its output buffer argument
    guest_buf: int | None = None                    # where that buffer is in the program's call
    out_size: Callable[[Stop], int] | None = None   # how big it is
    copy_all: bool = True                           # False: copy only `result` bytes
    proc_text: bool = False                         # output is a path /proc may show (readlink)
    nlink: tuple[int, str] | None = None            # (offset, struct format) of st_nlink
    meta: Callable[[bytes, object], bytes] | None = None   # patches in recorded owners
    # The answer from the lookup's own stat of the object, when the call is a plain stat of
    # it: the resolution just made that very call on the same host object.
    from_lookup: Callable[[os.stat_result], bytes] | None = None


def mirror_call(op: Operand, m: Mirror) -> Callable[[Stop, Context], Action]:
    """Resolve, decide, then answer from the tracer. Processes that changed their ids get the
    kernel's answer instead (the tracer must not act with ids the program no longer has)."""
    fallback = kernel_read(op)

    def handler(stop: Stop, ctx: Context) -> Action:
        path = stop.path(op.path)
        if path == b"" and op.empty_means_fd and op.empty_means_fd(stop):
            # The fd's own object: no path involved, but maybe a recorded owner.
            if m.meta is None or m.guest_buf is None:
                return Allow()
            return patch_at_exit(ctx, m.guest_buf, statx=m.meta is patch_statx)
        if not ctx.same_credentials(stop.tid):
            return fallback(stop, ctx)
        d = decide(stop, ctx, op)
        if isinstance(d, Deny):
            return d
        follow = op.follow(stop) if callable(op.follow) else op.follow
        host = host_path(ctx, d)
        size = m.out_size(stop) if m.out_size else 0
        # A link's text is translated before it is cut to the program's buffer: ask for all.
        room = max(size, 4096) if m.proc_text and size > 0 else size
        out = {m.out_arg: room} if m.out_arg is not None and size > 0 else {}
        st = d.r.st
        if m.from_lookup is not None and type(st) is os.stat_result and d.r.magic is None \
                and not d.r.trailing_slash and out:
            rv, bufs = 0, {m.out_arg: m.from_lookup(st)}
        else:
            rv, bufs = ctx.host_call(m.run, m.build(stop, ctx, host, follow, room), out)
        note = _note(d, host)
        if rv < 0:
            return Deny(-rv, note, native=True)
        writes: tuple[tuple[int, bytes], ...] = ()
        if out and m.guest_buf is not None:
            data = bufs[m.out_arg] if m.copy_all else bufs[m.out_arg][:rv]  # type: ignore[index]
            if m.nlink is not None and d.r.magic is None:
                # A directory merged from both layers counts its merged subdirectories.
                n = ctx.fs.merged_nlink(d.r.path)
                if n is not None:
                    off, fmt = m.nlink
                    data = bytearray(data)
                    struct.pack_into(fmt, data, off, n)
                    data = bytes(data)
            if m.meta is not None and (table := meta_table(ctx)) is not None:
                data = m.meta(data, table)
            if m.proc_text:
                if d.r.path.startswith(b"/proc/") and data.startswith(b"/"):
                    # A magic link shows a host path: show the program its own name for it.
                    data = ctx.view.to_guest(data) or data
                rv = min(len(data), size)
                data = data[:rv]
            writes = ((stop.arg(m.guest_buf), data),) if data else ()
        return Emulate(rv, writes, note, Decision.ALLOWED)
    handler.__doc__ = (f"Resolve and decide path argument {op.path}; answer with {m.run}(2) "
                       "made by the tracer on the host path.")
    return handler


def kernel_read(op: Operand, path_arg_out: int | None = None
                ) -> Callable[[Stop, Context], Action]:
    """A reading call the kernel must make itself (it changes the caller's state: chdir,
    inotify): the host path goes to it from the slot."""
    def handler(stop: Stop, ctx: Context) -> Action:
        d = decide(stop, ctx, op)
        if isinstance(d, Deny):
            return d
        if d.fd_form:
            return Allow(d.note)
        host = host_path(ctx, d)
        args: list[tuple[int, object]] = [(op.path, slot_path(host))]
        if op.dirfd is not None:
            args.append((op.dirfd, AT_FDCWD))
        note = _note(d, host)
        return Rewrite(tuple(args), note=note,  # type: ignore[arg-type]
                       decision=Decision.REDIRECTED if note.host_path else Decision.ALLOWED)
    handler.__doc__ = (f"Resolve and decide path argument {op.path}; the kernel gets the host "
                       "path from the slot.")
    return handler


BINPRM_BUF_SIZE = 256          # the kernel reads this much of a file to find "#!"
MAX_SCRIPT_DEPTH = 4           # and follows at most this many interpreters (BINPRM_MAX_RECURSION)
NR_EXECVE = sysnums.nr("execve")


def _shebang(host: bytes) -> tuple[bytes, bytes | None] | None:
    """(interpreter, optional argument) of a "#!" script, as the kernel parses them."""
    try:
        fd = os.open(host, os.O_RDONLY | os.O_CLOEXEC)
        try:
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


def _nofollow(follow: bool) -> int:
    return 0 if follow else AT_SYMLINK_NOFOLLOW


def _fixed(n: int) -> Callable[[Stop], int]:
    return lambda s: n


def _sized(arg: int) -> Callable[[Stop], int]:
    return lambda s: min(s.arg(arg), OUT_MAX) if s.sarg(arg) > 0 else 0


STAT_NLINK, STATX_NLINK = (16, "<Q"), (16, "<I")     # st_nlink / stx_nlink
STAT = Mirror("newfstatat", lambda s, c, p, f, n: (AT_FDCWD, p, None, _nofollow(f)), 2, 1,
              _fixed(STAT_SIZE), nlink=STAT_NLINK, meta=patch_stat, from_lookup=pack_stat)
NEWFSTATAT = Mirror("newfstatat", lambda s, c, p, f, n: (
    AT_FDCWD, p, None, _nofollow(f) | (s.arg(3) & AT_NO_AUTOMOUNT)), 2, 2, _fixed(STAT_SIZE),
    nlink=STAT_NLINK, meta=patch_stat, from_lookup=pack_stat)
STATX = Mirror("statx", lambda s, c, p, f, n: (
    AT_FDCWD, p, _nofollow(f) | (s.arg(2) & (AT_NO_AUTOMOUNT | AT_STATX_SYNC_TYPE)),
    s.arg(3) & 0xFFFFFFFF, None), 4, 4, _fixed(STATX_SIZE), nlink=STATX_NLINK,
    meta=patch_statx)
STATFS = Mirror("statfs", lambda s, c, p, f, n: (p, None), 1, 1, _fixed(STATFS_SIZE))


def access(mode_arg: int, flags_arg: int | None) -> Mirror:
    return Mirror("faccessat2", lambda s, c, p, f, n: (
        AT_FDCWD, p, s.arg(mode_arg) & 7,
        _nofollow(f) | ((s.arg(flags_arg) & AT_EACCESS) if flags_arg is not None else 0)))


def readlink(buf: int, size: int) -> Mirror:
    return Mirror("readlinkat",
                  lambda s, c, p, f, n: (AT_FDCWD, p, None, n),
                  2, buf, _sized(size), copy_all=False, proc_text=True)


def getxattr(name: int, buf: int, size: int) -> Mirror:
    """getxattr/lgetxattr: lgetxattr on the decided path (a final symlink is only left in it
    when the call does not follow)."""
    return Mirror("lgetxattr", lambda s, c, p, f, n: (
        p, c.read_string(s.tid, s.arg(name), XATTR_NAME_MAX + 1), None,
        min(s.arg(size), OUT_MAX)), 2, buf, _sized(size), copy_all=False)


def listxattr(buf: int, size: int) -> Mirror:
    return Mirror("llistxattr", lambda s, c, p, f, n: (p, None, min(s.arg(size), OUT_MAX)),
                  1, buf, _sized(size), copy_all=False)
