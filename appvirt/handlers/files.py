"""File operations: every path-taking system call, in one table.

Each path argument is resolved in the tracer in the program's view (component by component)
and decided by the policy's file modes (paths.py). Then: opens become openat2 on a host path
(opens.py); calls that only read are answered by the tracer (reads.py); calls that change
files are made by the tracer through the overlay (changes.py); listings and getcwd are served
in the program's view (listing.py).
"""

from __future__ import annotations

from ..core.table import OpClass, Support, SyscallEntry
from ..store.procsys import under_proc_sys
from . import changes as ch
from . import reads as rd
from .changes import emulated, fd_operand, kernel_write, no_devices
from .filemodes import Intent
from .listing import ENTRIES as LISTING_ENTRIES
from .opens import sys_creat, sys_open, sys_openat, sys_openat2
from .paths import AT_SYMLINK_FOLLOW, C, D, Operand, R, W, at, not_flag, plain
from .reads import kernel_read, mirror_call, sys_execve

DEVICES = "device nodes: recorded stand-ins under identity: (CAP_MKNOD), else EPERM"

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


def _e(name: str, handler, paths: tuple[int, ...], nullable: tuple[int, ...] = (),
       note: str = "", support: Support = Support.FULL, exit_stop: bool = True
       ) -> SyscallEntry:
    return SyscallEntry(name, OpClass.FILE, handler, support, note, paths, nullable,
                        needs_exit=exit_stop)


def _m(name: str, handler, paths: tuple[int, ...], **kw) -> SyscallEntry:
    """An entry answered or made by the tracer: the kernel never runs it (no exit stop)."""
    return _e(name, handler, paths, exit_stop=False, **kw)


