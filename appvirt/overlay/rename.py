"""rename(2) and renameat2(2) in the merged view.

A non-directory, or a directory whose content is all in the upper layer, moves with one rename
in the upper layer (copied up first if needed). A directory that shows lower content is
copied, merged tree and all, to the new name (opaque there) and the old name is whited out.
"""

from __future__ import annotations

import errno
import os
import stat

from ..errors import GuestErrno
from ..policy.model import FileMode
from . import hostio
from .copy import copy_into, create_like, discard, finish_like
from .index import DIR
from .model import Entry, Layer
from .names import WH_PREFIX, basename, has_reserved, join, parent, tmp_name, under
from .overlay import Overlay, _err
from .view import guest_error

KNOWN_FLAGS = hostio.RENAME_NOREPLACE | hostio.RENAME_EXCHANGE | hostio.RENAME_WHITEOUT
_PLACEHOLDER = b"/\0exchange"      # never a guest path: parks a subtree during an exchange


def rename(ov: Overlay, src: bytes, dst: bytes, flags: int = 0) -> None:
    exchange = bool(flags & hostio.RENAME_EXCHANGE)
    if flags & ~KNOWN_FLAGS or (exchange and flags & hostio.RENAME_NOREPLACE):
        raise _err(errno.EINVAL, src, "invalid rename flags")
    if flags & hostio.RENAME_WHITEOUT:
        raise _err(errno.EINVAL, src, "RENAME_WHITEOUT is not supported in the sandbox")
    if src == b"/" or dst == b"/":
        raise _err(errno.EBUSY, b"/")
    ov._check_parent(src)
    ov._check_parent(dst)
    ms, md = ov.mode(src), ov.mode(dst)
    if has_reserved(src) or ms is FileMode.HIDDEN:
        raise _err(errno.ENOENT, src)
    if has_reserved(parent(dst)):
        raise _err(errno.ENOENT, dst)
    if basename(dst).startswith(WH_PREFIX):
        raise _err(errno.EPERM, dst, "names beginning with .wh. are reserved by appvirt")
    if md is FileMode.HIDDEN:
        raise _err(errno.EACCES, dst, "hidden by this app's policy")
    if (ms is FileMode.PASSTHROUGH) != (md is FileMode.PASSTHROUGH):
        raise _err(errno.EXDEV, dst, "rename across a passthrough boundary")
    if FileMode.READONLY in (ms, md):
        raise _err(errno.EROFS, src if ms is FileMode.READONLY else dst,
                   "read-only in this app's policy")
    es = ov._entry(src, ms)
    if es is None:
        raise _err(errno.ENOENT, src)
    ed = ov._entry(dst, md)
    if flags & hostio.RENAME_NOREPLACE and ed is not None:
        raise _err(errno.EEXIST, dst)
    if exchange and ed is None:
        raise _err(errno.ENOENT, dst)
    if src != dst and under(dst, src):
        raise _err(errno.EINVAL, dst, "a directory cannot be moved into itself")
    if src != dst and under(src, dst):
        raise _err(errno.EINVAL if exchange else errno.ENOTEMPTY, dst)
    if src == dst or (ed is not None and ed.layer is es.layer
                      and (ed.st.st_dev, ed.st.st_ino) == (es.st.st_dev, es.st.st_ino)):
        return                          # the same object: the kernel does nothing either
    if not exchange and ed is not None:
        if es.is_dir and not ed.is_dir:
            raise _err(errno.ENOTDIR, dst)
        if not es.is_dir and ed.is_dir:
            raise _err(errno.EISDIR, dst)
        if ed.is_dir and ov.listdir(dst):
            raise _err(errno.ENOTEMPTY, dst)
    for g in (src, dst):
        if ov._is_private_root(g) and (g == src or ed is not None):
            raise _err(errno.EBUSY, g, "a private directory of this app's policy")
    if ms is FileMode.PASSTHROUGH:
        try:
            hostio.rename_flags(ov.lower(src), ov.lower(dst), flags)
        except OSError as e:
            raise guest_error(e, dst) from None
        return
    try:
        if exchange:
            assert ed is not None
            _exchange(ov, src, es, dst, ed)
        else:
            _move(ov, src, es, dst, ed)
    except OSError as e:
        raise guest_error(e, dst) from None


def _self_contained(ov: Overlay, g: bytes, e: Entry) -> bool:
    """Whether the directory g is all in the upper layer (no lower content merges into it)."""
    if e.layer is not Layer.UPPER:
        return False
    if g in ov._ix.opaque or ov.mode(g) is FileMode.PRIVATE:
        return True
    low = ov._lower_at(g)
    return low is None or not stat.S_ISDIR(low.st_mode)


def _needs_opaque(ov: Overlay, g: bytes) -> bool:
    """Whether a directory placed at g must be opaque: there is a lower object there (a
    directory would merge in; below anything else the host path could follow a symlink)."""
    return ov._lower_at(g) is not None


