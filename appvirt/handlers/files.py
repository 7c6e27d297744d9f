"""File operations: every path-taking system call.

Each path argument is resolved in the tracer (component by component), decided by the policy's
file modes, and handed to the kernel as the resolved absolute path in the thread's read-only
slot, so nothing the program changes after the check can change what the kernel acts on
(threats #11, #16-#19). Opens become openat2 with RESOLVE_NO_SYMLINKS: a directory swapped for
a symlink after the check makes the kernel fail with ELOOP, and the call is restarted.
"""

from __future__ import annotations

import errno
import os
import stat as statmod
import struct
from collections.abc import Callable
from dataclasses import dataclass

from ..core import sysnums
from ..core.action import (Action, Allow, Decision, Deny, Emulate, ExitResult, ExitVerdict, Note,
                           Rewrite, SlotData)
from ..core.context import Context
from ..core.stop import Stop
from ..core.table import OpClass, Support, SyscallEntry
from ..errors import GuestErrno
from ..fs.dirents import pack_dirents, pack_dirents64
from ..fs.resolver import Resolved
from .filemodes import Intent, check

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_SYMLINK_FOLLOW = 0x400
AT_EMPTY_PATH = 0x1000
IN_DONT_FOLLOW = 0x02000000
FAN_MARK_DONT_FOLLOW = 0x04
W_OK = 2

O_ACCMODE, O_WRONLY, O_RDWR = 0o3, 0o1, 0o2
O_CREAT, O_EXCL, O_TRUNC, O_APPEND = 0o100, 0o200, 0o1000, 0o2000
O_LARGEFILE, O_DIRECTORY, O_NOFOLLOW = 0o100000, 0o200000, 0o400000
O_CLOEXEC, O_PATH, O_TMPFILE_BIT = 0o2000000, 0o10000000, 0o20000000
O_TMPFILE = O_TMPFILE_BIT | O_DIRECTORY
VALID_OPEN_FLAGS = 0o37777703 | O_ACCMODE   # every bit build_open_flags() accepts
O_PATH_FLAGS = O_DIRECTORY | O_NOFOLLOW | O_PATH | O_CLOEXEC
S_IALLUGO = 0o7777

RESOLVE_NO_XDEV, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS = 0x01, 0x02, 0x04
RESOLVE_BENEATH, RESOLVE_IN_ROOT, RESOLVE_CACHED = 0x08, 0x10, 0x20
OPEN_HOW = struct.Struct("<QQQ")
OPEN_HOW_SIZE_VER0 = 24
NR_OPENAT2 = sysnums.nr("openat2")


def _slot_path(path: bytes) -> SlotData:
    return SlotData(path + b"\0")


def _dirfd(stop: Stop, arg: int | None) -> int | None:
    return None if arg is None else stop.sarg(arg)


# --- opens -----------------------------------------------------------------------------------
def _open_intent(flags: int, exists: bool) -> Intent:
    if flags & O_TMPFILE_BIT or (flags & O_CREAT and not exists):
        return Intent.CREATE
    if flags & O_ACCMODE in (O_WRONLY, O_RDWR) or flags & O_TRUNC:
        return Intent.WRITE
    return Intent.READ


def _same_object(tid: int, expected: tuple[int, int]) -> Callable[[Stop, int], ExitResult]:
    """Exit check for a magic-link open: the new fd must be the object that was checked."""
    def hook(stop: Stop, result: int) -> ExitResult:
        if result < 0:
            return ExitResult()
        try:
            st = os.stat(f"/proc/{tid}/fd/{result}")
        except OSError:
            return ExitResult(ExitVerdict.KILL, detail="opened fd vanished")
        if (st.st_dev, st.st_ino) != expected:
            return ExitResult(ExitVerdict.KILL, detail="fd changed under a magic-link open")
        return ExitResult()
    return hook


def _restart_on_eloop(stop: Stop, result: int) -> ExitResult:
    """ELOOP after RESOLVE_NO_SYMLINKS on a path checked free of symlinks: a component was
    swapped for a symlink after the check (threat #17). Re-run the call; it is re-checked."""
    if result == -errno.ELOOP:
        return ExitResult(ExitVerdict.RESTART)
    return ExitResult()


