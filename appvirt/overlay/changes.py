"""What an app's upper layer changes compared with the host (for `appvirt overlay ls|diff`)."""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

from . import hostio
from .model import Change, ChangeKind, FileType

if TYPE_CHECKING:
    from .view import OverlayView

CHUNK = 1 << 20


def same_content(a: bytes, b: bytes) -> bool:
    """Whether two regular files hold the same bytes (unreadable counts as different)."""
    try:
        fa, fb = hostio.open_read(a), hostio.open_read(b)
    except OSError:
        return False
    try:
        while True:
            ca, cb = os.read(fa, CHUNK), os.read(fb, CHUNK)
            if ca != cb:
                return False
            if not ca:
                return True
    except OSError:
        return False
    finally:
        os.close(fa)
        os.close(fb)


def xattrs(p: bytes) -> dict[str, bytes]:
    try:
        return {n: hostio.getxattr(p, n) for n in hostio.listxattr(p)}
    except OSError:
        return {}


def differences(up: bytes, ust: os.stat_result, low: bytes, lst: os.stat_result, *,
                opaque: bool = False) -> tuple[str, ...]:
    """What differs between an upper object and the host object it stands for."""
    if stat.S_IFMT(ust.st_mode) != stat.S_IFMT(lst.st_mode):
        return ("type",)
    out = []
    if stat.S_ISREG(ust.st_mode) and (ust.st_size != lst.st_size
                                      or not same_content(up, low)):
        out.append("content")
    if stat.S_ISLNK(ust.st_mode):
        try:
            if hostio.readlink(up) != hostio.readlink(low):
                out.append("target")
        except OSError:
            out.append("target")
    if not stat.S_ISLNK(ust.st_mode) and stat.S_IMODE(ust.st_mode) != stat.S_IMODE(
            lst.st_mode):
        out.append("mode")
    if (ust.st_uid, ust.st_gid) != (lst.st_uid, lst.st_gid):
        out.append("owner")
    # A directory's mtime follows its entries, which are reported one by one.
    if not stat.S_ISDIR(ust.st_mode) and ust.st_mtime_ns != lst.st_mtime_ns:
        out.append("mtime")
    if not stat.S_ISLNK(ust.st_mode) and xattrs(up) != xattrs(low):
        out.append("xattrs")
    if opaque:
        out.append("opaque")
    return tuple(out)


def upper_entries(ov: "OverlayView") -> list[Change]:
    """Every entry of the upper layer, compared with the host, sorted by guest path."""
    ix = ov._ix
    out: list[Change] = []
    for g in sorted(ix.kinds.keys() | ix.whiteouts):
        if g in ix.kinds:
            ust = hostio.lstat(ov.upper(g))
            if ust is None:
                continue
            try:
                lst = hostio.lstat(ov.lower(g))
            except OSError:
                lst = None
            opaque = g in ix.opaque
            ftype = FileType.of(ust.st_mode)
            if lst is None:
                out.append(Change(g, ChangeKind.ADDED, ftype, ust.st_size, opaque=opaque))
                continue
            diff = differences(ov.upper(g), ust, ov.lower(g), lst, opaque=opaque)
            kind = ChangeKind.MODIFIED if diff else ChangeKind.UNCHANGED
            out.append(Change(g, kind, ftype, ust.st_size, old_size=lst.st_size,
                              opaque=opaque, details=diff))
        elif ov._ancestors_unmasked(g):    # a whiteout that still hides something
            try:
                lst = hostio.lstat(ov.lower(g))
            except OSError:
                lst = None
            if lst is not None:
                out.append(Change(g, ChangeKind.DELETED, FileType.of(lst.st_mode),
                                  lst.st_size))
    return out
