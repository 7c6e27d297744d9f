"""One-call lookups of host paths that cross no symlink (openat2 RESOLVE_NO_SYMLINKS).

Where the program's view of a path and of all its ancestors is the host's own, a lookup the
kernel makes without following any symlink gives exactly what a component-by-component walk
would: the walk is needed only where a symlink is met (then the kernel says ELOOP).
"""

from __future__ import annotations

import ctypes
import errno
import os

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
SYS_OPENAT2 = 437
AT_FDCWD = -100
O_PATH, O_NOFOLLOW, O_DIRECTORY, O_CLOEXEC = 0o10000000, 0o400000, 0o200000, 0o2000000
RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS = 0x02, 0x04


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_HOW_ANY = _OpenHow(O_PATH | O_NOFOLLOW | O_CLOEXEC, 0, RESOLVE_NO_SYMLINKS |
                    RESOLVE_NO_MAGICLINKS)
_HOW_DIR = _OpenHow(O_PATH | O_DIRECTORY | O_CLOEXEC, 0, RESOLVE_NO_SYMLINKS |
                    RESOLVE_NO_MAGICLINKS)
_SIZE = ctypes.sizeof(_OpenHow)


def _open(path: bytes, how: _OpenHow) -> int:
    fd = _libc.syscall(SYS_OPENAT2, AT_FDCWD, path, ctypes.byref(how), _SIZE)
    return fd if fd >= 0 else -ctypes.get_errno()


class Missing(Exception):
    """The final component does not exist, but its parent directory does."""


def lstat_no_symlinks(path: bytes) -> os.stat_result | int:
    """lstat of an absolute host path whose walk crosses no symlink: the stat result;
    raises Missing when only the final component is absent; else -errno (ELOOP: a symlink
    is on the way, ENOENT/ENOTDIR: an ancestor is missing or not a directory)."""
    fd = _open(path, _HOW_ANY)
    if fd >= 0:
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)
    if fd != -errno.ENOENT:
        return fd
    parent = path.rsplit(b"/", 1)[0] or b"/"
    pfd = _open(parent, _HOW_DIR)
    if pfd >= 0:
        os.close(pfd)
        raise Missing()
    return pfd
