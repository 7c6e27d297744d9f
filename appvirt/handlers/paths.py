"""Path arguments: how each call names files, and the decision every path call starts with.

An `Operand` says where a call's path and dirfd are, whether a final symlink is followed, what
the call does to the file (its intent), and whether an empty or NULL path names the dirfd's
own object. `decide` resolves it in the program's view and applies the file modes.
"""

import errno
import stat as statmod
from collections.abc import Callable
from typing import NamedTuple

from ..core.action import Deny, Note, SlotData
from ..core.context import Context
from ..core.stop import Stop
from ..errors import GuestErrno
from ..fs.resolver import Resolved
from .filemodes import Intent, check

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_REMOVEDIR = 0x200
AT_SYMLINK_FOLLOW = 0x400
AT_EMPTY_PATH = 0x1000

Flagged = Callable[[Stop], bool]
R, W, C, D = Intent.READ, Intent.WRITE, Intent.CREATE, Intent.DELETE


class Operand(NamedTuple):
    """One path argument of a call, and what the call does to it."""

    path: int                                   # argument index of the path
    dirfd: int | None                           # argument index of its dirfd, if any
    intent: Intent | Callable[[Stop], Intent]
    follow: bool | Flagged                      # follow a symlink in the last component
    empty_means_fd: Flagged | None = None       # AT_EMPTY_PATH: "" names the dirfd itself
    null_means_fd: bool = False                 # NULL names the dirfd itself (utimensat)
    flags_arg: int | None = None                # where AT_* flags live
    makes: str | None = None                    # the call makes this name: MAKES_DIR, MAKES


def flag(arg: int, bit: int) -> Flagged:
    return lambda s: bool(s.arg(arg) & bit)


def not_flag(arg: int, bit: int) -> Flagged:
    return lambda s: not s.arg(arg) & bit


MAKES_DIR, MAKES = "dir", "name"     # mkdir; mknod, symlink, link


def making(op: Operand, kind: str) -> Operand:
    """op, the name a call makes (MAKES_DIR for mkdir, MAKES for the rest)."""
    return op._replace(makes=kind)


def plain(path: int, intent, follow) -> Operand:
    """A path argument relative to the working directory."""
    return Operand(path, None, intent, follow)


def at(dirfd: int, path: int, intent, flags: int | None, *, follow_default: bool = True,
       follow_flag: int = AT_SYMLINK_NOFOLLOW, empty: bool = True, null: bool = False
       ) -> Operand:
    """A `*at` operand whose flags argument may hold AT_SYMLINK_(NO)FOLLOW and AT_EMPTY_PATH."""
    if flags is None:
        return Operand(path, dirfd, intent, follow_default, None, null, None)
    follow = flag(flags, follow_flag) if follow_flag == AT_SYMLINK_FOLLOW \
        else not_flag(flags, follow_flag)
    return Operand(path, dirfd, intent, follow, flag(flags, AT_EMPTY_PATH) if empty else None,
                   null, flags)


def slot_path(path: bytes) -> SlotData:
    return SlotData(path + b"\0")


class Decided(NamedTuple):
    """A path operand the policy allows: what it resolved to, and why."""

    r: Resolved
    intent: Intent
    note: Note
    fd_form: bool = False      # the call names its dirfd's object (AT_EMPTY_PATH / NULL)


def intent_of(op: Operand, stop: Stop) -> Intent:
    return op.intent(stop) if callable(op.intent) else op.intent


def _slashed_name(stop: Stop, ctx: Context, op: Operand, path: bytes) -> Deny | None:
    """A name to make written with a trailing slash, as the kernel's filename_create takes
    it: the name itself, never followed, is looked up first; when it is there (a file, a
    dangling symlink) the call fails with EEXIST; when it is not, only mkdir makes it (the
    others fail with ENOENT: a slash asks for a directory). None: go on with the path (also
    when the walk to the name fails, as it fails with the slash)."""
    named = _final_object(stop, ctx, op, path)
    if named is None:
        return None
    if named.exists:
        return Deny(errno.EEXIST, native=True)
    return None if op.makes == MAKES_DIR else Deny(errno.ENOENT, native=True)