def _open(stop: Stop, ctx: Context, dirfd: int | None, path: bytes, flags: int, mode: int,
          resolve_flags: int) -> Action:
    if not path:
        return Deny(errno.ENOENT, native=True)
    if resolve_flags & RESOLVE_BENEATH and resolve_flags & RESOLVE_IN_ROOT:
        return Deny(errno.EINVAL, native=True)
    tmpfile = bool(flags & O_TMPFILE_BIT)
    follow = not (flags & O_NOFOLLOW) and not (flags & O_CREAT and flags & O_EXCL)
    r = ctx.resolve(stop, dirfd, path, follow=follow or tmpfile,
                    no_symlinks=bool(resolve_flags & RESOLVE_NO_SYMLINKS),
                    no_magiclinks=bool(resolve_flags & RESOLVE_NO_MAGICLINKS),
                    in_root=bool(resolve_flags & RESOLVE_IN_ROOT),
                    beneath=bool(resolve_flags & RESOLVE_BENEATH))
    if r.st is not None and statmod.S_ISLNK(r.st.st_mode) and not flags & O_PATH:
        return Deny(errno.EEXIST if flags & O_CREAT and flags & O_EXCL else errno.ELOOP,
                    Note(path=r.path), native=True)
    if flags & O_CREAT and flags & O_EXCL and r.exists:
        return Deny(errno.EEXIST, Note(path=r.path), native=True)
    if not r.exists and not (flags & O_CREAT) and not tmpfile:
        return Deny(errno.ENOENT, Note(path=r.path), native=True)
    intent = _open_intent(flags, r.exists)
    deny, note = check(ctx.policy, r, intent, ctx.is_member)
    if deny is not None:
        return Deny(deny.errno, note)
    if flags & O_CREAT and r.exists and intent is Intent.READ:
        # The file was there when checked: if it vanished, fail rather than create it in a
        # place whose mode only allowed reading.
        flags &= ~O_CREAT
    how_resolve = resolve_flags & ~(RESOLVE_BENEATH | RESOLVE_IN_ROOT)
    on_exit: Callable[[Stop, int], ExitResult]
    if r.magic is not None:
        if intent is not Intent.READ and ctx.shares_fd_table(stop.tid):
            # Another thread could swap the fd between this check and the kernel's use.
            return Deny(errno.EACCES, Note(
                path=r.path, rule="builtin:fd-object",
                hint="reopen for writing through /proc/self/fd only from single-threaded code"))
        on_exit = _same_object(stop.tid, (r.magic.dev, r.magic.ino))
    else:
        how_resolve |= RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
        on_exit = _restart_on_eloop
    how = OPEN_HOW.pack(flags & 0xFFFFFFFFFFFFFFFF, mode, how_resolve)
    return Rewrite(
        args=((0, AT_FDCWD), (1, _slot_path(r.kernel_path)), (2, SlotData(how)),
              (3, OPEN_HOW_SIZE_VER0)),
        nr=NR_OPENAT2, note=note, on_exit=on_exit, decision=Decision.ALLOWED)


def _legacy_how(flags: int, mode: int) -> tuple[int, int]:
    """What the kernel's build_open_how() makes of open()/openat() flags and mode."""
    flags = (flags & 0xFFFFFFFF) | O_LARGEFILE
    flags &= VALID_OPEN_FLAGS
    if flags & O_PATH:
        flags &= O_PATH_FLAGS
    mode = mode & S_IALLUGO if flags & (O_CREAT | O_TMPFILE_BIT) else 0
    return flags, mode


def sys_open(stop: Stop, ctx: Context) -> Action:
    """Implement open(2): resolve, decide, then openat2 on the checked path."""
    flags, mode = _legacy_how(stop.arg(1), stop.arg(2))
    return _open(stop, ctx, None, stop.paths[0] or b"", flags, mode, 0)