_NF = dict(follow_default=False)
ENTRIES: tuple[SyscallEntry, ...] = (
    _e("open", sys_open, (0,)),
    _e("creat", sys_creat, (0,)),
    _e("openat", sys_openat, (1,)),
    _e("openat2", sys_openat2, (1,), note="RESOLVE_* flags honoured in the tracer's walk"),
    # reads answered by the tracer
    _m("stat", mirror_call(plain(0, R, True), rd.STAT), (0,)),
    _m("lstat", mirror_call(plain(0, R, False), rd.STAT), (0,)),
    _m("newfstatat", mirror_call(at(0, 1, R, 3), rd.NEWFSTATAT), (1,)),
    _m("statx", mirror_call(at(0, 1, R, 2), rd.STATX), (1,)),
    _m("access", mirror_call(plain(0, _access_intent(1, 0), True), rd.access(1, None)), (0,)),
    _m("faccessat", mirror_call(at(0, 1, _access_intent(2, 1), None), rd.access(2, None)), (1,)),
    _m("faccessat2", mirror_call(at(0, 1, _access_intent(2, 1), 3), rd.access(2, 3)), (1,)),
    _m("readlink", mirror_call(plain(0, R, False), rd.readlink(1, 2)), (0,)),
    _m("readlinkat", mirror_call(at(0, 1, R, None, **_NF), rd.readlink(2, 3)), (1,)),
    _m("statfs", mirror_call(plain(0, R, True), rd.STATFS), (0,)),
    _m("getxattr", mirror_call(plain(0, R, True), rd.getxattr(1, 2, 3)), (0,)),
    _m("lgetxattr", mirror_call(plain(0, R, False), rd.getxattr(1, 2, 3)), (0,)),
    _m("listxattr", mirror_call(plain(0, R, True), rd.listxattr(1, 2)), (0,)),
    _m("llistxattr", mirror_call(plain(0, R, False), rd.listxattr(1, 2)), (0,)),
    # reads the kernel makes on the host path
    _e("chdir", kernel_read(plain(0, R, True)), (0,)),
    _e("getxattrat", kernel_read(at(0, 1, R, 2)), (1,)),
    _e("listxattrat", kernel_read(at(0, 1, R, 2)), (1,)),
    _e("file_getattr", kernel_read(at(0, 1, R, 4)), (1,)),
    _e("inotify_add_watch", kernel_read(plain(1, R, not_flag(2, IN_DONT_FOLLOW))), (1,)),
    _e("fanotify_mark", kernel_read(Operand(4, 3, R, not_flag(1, FAN_MARK_DONT_FOLLOW),
                                            null_means_fd=True)), (4,), nullable=(4,)),
    # changes made by the tracer through the overlay
    _m("mkdir", emulated(plain(0, C, False), do=ch.mkdir_do(1)), (0,)),
    _m("mkdirat", emulated(at(0, 1, C, None, **_NF), do=ch.mkdir_do(2)), (1,)),
    _m("mknod", emulated(plain(0, C, False), do=ch.mknod_do(1, 2), refuse=no_devices(1)),
       (0,), note=DEVICES, support=Support.PARTIAL),
    _m("mknodat", emulated(at(0, 1, C, None, **_NF), do=ch.mknod_do(2, 3),
                           refuse=no_devices(2)),
       (1,), note=DEVICES, support=Support.PARTIAL),
    _m("rmdir", emulated(plain(0, D, False), do=ch.rmdir_do), (0,)),
    _m("unlink", emulated(plain(0, D, False), do=ch.unlink_do), (0,)),
    _m("unlinkat", emulated(at(0, 1, D, None, **_NF), do=ch.unlinkat_do), (1,)),
    _m("rename", emulated(plain(0, D, False), plain(1, C, False), do=ch.rename_do(None)),
       (0, 1)),
    _m("renameat", emulated(at(0, 1, D, None, **_NF), at(2, 3, C, None, **_NF),
                            do=ch.rename_do(None)), (1, 3)),
    _m("renameat2", emulated(at(0, 1, D, None, **_NF), at(2, 3, C, None, **_NF),
                             do=ch.rename_do(4)), (1, 3),
       note="RENAME_NOREPLACE and RENAME_EXCHANGE; RENAME_WHITEOUT is EINVAL"),
    _m("link", ch.link_call(plain(0, W, False), plain(1, C, False)), (0, 1)),
    _m("linkat", ch.link_call(at(0, 1, W, 4, follow_flag=AT_SYMLINK_FOLLOW),
                              at(2, 3, C, None, **_NF)), (1, 3),
       note="O_TMPFILE files (AT_EMPTY_PATH, /proc/self/fd/N) linked into the overlay"),
    _m("symlink", emulated(plain(1, C, False), do=ch.symlink_do(0)), (0, 1)),
    _m("symlinkat", emulated(at(1, 2, C, None, **_NF), do=ch.symlink_do(0)), (0, 2)),
    _m("chmod", emulated(plain(0, W, True), do=ch.chmod_do(1)), (0,)),
    _m("fchmodat", emulated(at(0, 1, W, None), do=ch.chmod_do(2)), (1,)),
    _m("fchmodat2", emulated(at(0, 1, W, 3), do=ch.chmod_do(2, 3)), (1,)),
    _m("chown", emulated(plain(0, W, True), do=ch.chown_do(1, 2)), (0,)),
    _m("lchown", emulated(plain(0, W, False), do=ch.chown_do(1, 2)), (0,)),
    _m("fchownat", emulated(at(0, 1, W, 4), do=ch.chown_do(2, 3)), (1,)),
    _m("truncate", emulated(plain(0, W, True), do=ch.truncate_do), (0,)),
    _m("utime", emulated(plain(0, W, True), do=ch.utime_do(1, "utimbuf")), (0,)),
    _m("utimes", emulated(plain(0, W, True), do=ch.utime_do(1, "timeval")), (0,)),
    _m("futimesat", emulated(at(0, 1, W, None, null=True), do=ch.utime_do(2, "timeval")),
       (1,), nullable=(1,)),
    _m("utimensat", emulated(at(0, 1, W, 3, null=True), do=ch.utime_do(2, "timespec", 3)),
       (1,), nullable=(1,), note="\"now\" is the virtual clock's when time is virtualized"),
    _m("setxattr", emulated(plain(0, W, True), do=ch.setxattr_do(1)), (0,)),
    _m("lsetxattr", emulated(plain(0, W, False), do=ch.setxattr_do(1)), (0,)),
    _m("removexattr", emulated(plain(0, W, True), do=ch.removexattr_do(1)), (0,)),
    _m("lremovexattr", emulated(plain(0, W, False), do=ch.removexattr_do(1)), (0,)),
    _m("fchmod", emulated(fd_operand(0), do=ch.chmod_do(1)), (),
       note="lands on the upper copy when the fd refers to a host file"),
    _m("fchown", emulated(fd_operand(0), do=ch.chown_do(1, 2)), (),
       note="lands on the upper copy when the fd refers to a host file"),
    _m("fsetxattr", emulated(fd_operand(0), do=ch.setxattr_do(1)), (),
       note="lands on the upper copy when the fd refers to a host file"),
    _m("fremovexattr", emulated(fd_operand(0), do=ch.removexattr_do(1)), (),
       note="lands on the upper copy when the fd refers to a host file"),
    # rarely used changes the kernel makes on the upper copy
    _e("setxattrat", kernel_write(at(0, 1, W, 2)), (1,)),
    _e("removexattrat", kernel_write(at(0, 1, W, 2)), (1,)),
    _e("file_setattr", kernel_write(at(0, 1, W, 4)), (1,)),
    SyscallEntry("execve", OpClass.PROCESS, sys_execve, path_args=(0,), needs_exit=True,
                 note="path decided; exec logged with argv; upper-layer programs by host path"),
    SyscallEntry("execveat", OpClass.PROCESS, sys_execve, path_args=(1,), needs_exit=True,
                 note="as execve; fexecve (AT_EMPTY_PATH) runs the fd it was given"),
) + LISTING_ENTRIES
