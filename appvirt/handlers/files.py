"""The handlers of the path-taking file calls (declared in syscalls/files.py).

Each path argument is resolved in the tracer in the program's view (component by component)
and decided by the policy's file modes (paths.py). Then: opens become openat2 on a host path
(opens.py); calls that only read are answered by the tracer (reads.py); calls that change
files are made by the tracer through the overlay (changes.py). Exec (execs.py), listings and
getcwd (listing.py) and fstat (statmeta.py) have handler modules of their own.
"""

from __future__ import annotations

from ..store.procsys import under_proc_sys
from . import changes as ch
from . import reads as rd
from .changes import emulated, fd_operand, kernel_write, no_devices
from .filemodes import Intent
from .opens import sys_creat, sys_open, sys_openat, sys_openat2
from .paths import (AT_REMOVEDIR, AT_SYMLINK_FOLLOW, MAKES, MAKES_DIR, C, D, Operand, R, W,
                    at, making, not_flag, plain)
from .reads import kernel_read, mirror_call

IN_DONT_FOLLOW = 0x02000000
FAN_MARK_DONT_FOLLOW = 0x04
W_OK = 2


def _access_intent(mode_arg: int, path_arg: int):
    """access(W_OK) asks about writing, except of a sysctl: writing one is virtualized, so
    the host's answer (the tracer's faccessat2 on it, which changes nothing) is the truth."""
    def intent(s):  # type: ignore[no-untyped-def]
        if not s.arg(mode_arg) & W_OK:
            return Intent.READ
        path = s.path(path_arg) or b""
        return Intent.READ if under_proc_sys(path) and b".." not in path else Intent.WRITE
    return intent


_NF = dict(follow_default=False)
# The name a removal or rename takes away, and the one a rename makes.
_GONE, _GONE_AT = plain(0, D, False), at(0, 1, D, None, **_NF)
_TO, _TO_AT = plain(1, C, False), at(2, 3, C, None, **_NF)