def sys_creat(stop: Stop, ctx: Context) -> Action:
    """Implement creat(2) as open(O_CREAT|O_WRONLY|O_TRUNC)."""
    flags, mode = _legacy_how(O_CREAT | O_WRONLY | O_TRUNC, stop.arg(1))
    return _open(stop, ctx, None, stop.paths[0] or b"", flags, mode, 0)


def sys_openat(stop: Stop, ctx: Context) -> Action:
    """Implement openat(2)."""
    flags, mode = _legacy_how(stop.arg(2), stop.arg(3))
    return _open(stop, ctx, stop.sarg(0), stop.paths[0] or b"", flags, mode, 0)


def sys_openat2(stop: Stop, ctx: Context) -> Action:
    """Implement openat2(2): its open_how is copied once, then rebuilt in the slot (#15)."""
    size = stop.arg(3)
    if size < OPEN_HOW_SIZE_VER0:
        return Deny(errno.EINVAL, native=True)
    if size > 4096:
        return Deny(errno.E2BIG, native=True)
    raw = ctx.read(stop.tid, stop.arg(2), size)
    if any(raw[OPEN_HOW_SIZE_VER0:]):
        return Deny(errno.E2BIG, native=True)
    flags, mode, resolve_flags = OPEN_HOW.unpack_from(raw)
    if flags & ~VALID_OPEN_FLAGS or (mode and not flags & (O_CREAT | O_TMPFILE_BIT)):
        return Deny(errno.EINVAL, native=True)
    return _open(stop, ctx, stop.sarg(0), stop.paths[0] or b"", flags, mode, resolve_flags)


# --- every other path call: declared operands ----------------------------------------------
Flagged = Callable[[Stop], bool]


@dataclass(frozen=True, slots=True)
class Operand:
    """One path argument of a call, and what the call does to it."""

    path: int                                   # argument index of the path
    dirfd: int | None                           # argument index of its dirfd, if any
    intent: Intent | Callable[[Stop], Intent]
    follow: bool | Flagged                      # follow a symlink in the last component
    empty_means_fd: Flagged | None = None       # AT_EMPTY_PATH: "" names the dirfd itself
    null_means_fd: bool = False                 # NULL names the dirfd itself (utimensat)
    flags_arg: int | None = None                # where AT_* flags live (for the fd rewrite)


def _flag(arg: int, bit: int) -> Flagged:
    return lambda s: bool(s.arg(arg) & bit)


def _not_flag(arg: int, bit: int) -> Flagged:
    return lambda s: not s.arg(arg) & bit


def _fd_operand(stop: Stop, ctx: Context, op: Operand, intent: Intent
                ) -> tuple[Deny | None, Note, tuple[tuple[int, object], ...]]:
    """The call names its dirfd's object itself (AT_EMPTY_PATH, NULL path)."""
    if intent is Intent.READ or op.dirfd is None:
        return None, Note(), ()
    fd = stop.sarg(op.dirfd)
    r = ctx.fd_object(stop.tid, fd)
    deny, note = check(ctx.policy, r, intent, ctx.is_member)
    if deny is not None or not ctx.shares_fd_table(stop.tid):
        return deny, note, ()
    if r.magic is not None:
        return Deny(errno.EACCES), note, ()
    # Another thread could swap the fd after this check: name the checked file by path.
    rewrites: list[tuple[int, object]] = [(op.dirfd, AT_FDCWD), (op.path, _slot_path(r.path))]
    if op.flags_arg is not None:
        rewrites.append((op.flags_arg,
                         (stop.arg(op.flags_arg) & ~AT_EMPTY_PATH) | AT_SYMLINK_NOFOLLOW))
    return None, note, tuple(rewrites)


