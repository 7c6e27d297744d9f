"""Path calls that only read: answered by the tracer, or done by the kernel on the host path.

Mirrored calls (stat, statx, access, readlink, statfs, getxattr, listxattr): the tracer makes
the same call on the host path it decided and copies the kernel's output into the program's
buffer, so the call never reaches the kernel from the program (no exit stop, nothing left to
race). The others (chdir, inotify ...) give the kernel the host path from the slot.
"""

import os
import struct
from collections.abc import Callable
from typing import NamedTuple

from ..core.action import Action, Allow, Decision, Deny, Emulate, Note, Rewrite
from ..core.context import Context
from ..core.stop import Stop
from ..fs.resolver import Resolved
from .paths import AT_FDCWD, AT_SYMLINK_NOFOLLOW, Decided, Operand, decide, slot_path
from .statmeta import (keep_stat_identity, keep_statx_identity, meta_table, pack_stat,
                       patch_at_exit, patch_stat, patch_statx)

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


def kept_dir(ctx: Context, r: Resolved) -> bytes | None:
    """The host directory the kernel must hold (as an fd, a cwd) for r, a directory that
    keeps the host's identity (OverlayFS.kept_identity); None for everything else."""
    if r.magic is not None or not r.is_dir:
        return None
    kept = ctx.fs.kept_identity(r.path)
    return kept[0] if kept is not None else None


def held_path(ctx: Context, d: Decided) -> bytes:
    """host_path for a call after which the kernel holds the object (a cwd): kept_dir's."""
    kept = kept_dir(ctx, d.r)
    if kept is not None:
        return kept + b"/" if d.r.trailing_slash else kept
    return host_path(ctx, d)


def _note(d: Decided, host: bytes) -> Note:
    moved = host.rstrip(b"/") != d.r.path and d.r.magic is None
    return Note(rule=d.note.rule, path=d.r.path, host_path=host if moved else None)


class Mirror(NamedTuple):
    """How to answer a read-only path call in the tracer (see tracer.hostcalls)."""

    run: str                                        # the syscall the tracer makes
    build: Callable[[Stop, Context, bytes, bool, int], tuple]  # (stop, ctx, path, follow, room)
    out_arg: int | None = None                      # its output buffer argument
    guest_buf: int | None = None                    # where that buffer is in the program's call
    out_size: Callable[[Stop], int] | None = None   # how big it is
    copy_all: bool = True                           # False: copy only `result` bytes
    proc_text: bool = False                         # output is a path /proc may show (readlink)
    nlink: tuple[int, str] | None = None            # (offset, struct format) of st_nlink
    identity: Callable[[bytearray, os.stat_result], None] | None = None   # with nlink
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
                    kept = ctx.fs.kept_identity(d.r.path)
                    if kept is not None and m.identity is not None:
                        m.identity(data, kept[1])
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


def kernel_read(op: Operand, path_arg_out: int | None = None, *, holds: bool = False
                ) -> Callable[[Stop, Context], Action]:
    """A reading call the kernel must make itself (it changes the caller's state: chdir,
    inotify): the host path goes to it from the slot. holds: the kernel keeps the object (a
    cwd), so a directory that keeps the host's identity is given as the host's."""
    def handler(stop: Stop, ctx: Context) -> Action:
        d = decide(stop, ctx, op)
        if isinstance(d, Deny):
            return d
        if d.fd_form:
            return Allow(d.note)
        host = held_path(ctx, d) if holds else host_path(ctx, d)
        args: list[tuple[int, object]] = [(op.path, slot_path(host))]
        if op.dirfd is not None:
            args.append((op.dirfd, AT_FDCWD))
        note = _note(d, host)
        return Rewrite(tuple(args), note=note,  # type: ignore[arg-type]
                       decision=Decision.REDIRECTED if note.host_path else Decision.ALLOWED)
    handler.__doc__ = (f"Resolve and decide path argument {op.path}; the kernel gets the host "
                       "path from the slot.")
    return handler


def _nofollow(follow: bool) -> int:
    return 0 if follow else AT_SYMLINK_NOFOLLOW


def _fixed(n: int) -> Callable[[Stop], int]:
    return lambda s: n


def _sized(arg: int) -> Callable[[Stop], int]:
    return lambda s: min(s.arg(arg), OUT_MAX) if s.sarg(arg) > 0 else 0


STAT_NLINK, STATX_NLINK = (16, "<Q"), (16, "<I")     # st_nlink / stx_nlink
STAT = Mirror("newfstatat", lambda s, c, p, f, n: (AT_FDCWD, p, None, _nofollow(f)), 2, 1,
              _fixed(STAT_SIZE), nlink=STAT_NLINK, identity=keep_stat_identity, meta=patch_stat,
              from_lookup=pack_stat)
NEWFSTATAT = Mirror("newfstatat", lambda s, c, p, f, n: (
    AT_FDCWD, p, None, _nofollow(f) | (s.arg(3) & AT_NO_AUTOMOUNT)), 2, 2, _fixed(STAT_SIZE),
    nlink=STAT_NLINK, identity=keep_stat_identity, meta=patch_stat, from_lookup=pack_stat)
STATX = Mirror("statx", lambda s, c, p, f, n: (
    AT_FDCWD, p, _nofollow(f) | (s.arg(2) & (AT_NO_AUTOMOUNT | AT_STATX_SYNC_TYPE)),
    s.arg(3) & 0xFFFFFFFF, None), 4, 4, _fixed(STATX_SIZE), nlink=STATX_NLINK,
    identity=keep_statx_identity, meta=patch_statx)
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