def _copy_tree(ov: Overlay, g: bytes, dest: bytes,
               links: dict[tuple[int, int], bytes]) -> list[tuple[bytes, int]]:
    """Copy the merged directory g to the new host path dest; return (suffix, S_IFMT) of
    everything made. Upper non-directories are hard-linked, not copied; hard links among
    lower files stay links; hidden names are not copied."""
    e = ov.entry(g)
    if e is None:
        raise GuestErrno(errno.ENOENT, os.fsdecode(g))
    create_like(e.host, dest, e.st)
    made = [(b"", DIR)]
    for de in ov.listdir(g):
        child = join(g, de.name)
        ce = ov.entry(child)
        if ce is None:
            continue
        cdest = dest + b"/" + de.name
        suffix = b"/" + de.name
        if ce.is_dir:
            made += [(suffix + s, k) for s, k in _copy_tree(ov, child, cdest, links)]
            continue
        key = (ce.st.st_dev, ce.st.st_ino)
        if ce.layer is Layer.UPPER:
            # The app's own object moves, it is not copied: links to it elsewhere stay
            # links (the old name goes when the old tree is removed).
            hostio.link(ce.host, cdest)
        elif stat.S_ISREG(ce.st.st_mode) and ce.st.st_nlink > 1 and key in links:
            hostio.link(links[key], cdest)
        else:
            copy_into(ce.host, cdest, ce.st)
            links[key] = cdest
        made.append((suffix, stat.S_IFMT(ce.st.st_mode)))
    finish_like(dest, e.st)
    return made


def _build_copy(ov: Overlay, g: bytes, where: bytes, opaque: bool) -> tuple[bytes, list]:
    """Copy the merged directory g under a temporary name in the upper directory `where`."""
    tmp = where + b"/" + tmp_name()
    try:
        made = _copy_tree(ov, g, tmp, {})
        if opaque:
            ov._mark_opaque(tmp)
    except BaseException:
        discard(tmp)
        raise
    return tmp, made


def _aside(ov: Overlay, g: bytes) -> bytes | None:
    """Move the upper directory at g out of the way (to be removed); None if there is none."""
    if ov._ix.kinds.get(g) != DIR:
        return None
    up = ov.upper(g)
    aside = hostio.parent_of(up) + b"/" + tmp_name()
    hostio.rename(up, aside)
    ov._ix.drop_subtree(g)
    return aside


def _move(ov: Overlay, src: bytes, es: Entry, dst: bytes, ed: Entry | None) -> None:
    ix = ov._ix
    ov._ensure_upper_parents(src)
    ov._ensure_upper_parents(dst)
    hide_src = ov._lower_at(src) is not None
    opaque = es.is_dir and _needs_opaque(ov, dst)
    up_dst = ov.upper(dst)
    if es.is_dir and not _self_contained(ov, src, es):
        # Lower content shows through: copy the merged tree to the new name.
        tmp, made = _build_copy(ov, src, hostio.parent_of(up_dst), opaque)
        aside = _aside(ov, dst)
        hostio.rename(tmp, up_dst)                 # the new name exists from here on
        ix.kinds.update({dst + s: k for s, k in made})
        if opaque:
            ix.opaque.add(dst)
        ov._remove_whiteout(dst)
        if hide_src and src not in ix.whiteouts:
            ov._add_whiteout(src)
        old = _aside(ov, src)                      # the upper part of the old directory
        for p in (aside, old):
            if p is not None:
                ov.meta.forget_tree(p)
                hostio.remove_tree(p)
        return
    up_src = ov._upper_copy(src, es)
    if opaque and src not in ix.opaque:
        ov._mark_opaque(up_src)
        ix.opaque.add(src)
    if hide_src and src not in ix.whiteouts:
        ov._add_whiteout(src)                      # the object is still there: old state
    aside = _aside(ov, dst) if es.is_dir else None
    if ed is not None and not es.is_dir:
        ov.meta.removing(up_dst)                   # the replaced file's last link goes
    hostio.rename(up_src, up_dst)                  # one step from old name to new
    if ed is not None and not es.is_dir:
        ix.drop_subtree(dst)
    ix.move_subtree(src, dst)
    ov._remove_whiteout(dst)
    if aside is not None:
        ov.meta.forget_tree(aside)
        hostio.remove_tree(aside)


def _standalone(ov: Overlay, g: bytes, e: Entry) -> None:
    """Make g an upper object that owes nothing to the lower layer (for an exchange)."""
    if not e.is_dir:
        ov._upper_copy(g, e)
        return
    if _self_contained(ov, g, e):
        return
    tmp, made = _build_copy(ov, g, hostio.parent_of(ov.upper(g)), opaque=False)
    aside = _aside(ov, g)
    hostio.rename(tmp, ov.upper(g))
    ov._ix.kinds.update({g + s: k for s, k in made})
    if aside is not None:
        hostio.remove_tree(aside)


def _exchange(ov: Overlay, src: bytes, es: Entry, dst: bytes, ed: Entry) -> None:
    ix = ov._ix
    for g, e in ((src, es), (dst, ed)):
        ov._ensure_upper_parents(g)
        _standalone(ov, g, e)
    # A directory arriving where a lower directory would merge in must be opaque there.
    for here, there in ((src, dst), (dst, src)):
        if ix.kinds.get(here) == DIR and here not in ix.opaque and _needs_opaque(ov, there):
            ov._mark_opaque(ov.upper(here))
            ix.opaque.add(here)
    hostio.rename_flags(ov.upper(src), ov.upper(dst), hostio.RENAME_EXCHANGE)
    ix.move_subtree(src, _PLACEHOLDER)
    ix.move_subtree(dst, src)
    ix.move_subtree(_PLACEHOLDER, dst)