def path_call(*operands: Operand, extra: Callable[[Stop], int | None] | None = None
              ) -> Callable[[Stop, Context], Action]:
    """Build the handler of a call from its operands (`extra` may refuse first: an errno)."""
    def handler(stop: Stop, ctx: Context) -> Action:
        if extra is not None and (err := extra(stop)) is not None:
            return Deny(err)
        rewrites: list[tuple[int, object]] = []
        first_note: Note | None = None
        for op in operands:
            intent = op.intent(stop) if callable(op.intent) else op.intent
            path = stop.path(op.path)
            if path is None or (path == b"" and op.empty_means_fd and op.empty_means_fd(stop)):
                if path is None and not op.null_means_fd:
                    return Deny(errno.EFAULT, native=True)
                deny, note, more = _fd_operand(stop, ctx, op, intent)
                if deny is not None:
                    return Deny(deny.errno, note)
                rewrites.extend(more)
                first_note = first_note or note
                continue
            follow = op.follow(stop) if callable(op.follow) else op.follow
            r = ctx.resolve(stop, _dirfd(stop, op.dirfd), path, follow=follow)
            if r.magic is not None and intent is not Intent.READ:
                return Deny(errno.EACCES, Note(path=r.path, rule="builtin:fd-object"))
            deny, note = check(ctx.policy, r, intent, ctx.is_member)
            if deny is not None:
                return Deny(deny.errno, note)
            first_note = first_note or note
            if op.dirfd is not None:
                rewrites.append((op.dirfd, AT_FDCWD))
            rewrites.append((op.path, _slot_path(r.kernel_path)))
        if not rewrites:
            return Allow(first_note or Note())
        return Rewrite(tuple(rewrites), note=first_note or Note(),  # type: ignore[arg-type]
                       decision=Decision.ALLOWED)
    handler.__doc__ = "Resolve and decide path argument(s) " + ", ".join(
        f"{o.path} ({o.intent.value if isinstance(o.intent, Intent) else 'read/write'})"
        for o in operands) + "; hand the kernel the checked paths."
    return handler


def _access_intent(mode_arg: int) -> Callable[[Stop], Intent]:
    return lambda s: Intent.WRITE if s.arg(mode_arg) & W_OK else Intent.READ


def _no_devices(mode_arg: int) -> Callable[[Stop], int | None]:
    def refuse(stop: Stop) -> int | None:
        fmt = statmod.S_IFMT(stop.arg(mode_arg))
        return errno.EPERM if fmt in (statmod.S_IFCHR, statmod.S_IFBLK) else None
    return refuse


R, W, C, D = Intent.READ, Intent.WRITE, Intent.CREATE, Intent.DELETE


def _p(path: int, intent, follow, dirfd: int | None = None, **kw) -> Operand:
    return Operand(path, dirfd, intent, follow, **kw)


def _at(dirfd: int, path: int, intent, flags: int | None, *, follow_default: bool = True,
        follow_flag: int = AT_SYMLINK_NOFOLLOW, empty: bool = True, null: bool = False
        ) -> Operand:
    """A `*at` operand whose flags argument may hold AT_SYMLINK_NOFOLLOW and AT_EMPTY_PATH."""
    if flags is None:
        follow: bool | Flagged = follow_default
        empty_fd = None
    else:
        follow = (_flag(flags, follow_flag) if follow_flag == AT_SYMLINK_FOLLOW
                  else _not_flag(flags, follow_flag))
        empty_fd = _flag(flags, AT_EMPTY_PATH) if empty else None
    return Operand(path, dirfd, intent, follow, empty_fd, null, flags)


# --- calls on an fd that change the file: checked, and named by path if threads share fds ---
def fd_write(path_form: str, arg_map: Callable[[Stop, bytes], tuple[tuple[int, object], ...]]
             ) -> Callable[[Stop, Context], Action]:
    """Handler of fchmod-like calls: the file behind the fd must be writable by the policy."""
    nr_path_form = sysnums.nr(path_form)

    def handler(stop: Stop, ctx: Context) -> Action:
        r = ctx.fd_object(stop.tid, stop.sarg(0))
        deny, note = check(ctx.policy, r, Intent.WRITE, ctx.is_member)
        if deny is not None:
            return Deny(deny.errno, note)
        if not ctx.shares_fd_table(stop.tid):
            return Allow(note)
        if r.magic is not None:
            return Deny(errno.EACCES, note)
        return Rewrite(arg_map(stop, r.path), nr=nr_path_form, note=note,
                       decision=Decision.ALLOWED)
    handler.__doc__ = (f"Check the file behind the fd is writable; name it by path "
                       f"({path_form}) when another thread could swap the fd.")
    return handler


