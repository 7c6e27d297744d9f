"""The merged view: what the program sees at a guest path, without changing anything.

(A private root is the one exception: it is created in the upper layer, as an empty
directory, the first time it is looked up, so that it is a real directory to open.)
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

from ..errors import GuestErrno
from ..policy.model import FileMode
from . import hostio
from .copy import copy_atomic
from .index import DIR, UpperIndex
from .meta import MetaTable
from .model import DirEntry, Entry, Layer, d_type_of
from .names import (OPAQUE_MARKER, WH_PREFIX, ancestors, basename, has_reserved, join, parent,
                    tmp_name, whiteout_name)

_UPPER_FAMILY = (FileMode.OVERLAY, FileMode.READONLY)   # same visibility rules in a listing


def host_bytes(p: bytes | str | Path) -> bytes:
    """An absolute, normalised host path as bytes."""
    b = os.fsencode(p)
    return os.fsencode(os.path.normpath(os.path.abspath(os.fsdecode(b))))


def real_path(p: bytes) -> bytes:
    """p with its symlinks resolved (as far as it exists)."""
    return os.fsencode(os.path.realpath(os.fsdecode(p)))


def guest_error(e: OSError, what: bytes = b"") -> GuestErrno:
    return GuestErrno(e.errno or errno.EIO, f"{os.fsdecode(what)}: {e.strerror or e}"
                      if what else (e.strerror or str(e)))


class OverlayView:
    """Lookups in the merged view of one app's upper layer over the host."""

    def __init__(self, upper_root: bytes | Path, *, mode_of: Callable[[bytes], FileMode],
                 lower_root: bytes = b"/", hidden_host: tuple[bytes, ...] = (),
                 recover: bool = True) -> None:
        upper = host_bytes(upper_root)
        if recover and hostio.lstat(upper) is None:
            os.makedirs(os.fsdecode(upper), mode=0o700, exist_ok=True)
        # Real paths: the kernel names open files by them (/proc/PID/fd), see to_guest.
        self.upper_root = real_path(upper)
        self.lower_root = real_path(host_bytes(lower_root))
        self._mode_of = mode_of
        hidden = {p for h in (upper_root, *hidden_host)
                  for p in (host_bytes(h), real_path(host_bytes(h)))}
        guests = {self._hidden_guest(h) for h in hidden}
        self._hidden = tuple(sorted((g, g + b"/" if g != b"/" else b"/")
                                    for g in guests if g is not None))
        self._ix = UpperIndex.load(self.upper_root, recover=recover)
        self.meta = MetaTable(None)        # Overlay.open gives it the app's own

    def _hidden_guest(self, h: bytes) -> bytes | None:
        """The guest path under which the host path h would show (None: it cannot)."""
        if self.lower_root == b"/":
            return h
        if h == self.lower_root:
            return b"/"
        if h.startswith(self.lower_root + b"/"):
            return h[len(self.lower_root):]
        return None

    # ---- host paths of a guest path
    def lower(self, g: bytes) -> bytes:
        if self.lower_root == b"/":
            return g
        return self.lower_root if g == b"/" else self.lower_root + g

    def upper(self, g: bytes) -> bytes:
        return self.upper_root if g == b"/" else self.upper_root + g

    # ---- modes
    def mode(self, guest: bytes) -> FileMode:
        for h, hs in self._hidden:
            if guest == h or guest.startswith(hs):
                return FileMode.HIDDEN
        return self._mode_of(guest)

    # ---- lookups
    def lstat(self, guest: bytes) -> os.stat_result | None:
        e = self.entry(guest)
        return e.st if e is not None else None

    def entry(self, guest: bytes) -> Entry | None:
        return self._entry(guest, self.mode(guest))

    def _entry(self, g: bytes, m: FileMode) -> Entry | None:
        if m is FileMode.HIDDEN or has_reserved(g):
            return None
        if m is FileMode.PASSTHROUGH:
            return self._host_entry(g, Layer.HOST, self.lower(g))
        if g in self._ix.kinds:
            return self._host_entry(g, Layer.UPPER, self.upper(g))
        if m is FileMode.PRIVATE:
            return self._private_root(g)
        if g != b"/" and not self._lower_visible(g):
            return None
        return self._host_entry(g, Layer.LOWER, self.lower(g))

    def _host_entry(self, g: bytes, layer: Layer, host: bytes) -> Entry | None:
        try:
            st = hostio.lstat(host)
        except OSError as e:
            raise guest_error(e, g) from None
        return Entry(g, layer, host, st) if st is not None else None

    def _lower_visible(self, g: bytes) -> bool:
        """Whether the lower object at g may show: not whited out, no ancestor whited out,
        opaque or replaced by a non-directory in the upper layer. Dict operations only.

        Invariant that makes this enough: an upper directory that is not opaque has, at its
        lower path, a real directory or nothing (a directory put where the lower layer has
        anything else is made opaque), so a lower path below it never crosses a symlink."""
        return g not in self._ix.whiteouts and self._ancestors_unmasked(g)

    def _ancestors_unmasked(self, g: bytes) -> bool:
        ix = self._ix
        for p in ancestors(g):
            if p in ix.opaque or p in ix.whiteouts:
                return False
            k = ix.kinds.get(p)
            if k is not None and k != DIR:
                return False
        return True

    def _lower_at(self, g: bytes) -> os.stat_result | None:
        """The lower object the view would show at g if the upper layer had nothing there
        (None: there is none, or it is masked by an ancestor or a private mode)."""
        if self.mode(g) is FileMode.PRIVATE or not self._ancestors_unmasked(g):
            return None
        try:
            return hostio.lstat(self.lower(g))
        except OSError:
            return None

    def kept_identity(self, g: bytes) -> os.stat_result | None:
        """The host's directory at g, for a directory the view shows from both layers (an
        upper directory, not opaque, over a host directory that is not masked): such a
        directory keeps the host's identity, as OverlayFS keeps a copied-up directory's
        st_ino. Its stat shows the host's (st_dev, st_ino) and the kernel holds it open, or
        as a cwd, on the host's, so a program that compares identities across its own
        changes (tar's "Directory renamed before its status could be extracted", fts)
        finds the same directory. None for every other object."""
        ix = self._ix
        if ix.kinds.get(g) != DIR or g in ix.opaque \
                or self.mode(g) not in (FileMode.OVERLAY, FileMode.READONLY):
            return None
        st = self._lower_at(g)
        return st if st is not None and stat.S_ISDIR(st.st_mode) else None

    def _private_root(self, g: bytes) -> Entry | None:
        """A private path the upper layer lacks: only its root exists (an empty directory)."""
        if g == b"/":
            return self._host_entry(g, Layer.UPPER, self.upper_root)
        par = parent(g)
        pm = self.mode(par)
        if pm is FileMode.PRIVATE:
            return None
        pe = self._entry(par, pm)
        if pe is None or not pe.is_dir:
            return None
        try:
            self._ensure_upper_parents(g)
            up = self.upper(g)
            with hostio.writable_dir(hostio.parent_of(up)), hostio.keep_times(
                    hostio.parent_of(up)):
                lst = hostio.lstat(self.lower(g))
                if lst is not None and stat.S_ISDIR(lst.st_mode):
                    copy_atomic(self.lower(g), up, lst)      # the host's mode, owner, times
                else:
                    tmp = hostio.parent_of(up) + b"/" + tmp_name()
                    hostio.mkdir(tmp, 0o755)
                    if lst is not None:        # see _lower_visible's invariant
                        hostio.create_empty(tmp + b"/" + OPAQUE_MARKER)
                        self._ix.opaque.add(g)
                    hostio.chmod(tmp, 0o755)
                    hostio.rename(tmp, up)
        except OSError as e:
            raise guest_error(e, g) from None
        self._ix.kinds[g] = DIR
        return self._host_entry(g, Layer.UPPER, up)

    def readlink(self, guest: bytes) -> bytes:
        e = self.entry(guest)
        if e is None:
            raise GuestErrno(errno.ENOENT, os.fsdecode(guest))
        if not stat.S_ISLNK(e.st.st_mode):
            raise GuestErrno(errno.EINVAL, f"{os.fsdecode(guest)} is not a symbolic link")
        try:
            return hostio.readlink(e.host)
        except OSError as err:
            raise guest_error(err, guest) from None

    def host_for_read(self, guest: bytes) -> bytes:
        e = self.entry(guest)
        if e is None:
            raise GuestErrno(errno.ENOENT, os.fsdecode(guest))
        return e.host

    def where_read(self, guest: bytes) -> bytes:
        """The host path where a read of guest finds the view's object if it exists, from
        the index alone (no lookup, except for private paths): for callers whose own call on
        that path then finds whether it exists, with the errno a lookup here would give.
        ENOENT for what the view cannot show."""
        m = self.mode(guest)
        if m is FileMode.HIDDEN or has_reserved(guest):
            raise GuestErrno(errno.ENOENT, os.fsdecode(guest))
        if m is FileMode.PASSTHROUGH:
            return self.lower(guest)
        if guest in self._ix.kinds:
            return self.upper(guest)
        if m is FileMode.PRIVATE:
            e = self._private_root(guest)
            if e is None:
                raise GuestErrno(errno.ENOENT, os.fsdecode(guest))
            return e.host
        if guest != b"/" and not self._lower_visible(guest):
            raise GuestErrno(errno.ENOENT, os.fsdecode(guest))
        return self.lower(guest)

    def to_guest(self, host: bytes) -> bytes | None:
        h = host_bytes(host)
        up = self.upper_root
        if h == up or h.startswith(up + b"/"):
            g = h[len(up):] or b"/"
        elif self.lower_root == b"/":
            g = h
        elif h == self.lower_root or h.startswith(self.lower_root + b"/"):
            g = h[len(self.lower_root):] or b"/"
        else:
            return None
        if has_reserved(g) or self.mode(g) is FileMode.HIDDEN:
            return None
        return g

    # ---- listings
    def listdir(self, guest_dir: bytes) -> list[DirEntry]:
        g = guest_dir
        m = self.mode(g)
        e = self._entry(g, m)
        if e is None:
            raise GuestErrno(errno.ENOENT, os.fsdecode(g))
        if not e.is_dir:
            raise GuestErrno(errno.ENOTDIR, os.fsdecode(g))
        ix = self._ix
        try:
            upper = (hostio.scan(self.upper(g))
                     if m is not FileMode.PASSTHROUGH and (g == b"/" or ix.is_dir(g)) else {})
            show_lower = (m is FileMode.PASSTHROUGH or (
                m is not FileMode.PRIVATE and g not in ix.opaque
                and (g == b"/" or self._lower_visible(g))))
            lower = hostio.scan(self.lower(g)) if show_lower else {}
        except OSError as err:
            raise guest_error(err, g) from None
        out: list[DirEntry] = []
        dir_type = stat.S_IFDIR >> 12
        for name in sorted(upper.keys() | lower.keys()):
            if name.startswith(WH_PREFIX):
                continue
            child = join(g, name)
            cm = self.mode(child)
            if cm is FileMode.HIDDEN:
                continue
            if cm is m or (cm in _UPPER_FAMILY and m in _UPPER_FAMILY):
                if name in upper:
                    dt, ino = upper[name]
                    if dt == dir_type and lower.get(name, (0,))[0] == dir_type \
                            and cm in _UPPER_FAMILY and child not in ix.opaque:
                        ino = lower[name][1]    # it keeps the host's identity (kept_identity)
                elif name in lower and (m is FileMode.PASSTHROUGH or child not in ix.whiteouts):
                    dt, ino = lower[name]
                else:
                    continue
                out.append(DirEntry(name, dt, ino))
            else:                          # a child under another rule: ask it
                ce = self._entry(child, cm)
                if ce is not None:
                    out.append(DirEntry(name, d_type_of(ce.st.st_mode), ce.st.st_ino))
        return out

    # ---- upper-layer bookkeeping shared by the mutations
    def _ensure_upper_parents(self, g: bytes) -> None:
        """Give every ancestor of g an upper directory (copies of the view's directories)."""
        missing = []
        for p in ancestors(g):
            k = self._ix.kinds.get(p)
            if k is not None:
                if k != DIR:
                    raise GuestErrno(errno.ENOTDIR, os.fsdecode(p))
                break
            missing.append(p)
        for p in reversed(missing):
            self._copy_up_dir_of_view(p)

    def _copy_up_dir_of_view(self, p: bytes) -> None:
        if p in self._ix.kinds:
            return
        src = self._entry(p, self.mode(p))
        if src is None:
            raise GuestErrno(errno.ENOENT, os.fsdecode(p))
        if not src.is_dir:
            raise GuestErrno(errno.ENOTDIR, os.fsdecode(p))
        if p in self._ix.kinds:            # a private root, just made by _entry
            return
        self._copy_up_object(p, src.host, src.st)

    def _copy_up_object(self, g: bytes, src: bytes, st: os.stat_result, *,
                        data: bool = True) -> bytes:
        """Copy src into the upper layer at g, atomically, leaving the parent's times alone."""
        up = self.upper(g)
        par = hostio.parent_of(up)
        try:
            with hostio.writable_dir(par), hostio.keep_times(par):
                copy_atomic(src, up, st, data=data)
        except OSError as e:
            raise guest_error(e, g) from None
        self._ix.kinds[g] = stat.S_IFMT(st.st_mode)
        return up

    def _add_whiteout(self, g: bytes) -> None:
        hostio.create_empty(self.upper(parent(g)) + b"/" + whiteout_name(basename(g)))
        self._ix.whiteouts.add(g)

    def _remove_whiteout(self, g: bytes) -> None:
        if g in self._ix.whiteouts:
            try:
                hostio.unlink(self.upper(parent(g)) + b"/" + whiteout_name(basename(g)))
            except FileNotFoundError:
                pass
            self._ix.whiteouts.discard(g)

    def _mark_opaque(self, host_dir: bytes) -> None:
        """Put the opaque marker into a (new) upper directory, keeping its times."""
        with hostio.keep_times(host_dir):
            hostio.create_empty(host_dir + b"/" + OPAQUE_MARKER)
