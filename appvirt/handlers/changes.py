"""Path calls that change files: made by the tracer, through the overlay.

The tracer performs the change itself on the path it decided (in the upper layer for overlay
and private paths, on the host for passthrough ones) and returns the result, so the kernel
never re-walks a path the program could swap meanwhile (#17) and nothing reaches the host
that the policy did not allow. Calls on an fd that still refers to a host file (fchmod ...)
land on the upper copy too.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat as statmod
import struct
from collections.abc import Callable

from ..core.action import (Action, Allow, Decision, Deny, Emulate, ExitResult, Note,
                           Rewrite)
from ..core.context import Context
from ..core.stop import Stop
from ..errors import GuestErrno
from .filemodes import Intent
from .statmeta import own_created
from .paths import (AT_EMPTY_PATH, AT_FDCWD, AT_REMOVEDIR, AT_SYMLINK_NOFOLLOW, Decided, Operand,
                    W, decide, slash_on_a_non_directory, slashed_removal, slot_path)

UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
AT_SYMLINK_FOLLOW = 0x400
CAP_MKNOD = 27
_libc = ctypes.CDLL(None, use_errno=True)
XATTR_NAME_MAX, XATTR_SIZE_MAX = 255, 65536
Do = Callable[[Stop, Context, list[bytes]], int]


def fd_operand(fd_arg: int, intent: Intent = W) -> Operand:
    """The file behind an fd argument (fchmod, fchown, fsetxattr ...)."""
    return Operand(path=-1, dirfd=fd_arg, intent=intent, follow=True, null_means_fd=True)


Refusal = Callable[[Stop, Context], Deny | None]


def emulated(*ops: Operand, do: Do, refuse: Refusal | None = None
             ) -> Callable[[Stop, Context], Action]:
    """Handler of a changing call: unless `refuse` answers it first, decide each operand,
    then let the overlay do it."""
    def handler(stop: Stop, ctx: Context) -> Action:
        if refuse is not None and (denied := refuse(stop, ctx)) is not None:
            return denied
        decided: list[Decided] = []
        for op in ops:
            d = decide(stop, ctx, op)
            if isinstance(d, Deny):
                return d
            if d.r.magic is not None:      # an fd on a pipe, socket ...: the kernel's business
                return Allow(d.note)
            decided.append(d)
        note = decided[0].note
        try:
            rv = do(stop, ctx, [d.r.path for d in decided])
        except GuestErrno as e:
            return Deny(e.errno, Note(rule=note.rule, path=note.path, detail=e.detail),
                        native=True)
        moved = any(ctx.fs.redirected(d.r.path) for d in decided)
        return Emulate(rv, note=note, decision=Decision.REDIRECTED if moved else Decision.ALLOWED)
    handler.__doc__ = "Decide the path(s), then make the change in the overlay from the tracer."
    return handler


def slashed_rename(src: Operand, dst: Operand) -> Refusal:
    """rename(at)(2)'s refusal: ENOTDIR by the kernel's rule for trailing slashes."""
    def refuse(stop: Stop, ctx: Context) -> Deny | None:
        return Deny(errno.ENOTDIR, native=True) \
            if slash_on_a_non_directory(stop, ctx, src, dst) else None
    return refuse


def slashed_remove(op: Operand, removes_dir: Callable[[Stop], bool]) -> Refusal:
    """rmdir, unlink and unlinkat's refusal (removes_dir: whether the call is an rmdir):
    "name/" failing as the kernel's calls fail it."""
    def refuse(stop: Stop, ctx: Context) -> Deny | None:
        err = slashed_removal(stop, ctx, op, removes_dir(stop))
        return None if err is None else Deny(err, native=True)
    return refuse


def kernel_write(op: Operand) -> Callable[[Stop, Context], Action]:
    """A rarely used changing call the overlay does not emulate (file_setattr, *xattrat):
    the kernel makes it on the upper copy (copied up now)."""
    def handler(stop: Stop, ctx: Context) -> Action:
        d = decide(stop, ctx, op)
        if isinstance(d, Deny):
            return d
        if d.fd_form or d.r.magic is not None:
            return Allow(d.note)
        try:
            host = ctx.fs.host_for_write(d.r.path)
        except GuestErrno as e:
            return Deny(e.errno, native=True)
        args: list[tuple[int, object]] = [(op.path, slot_path(host))]
        if op.dirfd is not None:
            args.append((op.dirfd, AT_FDCWD))
        return Rewrite(tuple(args), note=Note(rule=d.note.rule, path=d.r.path,  # type: ignore[arg-type]
                                              host_path=host), decision=Decision.REDIRECTED)
    handler.__doc__ = "Decide the path; the kernel changes the upper copy."
    return handler


def sys_umask(stop: Stop, ctx: Context) -> Action:
    """umask(2) runs as natively; while it does, the tracer keeps no process's umask, and the
    ones it kept are forgotten before and after (Context.umask_changing)."""
    ctx.umask_changing(stop.tid, True)

    def done(_stop: Stop, _rv: int) -> ExitResult:
        ctx.umask_changing(stop.tid, False)
        return ExitResult()
    return Allow(on_exit=done)