# --- calls that only read: the tracer makes them itself on the checked path ----------------
@dataclass(frozen=True, slots=True)
class Mirror:
    """How to answer a read-only path call in the tracer (see tracer.hostcalls)."""

    run: str                                        # the syscall the tracer makes
    build: Callable[[Stop, Context, bytes, bool], tuple]   # (stop, ctx, path, follow) -> args
    out_arg: int | None = None                      # its output buffer argument
    guest_buf: int | None = None                    # where that buffer is in the program's call
    out_size: Callable[[Stop], int] | None = None   # how big it is
    copy_all: bool = True                           # False: copy only `result` bytes


def mirror_call(op: Operand, m: Mirror) -> Callable[[Stop, Context], Action]:
    """Handler of a read-only path call: resolve, decide, then answer it from the tracer.

    Falls back to handing the kernel the checked path when the process changed its ids
    (the tracer must not act with credentials the program no longer has)."""
    fallback = path_call(op)

    def handler(stop: Stop, ctx: Context) -> Action:
        path = stop.path(op.path)
        if path is None:
            return Deny(errno.EFAULT, native=True)
        if path == b"" and op.empty_means_fd and op.empty_means_fd(stop):
            return Allow()                    # reads the fd's own object: no path involved
        if not ctx.same_credentials(stop.tid):
            return fallback(stop, ctx)
        intent = op.intent(stop) if callable(op.intent) else op.intent
        follow = op.follow(stop) if callable(op.follow) else op.follow
        r = ctx.resolve(stop, _dirfd(stop, op.dirfd), path, follow=follow)
        deny, note = check(ctx.policy, r, intent, ctx.is_member)
        if deny is not None:
            return Deny(deny.errno, note)
        size = m.out_size(stop) if m.out_size else 0
        out = {m.out_arg: size} if m.out_arg is not None and size > 0 else {}
        rv, bufs = ctx.host_call(m.run, m.build(stop, ctx, r.kernel_path, follow), out)
        if rv < 0:
            return Deny(-rv, note, native=True)
        writes: tuple[tuple[int, bytes], ...] = ()
        if out and m.guest_buf is not None:
            data = bufs[m.out_arg] if m.copy_all else bufs[m.out_arg][:rv]  # type: ignore[index]
            writes = ((stop.arg(m.guest_buf), data),) if data else ()
        return Emulate(rv, writes, note, Decision.ALLOWED)
    handler.__doc__ = (f"Resolve and decide path argument {op.path}; answer with {m.run}(2) "
                       "made by the tracer on the checked path.")
    return handler


STAT_SIZE, STATX_SIZE, STATFS_SIZE = 144, 256, 120
AT_NO_AUTOMOUNT, AT_EACCESS, AT_STATX_SYNC_TYPE = 0x800, 0x200, 0x6000


def _nofollow(follow: bool) -> int:
    return 0 if follow else AT_SYMLINK_NOFOLLOW


def _fixed(n: int) -> Callable[[Stop], int]:
    return lambda s: n


def _sized(arg: int) -> Callable[[Stop], int]:
    return lambda s: min(s.arg(arg), 1 << 16) if s.sarg(arg) > 0 else 0


_STAT = Mirror("newfstatat", lambda s, c, p, f: (AT_FDCWD, p, None, _nofollow(f)), 2, 1,
               _fixed(STAT_SIZE))
_NEWFSTATAT = Mirror("newfstatat", lambda s, c, p, f: (
    AT_FDCWD, p, None, _nofollow(f) | (s.arg(3) & AT_NO_AUTOMOUNT)), 2, 2, _fixed(STAT_SIZE))
_STATX = Mirror("statx", lambda s, c, p, f: (
    AT_FDCWD, p, _nofollow(f) | (s.arg(2) & (AT_NO_AUTOMOUNT | AT_STATX_SYNC_TYPE)),
    s.arg(3) & 0xFFFFFFFF, None), 4, 4, _fixed(STATX_SIZE))
