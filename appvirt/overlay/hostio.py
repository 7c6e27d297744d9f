"""Thin wrappers of the os calls the overlay makes on host paths.

Paths are bytes everywhere in the overlay; they are handed to `os` as str (surrogateescape,
lossless on Linux) because pyfakefs, which the unit tests use, mishandles some bytes paths.
Nothing here follows a symlink unless its name says so.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import stat
from collections.abc import Iterator

_s = os.fsdecode
_REAL_RENAME = os.rename            # see exchange(): compared to spot a faked `os`

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
RENAME_WHITEOUT = 4


def euid() -> int:
    """The effective uid the overlay acts with (a function so that tests can pretend)."""
    return os.geteuid()


def lstat(p: bytes) -> os.stat_result | None:
    """lstat, or None when there is nothing there (ENOENT, or ENOTDIR on the way)."""
    try:
        return os.lstat(_s(p))
    except (FileNotFoundError, NotADirectoryError):
        return None


def scan(p: bytes) -> dict[bytes, tuple[int, int]]:
    """The names of a directory -> (d_type, inode); {} if it is missing or not a directory."""
    out: dict[bytes, tuple[int, int]] = {}
    try:
        it = os.scandir(_s(p))
    except (FileNotFoundError, NotADirectoryError):
        return out
    with it:
        for e in it:
            if e.is_dir(follow_symlinks=False):
                dt = stat.S_IFDIR >> 12
            elif e.is_file(follow_symlinks=False):
                dt = stat.S_IFREG >> 12
            elif e.is_symlink():
                dt = stat.S_IFLNK >> 12
            else:
                try:
                    dt = stat.S_IFMT(e.stat(follow_symlinks=False).st_mode) >> 12
                except FileNotFoundError:
                    continue
            out[os.fsencode(e.name)] = (dt, e.inode())
    return out


def readlink(p: bytes) -> bytes:
    return os.fsencode(os.readlink(_s(p)))


def mkdir(p: bytes, mode: int = 0o700) -> None:
    os.mkdir(_s(p), mode)


def rmdir(p: bytes) -> None:
    os.rmdir(_s(p))


def unlink(p: bytes) -> None:
    os.unlink(_s(p))


def rename(src: bytes, dst: bytes) -> None:
    os.rename(_s(src), _s(dst))


def link(src: bytes, dst: bytes) -> None:
    os.link(_s(src), _s(dst), follow_symlinks=False)


def symlink(target: bytes, p: bytes) -> None:
    os.symlink(_s(target), _s(p))


def mknod(p: bytes, mode: int, dev: int = 0) -> None:
    os.mknod(_s(p), mode, dev)


def chmod(p: bytes, mode: int) -> None:
    os.chmod(_s(p), mode)


def chown(p: bytes, uid: int, gid: int) -> None:
    os.chown(_s(p), uid, gid, follow_symlinks=False)


def utime(p: bytes, atime_ns: int, mtime_ns: int) -> None:
    os.utime(_s(p), ns=(atime_ns, mtime_ns), follow_symlinks=False)


def truncate(p: bytes, length: int) -> None:
    os.truncate(_s(p), length)


def create_empty(p: bytes, mode: int = 0o600) -> None:
    """Create an empty regular file; EEXIST if something is there."""
    os.close(os.open(_s(p), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | os.O_CLOEXEC, mode))


def open_read(p: bytes) -> int:
    """A regular file's fd for reading; never blocks (a FIFO put in its place meanwhile)."""
    return os.open(_s(p), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)


def open_new(p: bytes, mode: int = 0o600) -> int:
    return os.open(_s(p), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                   mode)


def listxattr(p: bytes) -> list[str]:
    return os.listxattr(_s(p), follow_symlinks=False)


def getxattr(p: bytes, name: str | bytes) -> bytes:
    return os.getxattr(_s(p), name, follow_symlinks=False)


def setxattr(p: bytes, name: str | bytes, value: bytes, flags: int = 0) -> None:
    os.setxattr(_s(p), name, value, flags, follow_symlinks=False)


def removexattr(p: bytes, name: str | bytes) -> None:
    os.removexattr(_s(p), name, follow_symlinks=False)


def remove_tree(p: bytes) -> None:
    """Remove whatever is at p (a directory recursively), never following symlinks."""
    st = lstat(p)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        if euid() != 0 and st.st_mode & 0o700 != 0o700:
            # Our own directory made read-only (a copy of a 0555 one): it is going away.
            with contextlib.suppress(OSError):
                chmod(p, 0o700)
        for name in scan(p):
            remove_tree(p + b"/" + name)
        rmdir(p)
    else:
        unlink(p)


def parent_of(p: bytes) -> bytes:
    i = p.rfind(b"/")
    return p[:i] or b"/"


@contextlib.contextmanager
def keep_times(d: bytes) -> Iterator[None]:
    """Restore a directory's atime/mtime after bookkeeping the program must not notice."""
    st = lstat(d)
    try:
        yield
    finally:
        if st is not None:
            with contextlib.suppress(OSError):
                utime(d, st.st_atime_ns, st.st_mtime_ns)


@contextlib.contextmanager
def writable_dir(d: bytes) -> Iterator[None]:
    """Let the overlay add a name to a directory of its own that its mode makes read-only.

    As root nothing is needed. Otherwise an upper directory copied from, say, a 0555 lower one
    is 0555 but ours: copy-up into it must still work (the kernel's overlayfs does it with the
    mounter's credentials), so grant u+wx for the duration and restore the mode after.
    """
    st = lstat(d) if euid() != 0 else None
    if st is None or st.st_uid != euid() or st.st_mode & 0o300 == 0o300:
        yield
        return
    chmod(d, stat.S_IMODE(st.st_mode) | 0o300)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            chmod(d, stat.S_IMODE(st.st_mode))


@functools.cache
def _renameat2() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """libc's renameat2 (None before glibc 2.28), from the C library Python itself uses."""
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is not None:
        fn.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                       ctypes.c_uint)
        fn.restype = ctypes.c_int
    return fn


_AT_FDCWD = -100


def rename_flags(src: bytes, dst: bytes, flags: int) -> None:
    """renameat2(2) with flags on real host paths (passthrough and the upper's exchange)."""
    if flags == 0:
        return rename(src, dst)
    fn = _renameat2() if os.rename is _REAL_RENAME else None
    if fn is not None:
        if fn(_AT_FDCWD, src, _AT_FDCWD, dst, flags) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), _s(src), None, _s(dst))
        return None
    # No renameat2 (or a faked `os` under test): the same outcome, not atomically.
    dst_st = lstat(dst)
    if flags & RENAME_NOREPLACE:
        if dst_st is not None:
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), _s(dst))
        return rename(src, dst)
    if flags & RENAME_EXCHANGE:
        if dst_st is None or lstat(src) is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), _s(dst))
        from .names import tmp_name
        tmp = parent_of(src) + b"/" + tmp_name()
        rename(src, tmp)
        rename(dst, src)
        rename(tmp, dst)
        return None
    raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