def _umasked(stop: Stop, ctx: Context, mode: int) -> int:
    return mode & ~ctx.umask(stop.tid) & 0o7777


def mkdir_do(mode_arg: int) -> Do:
    def do(s: Stop, c: Context, g: list[bytes]) -> int:
        c.fs.ov.mkdir(g[0], _umasked(s, c, s.arg(mode_arg)))
        own_created(s, c, g[0])
        return 0
    return do


def mknod_do(mode_arg: int, dev_arg: int) -> Do:
    def do(s: Stop, c: Context, g: list[bytes]) -> int:
        mode = s.arg(mode_arg) & 0xFFFFFFFF
        fmt = statmod.S_IFMT(mode) or statmod.S_IFREG
        c.fs.ov.mknod(g[0], fmt | _umasked(s, c, mode), s.arg(dev_arg) & 0xFFFFFFFF,
                      virtual_devices=virtual_devices(c))
        own_created(s, c, g[0])
        return 0
    return do


def virtual_devices(ctx: Context) -> bool:
    """Device nodes are stand-ins under a virtual identity (never real ones)."""
    return ctx.policy.identity is not None


def no_devices(mode_arg: int) -> Refusal:
    """EPERM for a device node, unless a virtual identity holding CAP_MKNOD makes one."""
    def refuse(stop: Stop, ctx: Context) -> Deny | None:
        fmt = statmod.S_IFMT(stop.arg(mode_arg))
        if fmt not in (statmod.S_IFCHR, statmod.S_IFBLK) or (
                virtual_devices(ctx) and ctx.capable(stop.tid, CAP_MKNOD)):
            return None
        return Deny(errno.EPERM, Note(rule="builtin:no-devices",
                                      detail="device nodes are not created"))
    return refuse


def unlinkat_do(s: Stop, c: Context, g: list[bytes]) -> int:
    flags = s.arg(2)
    if flags & ~AT_REMOVEDIR:
        raise GuestErrno(errno.EINVAL, "unlinkat flags")
    (c.fs.ov.rmdir if flags & AT_REMOVEDIR else c.fs.ov.unlink)(g[0])
    return 0


def rename_do(flags_arg: int | None) -> Do:
    return lambda s, c, g: c.fs.ov.rename(g[0], g[1], s.arg(flags_arg) & 0xFFFFFFFF
                                          if flags_arg is not None else 0) or 0


def symlink_do(target_arg: int) -> Do:
    def do(s: Stop, c: Context, g: list[bytes]) -> int:
        target = s.path(target_arg)
        if target is None:
            raise GuestErrno(errno.EFAULT, "symlink target")
        if not target:
            raise GuestErrno(errno.ENOENT, "empty symlink target")
        c.fs.ov.symlink(target, g[0])
        own_created(s, c, g[0])
        return 0
    return do


def chmod_do(mode_arg: int, flags_arg: int | None = None) -> Do:
    def do(s: Stop, c: Context, g: list[bytes]) -> int:
        if flags_arg is not None and s.arg(flags_arg) & AT_SYMLINK_NOFOLLOW:
            st = c.view.lstat(g[0])
            if st is not None and statmod.S_ISLNK(st.st_mode):
                raise GuestErrno(errno.EOPNOTSUPP, "symlinks have no mode of their own")
        c.fs.ov.chmod(g[0], s.arg(mode_arg) & 0o7777)
        return 0
    return do


def chown_do(uid_arg: int, gid_arg: int) -> Do:
    def do(s: Stop, c: Context, g: list[bytes]) -> int:
        uid, gid = _id_arg(s.arg(uid_arg)), _id_arg(s.arg(gid_arg))
        # A virtual identity's chown that appvirt cannot make (not root) is remembered.
        c.fs.ov.chown(g[0], uid, gid,
                      remember=c.policy.identity is not None and not c.real_root)
        return 0
    return do


def _id_arg(v: int) -> int:
    """A uid_t/gid_t argument: the low 32 bits, (uid_t)-1 meaning "unchanged" (-1)."""
    v &= 0xFFFFFFFF
    return -1 if v == 0xFFFFFFFF else v


def truncate_do(s: Stop, c: Context, g: list[bytes]) -> int:
    length = s.arg(1)
    if length >= 1 << 63:
        raise GuestErrno(errno.EINVAL, "negative length")
    c.fs.ov.truncate(g[0], length)
    return 0


def _times(c: Context, s: Stop, addr: int, fmt: str) -> tuple[int | None, int | None]:
    """(atime, mtime) in ns from a times argument; NULL is "now" (the virtual clock's)."""
    now = c.now_ns()
    if addr == 0:
        return now, now
    if fmt == "utimbuf":
        a, m = struct.unpack("<qq", c.read(s.tid, addr, 16))
        return a * 10**9, m * 10**9
    raw = c.read(s.tid, addr, 32)
    (a, af), (m, mf) = struct.unpack_from("<qq", raw, 0), struct.unpack_from("<qq", raw, 16)
    if fmt == "timeval":
        if not (0 <= af < 10**6 and 0 <= mf < 10**6):
            raise GuestErrno(errno.EINVAL, "bad timeval")
        return a * 10**9 + af * 1000, m * 10**9 + mf * 1000

    def one(sec: int, nsec: int) -> int | None:
        if nsec == UTIME_NOW:
            return now
        if nsec == UTIME_OMIT:
            return None
        if not 0 <= nsec < 10**9:
            raise GuestErrno(errno.EINVAL, "bad timespec")
        return sec * 10**9 + nsec
    return one(a, af), one(m, mf)