_STATFS = Mirror("statfs", lambda s, c, p, f: (p, None), 1, 1, _fixed(STATFS_SIZE))
XATTR_NAME_MAX = 255


def _access(mode_arg: int, flags_arg: int | None) -> Mirror:
    return Mirror("faccessat2", lambda s, c, p, f: (
        AT_FDCWD, p, s.arg(mode_arg) & 7,
        _nofollow(f) | ((s.arg(flags_arg) & AT_EACCESS) if flags_arg is not None else 0)))


def _readlink(buf: int, size: int) -> Mirror:
    return Mirror("readlinkat",
                  lambda s, c, p, f: (AT_FDCWD, p, None, min(s.arg(size), 1 << 16)),
                  2, buf, _sized(size), copy_all=False)


def _getxattr(name: int, buf: int, size: int) -> Mirror:
    """getxattr/lgetxattr: lgetxattr on the checked path (a final symlink is only left in it
    when the call does not follow)."""
    return Mirror("lgetxattr", lambda s, c, p, f: (
        p, c.read_string(s.tid, s.arg(name), XATTR_NAME_MAX + 1), None,
        min(s.arg(size), 1 << 16)), 2, buf, _sized(size), copy_all=False)


def _listxattr(buf: int, size: int) -> Mirror:
    return Mirror("llistxattr", lambda s, c, p, f: (p, None, min(s.arg(size), 1 << 16)),
                  1, buf, _sized(size), copy_all=False)


def sys_execve(stop: Stop, ctx: Context) -> Action:
    """Implement execve(2)/execveat(2): decide on the resolved path, give the kernel the
    program's own path bytes (from the slot) so `$0` and AT_EXECFN stay what it passed."""
    at = stop.name == "execveat"
    path_arg = 1 if at else 0
    path = stop.path(path_arg)
    if path is None:
        return Deny(errno.EFAULT, native=True)
    if at and path == b"" and stop.arg(4) & AT_EMPTY_PATH:
        return Allow()       # fexecve: the fd was opened, and checked, before
    r = ctx.resolve(stop, stop.sarg(0) if at else None, path, follow=True)
    deny, note = check(ctx.policy, r, Intent.READ, ctx.is_member)
    if deny is not None:
        return Deny(deny.errno, note)
    if not r.exists:
        return Deny(errno.ENOENT, note, native=True)
    return Rewrite(((path_arg, _slot_path(path)),), note=note, decision=Decision.ALLOWED)


def _e(name: str, handler, paths: tuple[int, ...], nullable: tuple[int, ...] = (),
       note: str = "", support: Support = Support.FULL) -> SyscallEntry:
    return SyscallEntry(name, OpClass.FILE, handler, support, note, paths, nullable,
                        needs_exit=True)