HANDLERS = {
    "open": sys_open,
    "creat": sys_creat,
    "openat": sys_openat,
    "openat2": sys_openat2,
    # reads answered by the tracer
    "stat": mirror_call(plain(0, R, True), rd.STAT),
    "lstat": mirror_call(plain(0, R, False), rd.STAT),
    "newfstatat": mirror_call(at(0, 1, R, 3), rd.NEWFSTATAT),
    "statx": mirror_call(at(0, 1, R, 2), rd.STATX),
    "access": mirror_call(plain(0, _access_intent(1, 0), True), rd.access(1, None)),
    "faccessat": mirror_call(at(0, 1, _access_intent(2, 1), None), rd.access(2, None)),
    "faccessat2": mirror_call(at(0, 1, _access_intent(2, 1), 3), rd.access(2, 3)),
    "readlink": mirror_call(plain(0, R, False), rd.readlink(1, 2)),
    "readlinkat": mirror_call(at(0, 1, R, None, **_NF), rd.readlink(2, 3)),
    "statfs": mirror_call(plain(0, R, True), rd.STATFS),
    "getxattr": mirror_call(plain(0, R, True), rd.getxattr(1, 2, 3)),
    "lgetxattr": mirror_call(plain(0, R, False), rd.getxattr(1, 2, 3)),
    "listxattr": mirror_call(plain(0, R, True), rd.listxattr(1, 2)),
    "llistxattr": mirror_call(plain(0, R, False), rd.listxattr(1, 2)),
    # reads the kernel makes on the host path
    "chdir": kernel_read(plain(0, R, True), holds=True),
    "getxattrat": kernel_read(at(0, 1, R, 2)),
    "listxattrat": kernel_read(at(0, 1, R, 2)),
    "file_getattr": kernel_read(at(0, 1, R, 4)),
    "inotify_add_watch": kernel_read(plain(1, R, not_flag(2, IN_DONT_FOLLOW))),
    "fanotify_mark": kernel_read(Operand(4, 3, R, not_flag(1, FAN_MARK_DONT_FOLLOW),
                                         null_means_fd=True)),
    # changes made by the tracer through the overlay
    "umask": ch.sys_umask,
    "mkdir": emulated(making(plain(0, C, False), MAKES_DIR), do=ch.mkdir_do(1)),
    "mkdirat": emulated(making(at(0, 1, C, None, **_NF), MAKES_DIR), do=ch.mkdir_do(2)),
    "mknod": emulated(making(plain(0, C, False), MAKES), do=ch.mknod_do(1, 2),
                      refuse=no_devices(1)),
    "mknodat": emulated(making(at(0, 1, C, None, **_NF), MAKES), do=ch.mknod_do(2, 3),
                        refuse=no_devices(2)),
    "rmdir": emulated(_GONE, do=ch.rmdir_do, refuse=ch.slashed_remove(_GONE, lambda s: True)),
    "unlink": emulated(_GONE, do=ch.unlink_do,
                       refuse=ch.slashed_remove(_GONE, lambda s: False)),
    "unlinkat": emulated(_GONE_AT, do=ch.unlinkat_do,
                         refuse=ch.slashed_remove(_GONE_AT,
                                                  lambda s: bool(s.arg(2) & AT_REMOVEDIR))),
    "rename": emulated(_GONE, _TO, do=ch.rename_do(None), refuse=ch.slashed_rename(_GONE, _TO)),
    "renameat": emulated(_GONE_AT, _TO_AT, do=ch.rename_do(None),
                         refuse=ch.slashed_rename(_GONE_AT, _TO_AT)),
    "renameat2": emulated(_GONE_AT, _TO_AT, do=ch.rename_do(4),
                          refuse=ch.slashed_rename(_GONE_AT, _TO_AT)),
    "link": ch.link_call(plain(0, W, False), making(plain(1, C, False), MAKES)),
    "linkat": ch.link_call(at(0, 1, W, 4, follow_flag=AT_SYMLINK_FOLLOW),
                           making(at(2, 3, C, None, **_NF), MAKES)),
    "symlink": emulated(making(plain(1, C, False), MAKES), do=ch.symlink_do(0)),
    "symlinkat": emulated(making(at(1, 2, C, None, **_NF), MAKES), do=ch.symlink_do(0)),
    "chmod": emulated(plain(0, W, True), do=ch.chmod_do(1)),
    "fchmodat": emulated(at(0, 1, W, None), do=ch.chmod_do(2)),
    "fchmodat2": emulated(at(0, 1, W, 3), do=ch.chmod_do(2, 3)),
    "chown": emulated(plain(0, W, True), do=ch.chown_do(1, 2)),
    "lchown": emulated(plain(0, W, False), do=ch.chown_do(1, 2)),
    "fchownat": emulated(at(0, 1, W, 4), do=ch.chown_do(2, 3)),
    "truncate": emulated(plain(0, W, True), do=ch.truncate_do),
    "utime": emulated(plain(0, W, True), do=ch.utime_do(1, "utimbuf")),
    "utimes": emulated(plain(0, W, True), do=ch.utime_do(1, "timeval")),
    "futimesat": emulated(at(0, 1, W, None, null=True), do=ch.utime_do(2, "timeval")),
    "utimensat": emulated(at(0, 1, W, 3, null=True), do=ch.utime_do(2, "timespec", 3)),
    "setxattr": emulated(plain(0, W, True), do=ch.setxattr_do(1)),
    "lsetxattr": emulated(plain(0, W, False), do=ch.setxattr_do(1)),
    "removexattr": emulated(plain(0, W, True), do=ch.removexattr_do(1)),
    "lremovexattr": emulated(plain(0, W, False), do=ch.removexattr_do(1)),
    "fchmod": emulated(fd_operand(0), do=ch.chmod_do(1)),
    "fchown": emulated(fd_operand(0), do=ch.chown_do(1, 2)),
    "fsetxattr": emulated(fd_operand(0), do=ch.setxattr_do(1)),
    "fremovexattr": emulated(fd_operand(0), do=ch.removexattr_do(1)),
    # rarely used changes the kernel makes on the upper copy
    "setxattrat": kernel_write(at(0, 1, W, 2)),
    "removexattrat": kernel_write(at(0, 1, W, 2)),
    "file_setattr": kernel_write(at(0, 1, W, 4)),
}
