"""open, openat, openat2, creat: decided in the program's view, then openat2 on a host path.

The host path comes from the overlay: the upper copy (made now, for writing), the lower file
(for reading), or the place a new file is created (recorded when the kernel succeeds). It goes
to the kernel from the slot with RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS: a directory
swapped for a symlink after the check makes the kernel fail with ELOOP, and the call is
restarted and re-checked (#17).
"""

from __future__ import annotations

import errno
import os
import stat as statmod
import struct
from collections.abc import Callable

from ..core import sysnums
from ..core.action import (Action, Decision, Deny, ExitResult, ExitVerdict, Note, Rewrite,
                           SlotData)
from ..core.context import Context
from ..core.stop import Stop
from ..errors import GuestErrno
from ..fs.resolver import Resolved
from ..store.procsys import under_proc_sys
from .filemodes import Intent, check
from .paths import AT_FDCWD, slot_path
from .reads import kept_dir
from .statmeta import own_created

O_ACCMODE, O_WRONLY, O_RDWR = 0o3, 0o1, 0o2
O_CREAT, O_EXCL, O_TRUNC, O_APPEND = 0o100, 0o200, 0o1000, 0o2000
O_LARGEFILE, O_DIRECTORY, O_NOFOLLOW = 0o100000, 0o200000, 0o400000
O_CLOEXEC, O_PATH, O_TMPFILE_BIT = 0o2000000, 0o10000000, 0o20000000
VALID_OPEN_FLAGS = 0o37777703           # every bit build_open_flags() accepts
O_PATH_FLAGS = O_DIRECTORY | O_NOFOLLOW | O_PATH | O_CLOEXEC
S_IALLUGO = 0o7777
RESOLVE_NO_XDEV, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS = 0x01, 0x02, 0x04
RESOLVE_BENEATH, RESOLVE_IN_ROOT = 0x08, 0x10
OPEN_HOW = struct.Struct("<QQQ")
OPEN_HOW_SIZE_VER0 = 24
NR_OPENAT2 = sysnums.nr("openat2")
ExitHook = Callable[[Stop, int], ExitResult]


def open_intent(flags: int, exists: bool) -> Intent:
    if flags & O_TMPFILE_BIT or (flags & O_CREAT and not exists):
        return Intent.CREATE
    if flags & O_ACCMODE in (O_WRONLY, O_RDWR) or flags & O_TRUNC:
        return Intent.WRITE
    return Intent.READ


def _same_object(tid: int, expected: tuple[int, int]) -> ExitHook:
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


def _checked_open(ctx: Context, created: bytes | None) -> ExitHook:
    """ELOOP after RESOLVE_NO_SYMLINKS on a path checked free of symlinks: a component was
    swapped for a symlink after the check; re-run the call (it is re-checked). A file the
    kernel created is recorded in the overlay."""
    def hook(stop: Stop, result: int) -> ExitResult:
        if result == -errno.ELOOP:
            return ExitResult(ExitVerdict.RESTART)
        if result >= 0 and created is not None:
            ctx.fs.created(created)
            own_created(stop, ctx, created)
        return ExitResult()
    return hook