_NOFOLLOW = AT_SYMLINK_NOFOLLOW
ENTRIES: tuple[SyscallEntry, ...] = (
    _e("open", sys_open, (0,)),
    _e("creat", sys_creat, (0,)),
    _e("openat", sys_openat, (1,)),
    _e("openat2", sys_openat2, (1,), note="RESOLVE_* flags honoured in the tracer's walk"),
    _e("stat", mirror_call(_p(0, R, True), _STAT), (0,)),
    _e("lstat", mirror_call(_p(0, R, False), _STAT), (0,)),
    _e("newfstatat", mirror_call(_at(0, 1, R, 3), _NEWFSTATAT), (1,)),
    _e("statx", mirror_call(_at(0, 1, R, 2), _STATX), (1,)),
    _e("access", mirror_call(_p(0, _access_intent(1), True), _access(1, None)), (0,)),
    _e("faccessat", mirror_call(_at(0, 1, _access_intent(2), None), _access(2, None)), (1,)),
    _e("faccessat2", mirror_call(_at(0, 1, _access_intent(2), 3), _access(2, 3)), (1,)),
    _e("readlink", mirror_call(_p(0, R, False), _readlink(1, 2)), (0,)),
    _e("readlinkat", mirror_call(_at(0, 1, R, None, follow_default=False), _readlink(2, 3)),
       (1,)),
    _e("statfs", mirror_call(_p(0, R, True), _STATFS), (0,)),
    _e("chdir", path_call(_p(0, R, True)), (0,)),
    _e("getxattr", mirror_call(_p(0, R, True), _getxattr(1, 2, 3)), (0,)),
    _e("lgetxattr", mirror_call(_p(0, R, False), _getxattr(1, 2, 3)), (0,)),
    _e("listxattr", mirror_call(_p(0, R, True), _listxattr(1, 2)), (0,)),
    _e("llistxattr", mirror_call(_p(0, R, False), _listxattr(1, 2)), (0,)),
    _e("getxattrat", path_call(_at(0, 1, R, 2)), (1,)),
    _e("listxattrat", path_call(_at(0, 1, R, 2)), (1,)),
    _e("file_getattr", path_call(_at(0, 1, R, 4)), (1,)),
    _e("inotify_add_watch", path_call(_p(1, R, _not_flag(2, IN_DONT_FOLLOW))), (1,)),
    _e("fanotify_mark", path_call(Operand(4, 3, R, _not_flag(1, FAN_MARK_DONT_FOLLOW),
                                          null_means_fd=True)), (4,), nullable=(4,)),
    _e("mkdir", path_call(_p(0, C, False)), (0,)),
    _e("mkdirat", path_call(_at(0, 1, C, None, follow_default=False)), (1,)),
    _e("mknod", path_call(_p(0, C, False), extra=_no_devices(1)), (0,),
       note="device nodes are refused (EPERM)", support=Support.PARTIAL),
    _e("mknodat", path_call(_at(0, 1, C, None, follow_default=False), extra=_no_devices(2)),
       (1,), note="device nodes are refused (EPERM)", support=Support.PARTIAL),
    _e("rmdir", path_call(_p(0, D, False)), (0,)),
    _e("unlink", path_call(_p(0, D, False)), (0,)),
    _e("unlinkat", path_call(_at(0, 1, D, None, follow_default=False)), (1,)),
    _e("rename", path_call(_p(0, D, False), _p(1, C, False)), (0, 1)),
    _e("renameat", path_call(_at(0, 1, D, None, follow_default=False),
                             _at(2, 3, C, None, follow_default=False)), (1, 3)),
    _e("renameat2", path_call(_at(0, 1, D, None, follow_default=False),
                              _at(2, 3, C, None, follow_default=False)), (1, 3)),
    _e("link", path_call(_p(0, W, False), _p(1, C, False)), (0, 1)),
    _e("linkat", path_call(_at(0, 1, W, 4, follow_flag=AT_SYMLINK_FOLLOW),
                           _at(2, 3, C, None, follow_default=False)), (1, 3)),
    _e("symlink", path_call(_p(1, C, False)), (1,)),
    _e("symlinkat", path_call(_at(1, 2, C, None, follow_default=False)), (2,)),
    _e("chmod", path_call(_p(0, W, True)), (0,)),
    _e("fchmodat", path_call(_at(0, 1, W, None)), (1,)),
    _e("fchmodat2", path_call(_at(0, 1, W, 3)), (1,)),
    _e("chown", path_call(_p(0, W, True)), (0,)),
    _e("lchown", path_call(_p(0, W, False)), (0,)),
    _e("fchownat", path_call(_at(0, 1, W, 4)), (1,)),
    _e("truncate", path_call(_p(0, W, True)), (0,)),
    _e("utime", path_call(_p(0, W, True)), (0,)),
    _e("utimes", path_call(_p(0, W, True)), (0,)),
    _e("futimesat", path_call(_at(0, 1, W, None, null=True)), (1,), nullable=(1,)),
    _e("utimensat", path_call(_at(0, 1, W, 3, null=True)), (1,), nullable=(1,)),
    _e("setxattr", path_call(_p(0, W, True)), (0,)),
    _e("lsetxattr", path_call(_p(0, W, False)), (0,)),
    _e("removexattr", path_call(_p(0, W, True)), (0,)),
    _e("lremovexattr", path_call(_p(0, W, False)), (0,)),
    _e("setxattrat", path_call(_at(0, 1, W, 2)), (1,)),
    _e("removexattrat", path_call(_at(0, 1, W, 2)), (1,)),
    _e("file_setattr", path_call(_at(0, 1, W, 4)), (1,)),
    _e("fchmod", fd_write("fchmodat", lambda s, p: (
        (0, AT_FDCWD), (1, _slot_path(p)), (2, s.arg(1)))), ()),
    _e("fchown", fd_write("fchownat", lambda s, p: (
        (0, AT_FDCWD), (1, _slot_path(p)), (2, s.arg(1)), (3, s.arg(2)),
        (4, AT_SYMLINK_NOFOLLOW))), ()),
    _e("fsetxattr", fd_write("lsetxattr", lambda s, p: ((0, _slot_path(p)),)), ()),
    _e("fremovexattr", fd_write("lremovexattr", lambda s, p: ((0, _slot_path(p)),)), ()),
    SyscallEntry("execve", OpClass.PROCESS, sys_execve, path_args=(0,), needs_exit=True,
                 note="path decided, program's own path bytes kept; exec logged with argv"),
    SyscallEntry("execveat", OpClass.PROCESS, sys_execve, path_args=(1,), needs_exit=True,
                 note="as execve; fexecve (AT_EMPTY_PATH) runs the fd it was given"),
)


