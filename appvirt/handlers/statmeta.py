"""Stat results with the overlay's recorded owners and device stand-ins (overlay/meta.py).

The kernel's answer names the upper file by (st_dev, st_ino); when the app's metadata table
has a record for it, the owner, file type and device number the program set are patched in.
"""

from __future__ import annotations

import os
import struct

from ..core.action import Action, Allow, ExitResult
from ..core.context import Context
from ..core.stop import Stop

STAT_SIZE, STATX_SIZE = 144, 256
STATX_TYPE, STATX_MODE, STATX_UID, STATX_GID, STATX_INO = 0x1, 0x2, 0x8, 0x10, 0x100


def own_created(stop: Stop, ctx: Context, guest: bytes) -> None:
    """The program made guest: under a virtual identity it belongs to the identity's fsuid
    and fsgid, not to appvirt's user that the kernel or the tracer made it as."""
    if ctx.policy.identity is None:
        return
    creds = ctx.credentials(stop.tid)
    ctx.fs.ov.own_created(guest, creds.fsuid, creds.fsgid, remember=not ctx.real_root)


def meta_table(ctx: Context):
    """The app's metadata table when it holds any record, else None (nothing to patch)."""
    table = getattr(ctx.fs, "meta", None)
    return table if table else None


# struct stat of x86_64: dev, ino, nlink, mode, uid, gid, pad, rdev, size, blksize, blocks,
# atime, mtime, ctime (seconds, nanoseconds), 3 reserved words: 144 bytes.
_STAT = struct.Struct("<QQQIIIxxxxQqqqqqqqqq24x")


def pack_stat(st: os.stat_result) -> bytes:
    """The struct stat the kernel would write for st (an lstat/stat result of the tracer)."""
    a, an = divmod(st.st_atime_ns, 1_000_000_000)
    m, mn = divmod(st.st_mtime_ns, 1_000_000_000)
    c, cn = divmod(st.st_ctime_ns, 1_000_000_000)
    return _STAT.pack(st.st_dev, st.st_ino, st.st_nlink, st.st_mode, st.st_uid, st.st_gid,
                      st.st_rdev, st.st_size, st.st_blksize, st.st_blocks, a, an, m, mn, c, cn)


def patch_stat(data: bytes, table) -> bytes:
    """A struct stat (x86_64) as the program must see it."""
    meta = table.get(*struct.unpack_from("<QQ", data, 0))
    if meta is None:
        return data
    mode, uid, gid = struct.unpack_from("<III", data, 24)
    (rdev,) = struct.unpack_from("<Q", data, 40)
    mode, uid, gid, rdev = meta.apply(mode, uid, gid, rdev)
    out = bytearray(data)
    struct.pack_into("<III", out, 24, mode, uid, gid)
    struct.pack_into("<Q", out, 40, rdev)
    return bytes(out)


def patch_statx(data: bytes, table) -> bytes:
    """A struct statx as the program must see it (only the fields its mask reports)."""
    (mask,) = struct.unpack_from("<I", data, 0)
    if not mask & STATX_INO:
        return data
    (ino,) = struct.unpack_from("<Q", data, 32)
    meta = table.get(os.makedev(*struct.unpack_from("<II", data, 136)), ino)
    if meta is None:
        return data
    uid, gid = struct.unpack_from("<II", data, 20)
    (mode,) = struct.unpack_from("<H", data, 28)
    rdev = os.makedev(*struct.unpack_from("<II", data, 128))
    mode, uid, gid, rdev = meta.apply(mode, uid, gid, rdev)
    out = bytearray(data)
    if mask & STATX_UID:
        struct.pack_into("<I", out, 20, uid)
    if mask & STATX_GID:
        struct.pack_into("<I", out, 24, gid)
    if mask & (STATX_TYPE | STATX_MODE):
        struct.pack_into("<H", out, 28, mode)
    struct.pack_into("<II", out, 128, os.major(rdev), os.minor(rdev))
    return bytes(out)


def keep_stat_identity(data: bytearray, host: os.stat_result) -> None:
    """A struct stat showing the host directory's (st_dev, st_ino) (OverlayFS.kept_identity)."""
    struct.pack_into("<QQ", data, 0, host.st_dev, host.st_ino)


def keep_statx_identity(data: bytearray, host: os.stat_result) -> None:
    """The same for a struct statx: stx_ino where its mask reports it, and stx_dev."""
    (mask,) = struct.unpack_from("<I", data, 0)
    if mask & STATX_INO:
        struct.pack_into("<Q", data, 32, host.st_ino)
    struct.pack_into("<II", data, 136, os.major(host.st_dev), os.minor(host.st_dev))


def patch_at_exit(ctx: Context, buf_arg: int, statx: bool) -> Allow:
    """Let the kernel answer an fd's stat, then patch its buffer at the exit stop."""
    table = meta_table(ctx)
    if table is None:
        return Allow()
    size, patch = (STATX_SIZE, patch_statx) if statx else (STAT_SIZE, patch_stat)

    def hook(stop: Stop, rv: int) -> ExitResult:
        if rv < 0:
            return ExitResult()
        addr = stop.arg(buf_arg)
        data = ctx.read(stop.tid, addr, size)
        new = patch(data, table)
        return ExitResult(writes=((addr, new),) if new != data else ())
    return Allow(on_exit=hook)


def sys_fstat(stop: Stop, ctx: Context) -> Action:
    """Implement fstat(2): the kernel's answer, with the recorded owner or device."""
    return patch_at_exit(ctx, 1, statx=False)


HANDLERS = {"fstat": sys_fstat}