def utime_do(times_arg: int, fmt: str, flags_arg: int | None = None) -> Do:
    def do(s: Stop, c: Context, g: list[bytes]) -> int:
        if flags_arg is not None and s.arg(flags_arg) & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
            raise GuestErrno(errno.EINVAL, "utimensat flags")
        atime, mtime = _times(c, s, s.arg(times_arg), fmt)
        if atime is not None or mtime is not None:
            c.fs.ov.utimens(g[0], atime, mtime)
        return 0
    return do


def _xattr_name(c: Context, s: Stop, arg: int) -> bytes:
    try:
        return c.read_string(s.tid, s.arg(arg), XATTR_NAME_MAX + 1)
    except GuestErrno as e:
        raise GuestErrno(errno.ERANGE if e.errno == errno.ENAMETOOLONG else e.errno) from None


def setxattr_do(name_arg: int) -> Do:
    def do(s: Stop, c: Context, g: list[bytes]) -> int:
        name = _xattr_name(c, s, name_arg)
        size = s.arg(name_arg + 2)
        if size > XATTR_SIZE_MAX:
            raise GuestErrno(errno.E2BIG, "xattr value too large")
        value = c.read(s.tid, s.arg(name_arg + 1), size) if size else b""
        c.fs.ov.setxattr(g[0], name, value, s.arg(name_arg + 3) & 0xFFFFFFFF)
        return 0
    return do


def removexattr_do(name_arg: int) -> Do:
    return lambda s, c, g: c.fs.ov.removexattr(g[0], _xattr_name(c, s, name_arg)) or 0


def link_call(src: Operand, dst: Operand) -> Callable[[Stop, Context], Action]:
    """Handler of link/linkat. A source that is a file with no name (O_TMPFILE, via
    AT_EMPTY_PATH or /proc/self/fd/N) is linked by the tracer itself, through the tracee's fd,
    into the place the overlay gives the new name; any other source must be writable by the
    policy (a link is a second writable name for it, #21) and is linked inside the overlay."""
    def handler(stop: Stop, ctx: Context) -> Action:
        d = decide(stop, ctx, dst)
        if isinstance(d, Deny):
            return d
        path = stop.path(src.path)
        fd_form = path == b"" and src.empty_means_fd is not None and src.empty_means_fd(stop)
        if fd_form:
            s_obj = ctx.fd_object(stop.tid, stop.sarg(src.dirfd) if src.dirfd is not None
                                  else AT_FDCWD)
        elif path is None:
            return Deny(errno.EFAULT, native=True)
        else:
            follow = src.follow(stop) if callable(src.follow) else src.follow
            s_obj = ctx.resolve(stop, stop.sarg(src.dirfd) if src.dirfd is not None else None,
                                path, follow=follow)
        if s_obj.magic is None:
            s_dec = decide(stop, ctx, src)
            if isinstance(s_dec, Deny):
                return s_dec
            try:
                ctx.fs.ov.link(s_dec.r.path, d.r.path)
            except GuestErrno as e:
                return Deny(e.errno, Note(rule=d.note.rule, path=d.r.path, detail=e.detail),
                            native=True)
            moved = ctx.fs.redirected(d.r.path)
            return Emulate(0, note=d.note,
                           decision=Decision.REDIRECTED if moved else Decision.ALLOWED)
        try:
            host = ctx.fs.host_for_create(d.r.path)
            # linkat(AT_SYMLINK_FOLLOW) through the magic link (os.link would use link(2),
            # which does not follow it).
            if _libc.linkat(AT_FDCWD, s_obj.magic.proc_path, AT_FDCWD, host,
                            AT_SYMLINK_FOLLOW) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
            ctx.fs.created(d.r.path)
            own_created(stop, ctx, d.r.path)
        except GuestErrno as e:
            return Deny(e.errno, Note(rule=d.note.rule, path=d.r.path, detail=e.detail),
                        native=True)
        except OSError as e:
            return Deny(e.errno or errno.EIO, Note(rule=d.note.rule, path=d.r.path),
                        native=True)
        return Emulate(0, note=Note(rule=d.note.rule, path=d.r.path, host_path=host,
                                    detail="a nameless file linked in"),
                       decision=Decision.REDIRECTED if host != d.r.path else Decision.ALLOWED)
    handler.__doc__ = "Link in the overlay; nameless files (O_TMPFILE) through the tracee's fd."
    return handler


def rmdir_do(s: Stop, c: Context, g: list[bytes]) -> int:
    c.fs.ov.rmdir(g[0])
    return 0


def unlink_do(s: Stop, c: Context, g: list[bytes]) -> int:
    c.fs.ov.unlink(g[0])
    return 0