def do_open(stop: Stop, ctx: Context, dirfd: int | None, path: bytes, flags: int, mode: int,
            resolve_flags: int) -> Action:
    if not path:
        return Deny(errno.ENOENT, native=True)
    if resolve_flags & RESOLVE_BENEATH and resolve_flags & RESOLVE_IN_ROOT:
        return Deny(errno.EINVAL, native=True)
    tmpfile = bool(flags & O_TMPFILE_BIT)
    if flags & O_CREAT and path.endswith(b"/") and path.strip(b"/"):
        # The kernel creates no "name/": EISDIR, once the walk to the name has gone well.
        ctx.resolve(stop, dirfd, path.rstrip(b"/"), follow=False)
        return Deny(errno.EISDIR, native=True)
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
    intent = open_intent(flags, r.exists)
    if intent is not Intent.READ and under_proc_sys(r.path):
        return _sysctl_write(stop, ctx, r, flags)
    if not tmpfile and r.magic is None and open_intent(flags, True) is Intent.READ:
        spooled = _machine_file(stop, ctx, r, flags, resolve_flags)
        if spooled is not None:
            return spooled
    if not r.exists and not (flags & O_CREAT) and not tmpfile:
        return Deny(errno.ENOENT, Note(path=r.path), native=True)
    deny, note = check(ctx.policy, r, intent, ctx.is_member)
    if deny is not None:
        return Deny(deny.errno, note)
    how_resolve = resolve_flags & ~(RESOLVE_BENEATH | RESOLVE_IN_ROOT)
    if r.magic is not None:
        if intent is not Intent.READ and ctx.shares_fd_table(stop.tid):
            # Another thread could swap the fd between this check and the kernel's use.
            return Deny(errno.EACCES, Note(
                path=r.path, rule="builtin:fd-object",
                hint="reopen for writing through /proc/self/fd only from single-threaded code"))
        if intent is not Intent.READ and _names_a_sysctl(r.magic.proc_path):
            return Deny(errno.EACCES, Note(path=r.path, rule="builtin:sysctl",
                                           detail="a sysctl reopened for writing"))
        return Rewrite(((0, AT_FDCWD), (1, slot_path(r.kernel_path)), (2, SlotData(
            OPEN_HOW.pack(flags, mode, how_resolve))), (3, OPEN_HOW_SIZE_VER0)),
            nr=NR_OPENAT2, note=note, on_exit=_same_object(stop.tid, (r.magic.dev, r.magic.ino)),
            decision=Decision.ALLOWED)
    created = None
    if tmpfile:
        host = ctx.fs.host_for_write(r.path)          # the directory the file is made in
    elif intent is Intent.CREATE:
        host = ctx.fs.host_for_create(r.path)
        created = r.path
    elif intent is Intent.WRITE:
        host = ctx.fs.host_for_write(r.path, truncate=bool(flags & O_TRUNC))
    else:
        host = kept_dir(ctx, r) or ctx.fs.host_for_read(r.path)
        # Existing and only read here: if it vanished meanwhile, fail rather than create it
        # in a place whose mode only allowed reading (and openat2 wants no mode without it).
        flags &= ~O_CREAT
        mode = 0
    if r.trailing_slash:
        host += b"/"
    how = OPEN_HOW.pack(flags & 0xFFFFFFFFFFFFFFFF, mode,
                        how_resolve | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
    moved = host.rstrip(b"/") != r.path
    note = Note(rule=note.rule, path=r.path, host_path=host if moved else None)
    return Rewrite(((0, AT_FDCWD), (1, slot_path(host)), (2, SlotData(how)),
                    (3, OPEN_HOW_SIZE_VER0)), nr=NR_OPENAT2, note=note,
                   on_exit=_checked_open(ctx, created),
                   decision=Decision.REDIRECTED if moved else Decision.ALLOWED)


def _machine_file(stop: Stop, ctx: Context, r: Resolved, flags: int, resolve_flags: int
                  ) -> Action | None:
    """An open for reading of a machine file appvirt virtualizes (/proc/modules, the host
    name under /proc/sys ...): the kernel opens a spool copy written for this very open,
    which is unlinked as soon as the call returns (the new fd keeps it)."""
    if r.trailing_slash:
        return None
    try:
        spooled = ctx.machine_file(stop.tid, r.path)
    except OSError as e:
        return Deny(e.errno or errno.EIO, Note(path=r.path, rule="builtin:machine-file",
                                               detail="cannot write the spool file"))
    if spooled is None:
        return None

    def release(stop: Stop, result: int) -> ExitResult:
        try:
            os.unlink(spooled)
        except OSError:
            pass
        return ExitResult()
    if check(ctx.policy, r, Intent.READ, ctx.is_member)[0] is not None:
        release(stop, 0)
        return None                     # decided as any other path (hidden: ENOENT ...)
    how = OPEN_HOW.pack(flags & ~O_CREAT & 0xFFFFFFFFFFFFFFFF, 0, RESOLVE_NO_SYMLINKS
                        | RESOLVE_NO_MAGICLINKS | resolve_flags & RESOLVE_NO_XDEV)
    return Rewrite(((0, AT_FDCWD), (1, slot_path(spooled)), (2, SlotData(how)),
                    (3, OPEN_HOW_SIZE_VER0)), nr=NR_OPENAT2,
                   note=Note(rule="builtin:machine-file", path=r.path), on_exit=release,
                   decision=Decision.EMULATED)


def _sysctl_write(stop: Stop, ctx: Context, r: Resolved, flags: int) -> Action:
    """An open under /proc/sys for writing: the kernel opens a new spool file instead, whose
    content becomes the app's value of the sysctl (tracer/sysctlfiles.py). Nothing written
    reaches the host's sysctls: whatever goes wrong here, the open is refused."""
    try:
        if flags & O_TMPFILE_BIT:
            raise GuestErrno(errno.EACCES, "/proc/sys directories are read-only")
        host = ctx.sysctl_file(stop.tid, r)
    except GuestErrno as e:
        return Deny(e.errno, Note(rule=e.rule or "builtin:sysctl", path=r.path,
                                  detail=e.detail), native=not e.rule)
    except Exception as e:  # noqa: BLE001 - fail closed (#37)
        return Deny(errno.EACCES, Note(rule="builtin:sysctl", path=r.path,
                                       detail=f"internal error: {type(e).__name__}: {e}"))

    def abandoned(stop: Stop, result: int) -> ExitResult:
        if result < 0:
            ctx.sysctl_abandoned(host)
        return ExitResult()
    how = OPEN_HOW.pack(flags & ~(O_CREAT | O_EXCL) & 0xFFFFFFFFFFFFFFFF, 0,
                        RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
    return Rewrite(((0, AT_FDCWD), (1, slot_path(host)), (2, SlotData(how)),
                    (3, OPEN_HOW_SIZE_VER0)), nr=NR_OPENAT2,
                   note=Note(rule="builtin:sysctl", path=r.path, host_path=host,
                             detail="the value goes to the app's store"),
                   on_exit=abandoned, decision=Decision.EMULATED)


def _names_a_sysctl(proc_path: bytes) -> bool:
    """Whether a /proc/PID/fd/N link shows a file under /proc/sys (fail closed: True when it
    cannot be read)."""
    try:
        return under_proc_sys(os.readlink(proc_path))
    except OSError:
        return True


def legacy_how(flags: int, mode: int) -> tuple[int, int]:
    """What the kernel's build_open_how() makes of open()/openat() flags and mode."""
    flags = (flags & 0xFFFFFFFF) | O_LARGEFILE
    flags &= VALID_OPEN_FLAGS
    if flags & O_PATH:
        flags &= O_PATH_FLAGS
    mode = mode & S_IALLUGO if flags & (O_CREAT | O_TMPFILE_BIT) else 0
    return flags, mode


def sys_open(stop: Stop, ctx: Context) -> Action:
    """Implement open(2): resolve, decide, then openat2 on the host path."""
    flags, mode = legacy_how(stop.arg(1), stop.arg(2))
    return do_open(stop, ctx, None, stop.paths[0] or b"", flags, mode, 0)


def sys_creat(stop: Stop, ctx: Context) -> Action:
    """Implement creat(2) as open(O_CREAT|O_WRONLY|O_TRUNC)."""
    flags, mode = legacy_how(O_CREAT | O_WRONLY | O_TRUNC, stop.arg(1))
    return do_open(stop, ctx, None, stop.paths[0] or b"", flags, mode, 0)


def sys_openat(stop: Stop, ctx: Context) -> Action:
    """Implement openat(2)."""
    flags, mode = legacy_how(stop.arg(2), stop.arg(3))
    return do_open(stop, ctx, stop.sarg(0), stop.paths[0] or b"", flags, mode, 0)


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
    return do_open(stop, ctx, stop.sarg(0), stop.paths[0] or b"", flags, mode, resolve_flags)


