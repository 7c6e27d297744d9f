"""Directory entries in the kernel's getdents64/getdents formats.

A merged listing is served from the tracer: entry i of the listing has position i, d_off is
the position of the next entry, and the position is kept in the directory fd's own file
offset (the tracer has the kernel lseek it), so lseek(fd, 0), rewinddir, telldir and seekdir
behave as on any directory.
"""

import os
import stat
import struct
from typing import NamedTuple

DT_UNKNOWN, DT_DIR = 0, 4
_DIRENT64 = struct.Struct("<QqHB")     # d_ino, d_off, d_reclen, d_type; then the name + NUL
_DIRENT = struct.Struct("<QQH")         # d_ino, d_off, d_reclen; name + NUL, pad, d_type last


class Dirent(NamedTuple):
    name: bytes
    d_type: int
    ino: int


def host_listing(host_dir: bytes) -> list[Dirent]:
    """The kernel's listing of a host directory, "." and ".." first."""
    out = [Dirent(b".", DT_DIR, 0), Dirent(b"..", DT_DIR, 0)]
    with os.scandir(host_dir) as it:
        for e in it:
            try:
                kind = stat.S_IFMT(e.stat(follow_symlinks=False).st_mode) >> 12
            except FileNotFoundError:
                continue                  # gone meanwhile (a /proc entry of an ended process)
            out.append(Dirent(e.name, kind, e.inode()))
    return out


def _align8(n: int) -> int:
    return (n + 7) & ~7


def pack_dirents64(entries: list[Dirent], pos: int, count: int) -> tuple[bytes, int]:
    """Entries from position `pos` that fit in `count` bytes: (data, next position)."""
    out = bytearray()
    i = max(pos, 0)
    while i < len(entries):
        e = entries[i]
        reclen = _align8(_DIRENT64.size + len(e.name) + 1)
        if len(out) + reclen > count:
            break
        out += _DIRENT64.pack(e.ino, i + 1, reclen, e.d_type)
        out += e.name + b"\0" * (reclen - _DIRENT64.size - len(e.name))
        i += 1
    return bytes(out), i


def pack_dirents(entries: list[Dirent], pos: int, count: int) -> tuple[bytes, int]:
    """The same for the old getdents(2) layout (d_type in the record's last byte)."""
    out = bytearray()
    i = max(pos, 0)
    while i < len(entries):
        e = entries[i]
        reclen = _align8(_DIRENT.size + len(e.name) + 2)
        if len(out) + reclen > count:
            break
        body = e.name + b"\0" * (reclen - _DIRENT.size - len(e.name) - 1) + bytes([e.d_type])
        out += _DIRENT.pack(e.ino, i + 1, reclen) + body
        i += 1
    return bytes(out), i