def _final_object(stop: Stop, ctx: Context, op: Operand, path: bytes) -> Resolved | None:
    """What the last name of path is, not followed (as rename and rmdir take it, even
    written with a trailing slash); None when the walk to it fails (the handlers say how)."""
    try:
        return ctx.resolve(stop, stop.sarg(op.dirfd) if op.dirfd is not None else None,
                           path.rstrip(b"/") or b"/", follow=False)
    except GuestErrno:
        return None


def _not_a_directory(r: Resolved | None) -> bool:
    return r is not None and r.st is not None and not statmod.S_ISDIR(r.st.st_mode)


def slash_on_a_non_directory(stop: Stop, ctx: Context, src: Operand, dst: Operand) -> bool:
    """rename's rule for trailing slashes, which ask for directories: the source there and
    not a directory (a file, a symlink even to one), or a destination written "name/" that
    is there and is not one, and the call fails with ENOTDIR (the handlers would otherwise
    follow "link/" or make "new/")."""
    names = (stop.path(src.path), stop.path(dst.path))
    if not names[0] or not names[1] or not (names[0].endswith(b"/") or names[1].endswith(b"/")):
        return False
    old, new = _final_object(stop, ctx, src, names[0]), _final_object(stop, ctx, dst, names[1])
    if old is None or new is None:
        return False                 # a walk fails first: the handlers say how
    return _not_a_directory(old) or (names[1].endswith(b"/") and _not_a_directory(new))


def slashed_removal(stop: Stop, ctx: Context, op: Operand, removes_dir: bool) -> int | None:
    """The kernel's answer to rmdir or unlink of "name/", whose last name is not followed
    (the handlers would otherwise remove what "link/" points to): rmdir of a symlink is
    ENOTDIR; unlink is ENOENT, EISDIR or ENOTDIR as the name is missing, a directory or
    anything else. None: not such a call, or the walk to the name fails (the handlers say
    how)."""
    path = stop.path(op.path)
    if not path or not path.endswith(b"/"):
        return None
    r = _final_object(stop, ctx, op, path)
    if r is None:
        return None
    if removes_dir:
        return errno.ENOTDIR if r.st is not None and statmod.S_ISLNK(r.st.st_mode) else None
    if not r.exists:
        return errno.ENOENT
    return errno.EISDIR if r.st is not None and statmod.S_ISDIR(r.st.st_mode) else errno.ENOTDIR


def decide(stop: Stop, ctx: Context, op: Operand) -> Decided | Deny:
    """Resolve an operand in the program's view and apply the file modes."""
    intent = intent_of(op, stop)
    path = stop.path(op.path)
    if path is None or (path == b"" and op.empty_means_fd and op.empty_means_fd(stop)):
        if path is None and not op.null_means_fd:
            return Deny(errno.EFAULT, native=True)
        fd = stop.sarg(op.dirfd) if op.dirfd is not None else AT_FDCWD
        r = ctx.fd_object(stop.tid, fd)
        fd_form = True
    else:
        follow = op.follow(stop) if callable(op.follow) else op.follow
        dirfd = stop.sarg(op.dirfd) if op.dirfd is not None else None
        if op.makes is not None and path.endswith(b"/") and path.strip(b"/"):
            made = _slashed_name(stop, ctx, op, path)
            if made is not None:
                return made
        r = ctx.resolve(stop, dirfd, path, follow=follow)
        fd_form = False
        if r.magic is not None and intent is not Intent.READ:
            return Deny(errno.EACCES, Note(path=r.path, rule="builtin:fd-object"))
    deny, note = check(ctx.policy, r, intent, ctx.is_member)
    if deny is not None:
        return Deny(deny.errno, note)
    return Decided(r, intent, note, fd_form)
