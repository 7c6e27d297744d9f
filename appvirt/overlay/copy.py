"""Copying one object with its metadata: the mechanics of copy-up (and of commit).

A copy keeps content (with its sparse holes), mode, owner (when running as root), extended
attributes and atime/mtime in nanoseconds; a symlink stays a symlink. `copy_atomic` builds
the copy under a temporary name in the target directory and renames it into place, so a
failure or a crash never leaves a partial object under the real name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from . import hostio
from .names import tmp_name

CHUNK = 1 << 20
# xattr failures that only mean "this namespace cannot be copied here" (security.*, trusted.*
# without privilege, a file system without xattrs, user.* on a symlink).
_XATTR_SKIP = {errno.EPERM, errno.EACCES, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA,
               errno.E2BIG, errno.ERANGE}


def _data_segments(fd: int, size: int) -> list[tuple[int, int]]:
    """The [start, end) ranges holding data; the rest are holes (one range if unknown)."""
    segs: list[tuple[int, int]] = []
    pos = 0
    try:
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:      # nothing but a hole up to the end
                    break
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            if end <= start:
                raise ValueError("bad SEEK_HOLE answer")
            segs.append((start, end))
            pos = end
    except (OSError, ValueError, AttributeError):
        return [(0, size)]
    return segs


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def copy_data(fd_in: int, fd_out: int, size: int) -> None:
    """Copy size bytes, skipping holes (the output is then extended to size)."""
    for start, end in _data_segments(fd_in, size):
        os.lseek(fd_in, start, os.SEEK_SET)
        os.lseek(fd_out, start, os.SEEK_SET)
        pos = start
        while pos < end:
            chunk = os.read(fd_in, min(CHUNK, end - pos))
            if not chunk:              # the file shrank under us: keep what there is
                break
            _write_all(fd_out, chunk)
            pos += len(chunk)
    os.ftruncate(fd_out, size)


def _copy_file(src: bytes, dst: bytes, data: bool) -> None:
    fd_in = hostio.open_read(src)
    try:
        size = os.fstat(fd_in).st_size if data else 0
        fd_out = hostio.open_new(dst, 0o600)
        try:
            copy_data(fd_in, fd_out, size)
            os.fsync(fd_out)           # the rename that publishes it must not outrun the data
        finally:
            os.close(fd_out)
    finally:
        os.close(fd_in)


def copy_xattrs(src: bytes, dst: bytes) -> None:
    try:
        names = hostio.listxattr(src)
    except OSError as e:
        if e.errno in _XATTR_SKIP:
            return
        raise
    for name in names:
        try:
            hostio.setxattr(dst, name, hostio.getxattr(src, name))
        except OSError as e:
            if e.errno not in _XATTR_SKIP:
                raise


def create_like(src: bytes, dst: bytes, st: os.stat_result, *, data: bool = True) -> None:
    """Create dst as a copy of src (whose lstat is st) with owner and xattrs, not yet its
    mode and times (see finish_like): a directory stays writable for its children."""
    fmt = stat.S_IFMT(st.st_mode)
    if fmt == stat.S_IFREG:
        _copy_file(src, dst, data)
    elif fmt == stat.S_IFDIR:
        hostio.mkdir(dst, 0o700)
    elif fmt == stat.S_IFLNK:
        hostio.symlink(hostio.readlink(src), dst)
    else:                              # FIFO, socket; device nodes need root (EPERM otherwise)
        hostio.mknod(dst, fmt | 0o600, getattr(st, "st_rdev", 0))
    if hostio.euid() == 0:
        # Before the xattrs and the mode: chown drops setuid bits and security.capability.
        with contextlib.suppress(OSError):
            hostio.chown(dst, st.st_uid, st.st_gid)
    if fmt != stat.S_IFLNK:
        copy_xattrs(src, dst)


def finish_like(dst: bytes, st: os.stat_result) -> None:
    """Give dst the mode and times of st (after its content and children are in place)."""
    if not stat.S_ISLNK(st.st_mode):
        hostio.chmod(dst, stat.S_IMODE(st.st_mode))
    hostio.utime(dst, st.st_atime_ns, st.st_mtime_ns)


def copy_into(src: bytes, dst: bytes, st: os.stat_result, *, data: bool = True) -> None:
    """Create dst as a complete copy of src (a directory without its children)."""
    create_like(src, dst, st, data=data)
    finish_like(dst, st)


def discard(p: bytes) -> None:
    """Remove a temporary object, whatever state a failed copy left it in."""
    with contextlib.suppress(OSError):
        hostio.remove_tree(p)


def copy_atomic(src: bytes, final: bytes, st: os.stat_result, *, data: bool = True) -> None:
    """Copy src to final through a temporary name in final's directory, then rename.

    `final` must not exist (a directory there makes the rename fail, a file is replaced).
    """
    tmp = hostio.parent_of(final) + b"/" + tmp_name()
    try:
        copy_into(src, tmp, st, data=data)
        hostio.rename(tmp, final)
    except BaseException:
        discard(tmp)
        raise