# --- listings and the working directory, when the view is not the host's own ---------------
NR_LSEEK = sysnums.nr("lseek")
SEEK_SET = 0


def _set_result(n: int) -> Callable[[Stop, int], ExitResult]:
    return lambda stop, rv: ExitResult(result=n if rv >= 0 else rv)


def _getdents(pack) -> Callable[[Stop, Context], Action]:
    def handler(stop: Stop, ctx: Context) -> Action:
        fd = stop.sarg(0)
        listing = ctx.dir_listing(stop.tid, fd)
        if listing is None:
            return Allow()
        data, nxt = pack(listing, ctx.fd_position(stop.tid, fd), stop.arg(2) & 0xFFFFFFFF)
        if not data and nxt < len(listing):
            return Deny(errno.EINVAL, native=True)        # the buffer cannot hold one entry
        # The kernel keeps the position: it lseeks the fd while the tracer writes the entries.
        return Rewrite(((1, nxt), (2, SEEK_SET)), nr=NR_LSEEK, writes=(
            ((stop.arg(1), data),) if data else ()), on_exit=_set_result(len(data)),
            decision=Decision.ALLOWED)
    handler.__doc__ = "Serve a merged directory listing from the tracer; else the kernel's."
    return handler


def sys_getcwd(stop: Stop, ctx: Context) -> Action:
    """Implement getcwd(2): the working directory as the program knows it, not its host path."""
    cwd = ctx.cwd_path(stop.tid) + b"\0"
    if stop.arg(1) < len(cwd):
        return Deny(errno.ERANGE, native=True)
    return Emulate(len(cwd), ((stop.arg(0), cwd),), decision=Decision.ALLOWED)


def _layered(policy) -> bool:
    """Whether the policy uses modes whose view differs from the host's own."""
    from ..policy.model import FileMode
    modes = {policy.files.default} | {r.mode for r in policy.files.rules}
    return bool(modes & {FileMode.OVERLAY, FileMode.PRIVATE, FileMode.HIDDEN})


ENTRIES = ENTRIES + (
    SyscallEntry("getdents64", OpClass.FILE, _getdents(pack_dirents64), needs_exit=True,
                 enabled=_layered, note="merged listings served by the tracer"),
    SyscallEntry("getdents", OpClass.FILE, _getdents(pack_dirents), needs_exit=True,
                 enabled=_layered, note="merged listings served by the tracer"),
    SyscallEntry("getcwd", OpClass.FILE, sys_getcwd, enabled=_layered,
                 note="answers the program's own path, never the upper layer's"),
)
