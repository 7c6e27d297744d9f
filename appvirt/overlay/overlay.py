"""The Overlay: the merged view plus every change the program can make to it.

Each mutation raises GuestErrno as the kernel would for the virtual view. Multi-step changes
are ordered so that an interruption leaves the old state or the new one (at worst, for a
directory rename that copies a tree, both names), never a half-made object under a real name.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

from ..errors import GuestErrno
from ..policy.model import FileMode
from ..state import AppDir
from . import hostio
from .appstate import AppLock, load_lower_root
from .index import DIR
from .meta import FileMeta, MetaTable
from .model import Change, Entry, Layer
from .names import WH_PREFIX, basename, has_reserved, parent, tmp_name
from .view import OverlayView, guest_error

_FMT_CREATABLE = (stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK)


def _err(code: int, g: bytes, why: str = "") -> GuestErrno:
    return GuestErrno(code, f"{os.fsdecode(g)}: {why or os.strerror(code)}")


class Overlay(OverlayView):
    """One app's copy-on-write view of the host (see docs/overlay.md)."""

    _lock: AppLock | None = None

    @classmethod
    def open(cls, app: AppDir, *, mode_of: Callable[[bytes], FileMode],
             hidden_host: tuple[bytes, ...] = (), lower_root: bytes | None = None) -> "Overlay":
        """The overlay of an app, locked for this run until close().

        `lower_root` is remembered in the app's overlay.json the first time (default "/");
        passing another one later is an error (the upper layer was made against the first).
        """
        lock = AppLock.acquire(app)
        try:
            root = load_lower_root(app, lower_root)
            ov = cls(app.upper, mode_of=mode_of, lower_root=root,
                     hidden_host=(*hidden_host, os.fsencode(app.root)))
            ov.meta = MetaTable(app.root / "meta.sqlite", upper_root=ov.upper_root)
        except BaseException:
            lock.release()
            raise
        ov._lock = lock
        return ov

    def close(self) -> None:
        self.meta.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "Overlay":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- checks shared by the operations
    def _is_private_root(self, g: bytes) -> bool:
        return self.mode(g) is FileMode.PRIVATE and (
            g == b"/" or self.mode(parent(g)) is not FileMode.PRIVATE)

    def _existing(self, g: bytes) -> tuple[FileMode, Entry]:
        """The mode and entry of a name an operation acts on (ENOENT if absent)."""
        m = self.mode(g)
        e = self._entry(g, m)
        if e is None:
            raise _err(errno.ENOENT, g)
        return m, e

    def _writable(self, g: bytes) -> tuple[FileMode, Entry]:
        """As _existing, for an operation that changes the object (EROFS if read-only)."""
        m, e = self._existing(g)
        if m is FileMode.READONLY:
            raise _err(errno.EROFS, g, "read-only in this app's policy")
        return m, e

    def _check_parent(self, g: bytes) -> None:
        pe = self.entry(parent(g))
        if pe is None:
            raise _err(errno.ENOENT, parent(g))
        if not pe.is_dir:
            raise _err(errno.ENOTDIR, parent(g))

    def _new_name(self, g: bytes) -> FileMode:
        """Check that g can be created (not there yet); return its mode."""
        if g == b"/":
            raise _err(errno.EEXIST, g)
        m = self.mode(g)
        if has_reserved(parent(g)):
            raise _err(errno.ENOENT, parent(g))
        if basename(g).startswith(WH_PREFIX):
            raise _err(errno.EPERM, g, "names beginning with .wh. are reserved by appvirt")
        if m is FileMode.HIDDEN:
            raise _err(errno.EACCES, g, "hidden by this app's policy")
        self._check_parent(g)
        if self._entry(g, m) is not None:
            raise _err(errno.EEXIST, g)
        if m is FileMode.READONLY:
            raise _err(errno.EROFS, g, "read-only in this app's policy")
        return m

    def _upper_copy(self, g: bytes, e: Entry, *, data: bool = True) -> bytes:
        """The host path to change for entry e: the upper copy (made now if needed)."""
        if e.layer is not Layer.LOWER:
            return e.host
        if g == b"/":
            raise _err(errno.EPERM, g, "the root directory's own metadata cannot be changed")
        self._ensure_upper_parents(g)
        return self._copy_up_object(g, e.host, e.st, data=data)

    def _place(self, g: bytes, make: Callable[[bytes], None], perm: int | None) -> None:
        """Create a new object at g in the upper layer with make(host_path) under a
        temporary name, give it its mode, rename it into place, drop a whiteout there."""
        try:
            self._ensure_upper_parents(g)
            up = self.upper(g)
            tmp = hostio.parent_of(up) + b"/" + tmp_name()
            make(tmp)
            try:
                st = hostio.lstat(tmp)
                assert st is not None
                if stat.S_ISDIR(st.st_mode) and self._lower_at(g) is not None:
                    self._mark_opaque(tmp)    # over a deleted lower object: it stays hidden
                    self._ix.opaque.add(g)
                if perm is not None:
                    hostio.chmod(tmp, perm)
                hostio.rename(tmp, up)
            except BaseException:
                hostio.remove_tree(tmp)
                self._ix.opaque.discard(g)
                raise
            self._ix.kinds[g] = stat.S_IFMT(st.st_mode)
            self._remove_whiteout(g)
        except OSError as e:
            raise guest_error(e, g) from None

    def _remove(self, g: bytes, e: Entry) -> None:
        """Remove g from the view: its upper object goes, a whiteout hides the lower one."""
        try:
            self._ensure_upper_parents(g)
            if self._lower_at(g) is not None and g not in self._ix.whiteouts:
                self._add_whiteout(g)     # with the object still there: the old state
            if g in self._ix.kinds:
                up = self.upper(g)
                if self._ix.kinds[g] == DIR:
                    self.meta.forget_tree(up)
                    aside = hostio.parent_of(up) + b"/" + tmp_name()
                    hostio.rename(up, aside)
                    self._ix.drop_subtree(g)
                    hostio.remove_tree(aside)
                else:
                    self.meta.removing(up)
                    hostio.unlink(up)
                    self._ix.kinds.pop(g)
        except OSError as err:
            raise guest_error(err, g) from None

    # ---- preparing a path for the kernel
    def copy_up(self, guest: bytes, *, truncate: bool = False) -> bytes:
        """Ensure an upper copy of guest (and its parents); return its host path.

        truncate=True (an addition, for O_TRUNC opens) copies metadata but no content.
        A passthrough path is returned as is; an upper one needs nothing.
        """
        m, e = self._writable(guest)
        return self._upper_copy(guest, e, data=not truncate)

    def prepare_create(self, guest: bytes) -> bytes:
        """Make guest's parents real upper directories; return where to create guest.

        EEXIST if the name exists in the view (the caller opens it with copy_up instead).
        A whiteout at the name stays until created() records the new object, so a failed
        creation leaves the view unchanged.
        """
        m = self._new_name(guest)
        if m is FileMode.PASSTHROUGH:
            return self.lower(guest)
        self._ensure_upper_parents(guest)
        return self.upper(guest)

    def _made_upper(self, guest: bytes) -> tuple[bytes, os.stat_result] | None:
        """The upper path and lstat of an object just made at guest; None when there is
        none, or the object is the host's own (passthrough) or not the view's (hidden)."""
        if self.mode(guest) in (FileMode.PASSTHROUGH, FileMode.HIDDEN):
            return None
        up = self.upper(guest)
        st = hostio.lstat(up)
        return None if st is None else (up, st)

    def created(self, guest: bytes) -> None:
        """Record the object the kernel created at prepare_create()'s path."""
        made = self._made_upper(guest)
        if made is None:
            return
        up, st = made
        try:
            if stat.S_ISDIR(st.st_mode) and self._lower_at(guest) is not None:
                self._mark_opaque(up)
                self._ix.opaque.add(guest)
            self._ix.kinds[guest] = stat.S_IFMT(st.st_mode)
            self._remove_whiteout(guest)
        except OSError as e:
            raise guest_error(e, guest) from None

    def record(self, made: "list[tuple[bytes, int]]") -> None:
        """Bring the index in step with the upper objects the compiled loop made, removed or
        moved itself: each (guest, S_IFMT it then found there, 0 for nothing), in order. A
        name in an owned directory (tracer/fastpath.py): there is no lower object there, so
        no whiteout or opaque mark is involved. The loop removes only empty directories (the
        kernel's rmdir), so a name that is gone takes nothing below it along: no scan of the
        index (an rm -rf of a tree of n directories would cost n scans of it)."""
        self._ix.set_kinds(made)

    # ---- mutations
    def mkdir(self, guest: bytes, mode: int) -> None:
        m = self._new_name(guest)
        perm = mode & 0o1777
        if m is FileMode.PASSTHROUGH:
            # mkdir then chmod: the tracer's own umask must not apply a second time.
            return self._host_op(guest, lambda p: (hostio.mkdir(p, 0o700), hostio.chmod(
                p, perm | _sgid_of(hostio.parent_of(p)))))
        par = hostio.lstat(self.upper(parent(guest))) if parent(guest) in self._ix.kinds \
            else None
        inherit = stat.S_ISGID if par is not None and par.st_mode & stat.S_ISGID else 0
        self._place(guest, lambda p: hostio.mkdir(p, 0o700), perm | inherit)

    def rmdir(self, guest: bytes) -> None:
        if guest == b"/":
            raise _err(errno.EBUSY, guest)
        m, e = self._existing(guest)
        if m is FileMode.PASSTHROUGH:
            return self._host_op(guest, hostio.rmdir)
        if not e.is_dir:
            raise _err(errno.ENOTDIR, guest)
        if m is FileMode.READONLY:
            raise _err(errno.EROFS, guest, "read-only in this app's policy")
        if self._is_private_root(guest):      # like a mount point
            raise _err(errno.EBUSY, guest, "a private directory of this app's policy")
        if self.listdir(guest):
            raise _err(errno.ENOTEMPTY, guest)
        self._remove(guest, e)

    def unlink(self, guest: bytes) -> None:
        m, e = self._existing(guest)
        if m is FileMode.PASSTHROUGH:
            return self._host_op(guest, hostio.unlink)
        if e.is_dir:
            raise _err(errno.EISDIR, guest)
        if m is FileMode.READONLY:
            raise _err(errno.EROFS, guest, "read-only in this app's policy")
        self._remove(guest, e)

    def rename(self, src: bytes, dst: bytes, flags: int = 0) -> None:
        from .rename import rename
        rename(self, src, dst, flags)

    def link(self, src: bytes, dst: bytes) -> None:
        ms = self.mode(src)
        if has_reserved(src) or ms is FileMode.HIDDEN:
            raise _err(errno.ENOENT, src)
        es = self._entry(src, ms)
        if es is None:
            raise _err(errno.ENOENT, src)
        try:
            md = self._new_name(dst)
        except GuestErrno as err:
            if err.errno != errno.EROFS:
                raise
            md = FileMode.READONLY
        if (ms is FileMode.PASSTHROUGH) != (md is FileMode.PASSTHROUGH):
            raise _err(errno.EXDEV, dst, "link across a passthrough boundary")
        if md is FileMode.READONLY:
            raise _err(errno.EROFS, dst, "read-only in this app's policy")
        if es.is_dir:
            raise _err(errno.EPERM, src, "hard link to a directory")
        if ms is FileMode.PASSTHROUGH:
            return self._host_op(dst, lambda p: hostio.link(self.lower(src), p))
        if ms is FileMode.READONLY:
            raise _err(errno.EROFS, src, "read-only in this app's policy")
        up_src = self._upper_copy(src, es)
        self._ensure_upper_parents(dst)
        try:
            hostio.link(up_src, self.upper(dst))
        except OSError as e:
            raise guest_error(e, dst) from None
        self._ix.kinds[dst] = stat.S_IFMT(es.st.st_mode)
        self._remove_whiteout(dst)

    def symlink(self, target: bytes, guest: bytes) -> None:
        m = self._new_name(guest)
        if m is FileMode.PASSTHROUGH:
            return self._host_op(guest, lambda p: hostio.symlink(target, p))
        self._place(guest, lambda p: hostio.symlink(target, p), None)

    def mknod(self, guest: bytes, mode: int, dev: int = 0, *,
              virtual_devices: bool = False) -> None:
        """virtual_devices: a device node is an empty regular stand-in whose device is
        recorded in self.meta (stat shows it); otherwise devices are refused (EPERM)."""
        fmt = stat.S_IFMT(mode) or stat.S_IFREG
        if fmt not in (*_FMT_CREATABLE, stat.S_IFCHR, stat.S_IFBLK):
            raise _err(errno.EINVAL, guest, "unknown file type")
        m = self._new_name(guest)
        device = fmt in (stat.S_IFCHR, stat.S_IFBLK)
        if device and (not virtual_devices or m is FileMode.PASSTHROUGH):
            raise _err(errno.EPERM, guest, "device nodes cannot be created in the sandbox")
        perm = mode & 0o7777

        def make(p: bytes) -> None:
            if fmt == stat.S_IFREG or device:
                hostio.create_empty(p, 0o600)
                if device:
                    self.meta.set(os.lstat(p), FileMeta(kind=fmt, rdev=dev))
            else:
                hostio.mknod(p, fmt | 0o600)

        if m is FileMode.PASSTHROUGH:
            return self._host_op(guest, lambda p: (make(p), hostio.chmod(p, perm)))
        self._place(guest, make, perm)

    def chmod(self, guest: bytes, mode: int) -> None:
        m, e = self._writable(guest)
        if stat.S_ISLNK(e.st.st_mode):
            raise _err(errno.EOPNOTSUPP, guest, "the mode of a symbolic link")
        self._change(guest, e, lambda p: hostio.chmod(p, mode & 0o7777))

    def own_created(self, guest: bytes, uid: int, gid: int, *, remember: bool) -> None:
        """Give an object the program just made the owner its ids give it (a virtual
        identity's fsuid and fsgid; the group stays the directory's below a set-group-ID
        directory, as the kernel gave it). remember=True: record it instead (a non-root
        appvirt cannot chown). The host's own objects (passthrough) keep their owner."""
        made = self._made_upper(guest)
        if made is None:
            return
        up, st = made
        above = hostio.lstat(parent(up))
        if (above is not None and above.st_mode & stat.S_ISGID) or gid == st.st_gid:
            gid = -1
        if uid == st.st_uid:
            uid = -1
        if uid == -1 and gid == -1:
            return
        if remember:
            self.meta.set(st, FileMeta(None if uid == -1 else uid, None if gid == -1 else gid))
        else:
            hostio.chown(up, uid, gid)
            if st.st_mode & (stat.S_ISUID | stat.S_ISGID) and not stat.S_ISLNK(st.st_mode):
                hostio.chmod(up, stat.S_IMODE(st.st_mode))   # chown cleared them; made so

    def chown(self, guest: bytes, uid: int, gid: int, *, remember: bool = False) -> None:
        """Change the owner (-1: keep). remember=True: record it in self.meta instead of
        changing the upper copy's (what a non-root appvirt cannot do)."""
        m, e = self._writable(guest)
        if remember and m is not FileMode.PASSTHROUGH:
            self._change(guest, e, lambda p: self.meta.set(os.lstat(p), FileMeta(
                None if uid == -1 else uid, None if gid == -1 else gid)))
            return
        self._change(guest, e, lambda p: hostio.chown(p, uid, gid))

    def utimens(self, guest: bytes, atime_ns: int | None, mtime_ns: int | None) -> None:
        m, e = self._writable(guest)
        if atime_ns is None and mtime_ns is None:
            return

        def touch(p: bytes) -> None:
            st = hostio.lstat(p)
            assert st is not None
            hostio.utime(p, st.st_atime_ns if atime_ns is None else atime_ns,
                         st.st_mtime_ns if mtime_ns is None else mtime_ns)

        self._change(guest, e, touch)

    def truncate(self, guest: bytes, length: int) -> None:
        m, e = self._writable(guest)
        if e.is_dir:
            raise _err(errno.EISDIR, guest)
        if not stat.S_ISREG(e.st.st_mode) or length < 0:
            raise _err(errno.EINVAL, guest)
        self._change(guest, e, lambda p: hostio.truncate(p, length), data=length > 0)

    def setxattr(self, guest: bytes, name: bytes, value: bytes, flags: int) -> None:
        m, e = self._writable(guest)
        self._change(guest, e, lambda p: hostio.setxattr(p, name, value, flags))

    def removexattr(self, guest: bytes, name: bytes) -> None:
        m, e = self._writable(guest)
        try:
            hostio.getxattr(e.host, name)     # ENODATA: nothing to remove, nothing to copy
        except OSError as err:
            raise guest_error(err, guest) from None
        self._change(guest, e, lambda p: hostio.removexattr(p, name))

    def _change(self, g: bytes, e: Entry, op: Callable[[bytes], object], *,
                data: bool = True) -> None:
        p = self._upper_copy(g, e, data=data)
        try:
            op(p)
        except OSError as err:
            raise guest_error(err, g) from None

    def _host_op(self, g: bytes, op: Callable[[bytes], object]) -> None:
        """A passthrough operation: the host path itself, its own errors."""
        try:
            op(self.lower(g))
        except OSError as e:
            raise guest_error(e, g) from None

    # ---- inspection
    @property
    def empty(self) -> bool:
        """Whether the upper layer holds nothing: the view is the host's own."""
        ix = self._ix
        return not ix.kinds and not ix.whiteouts and not ix.opaque

    def changes(self) -> list[Change]:
        """Added, modified and deleted paths compared with the host, sorted by path."""
        from .changes import upper_entries
        return [c for c in upper_entries(self) if c.kind.value != "unchanged"]

    def upper_entries(self) -> list[Change]:
        """Every entry of the upper layer as a change (UNCHANGED: a copy equal to the host)."""
        from .changes import upper_entries
        return upper_entries(self)


def _sgid_of(d: bytes) -> int:
    st = hostio.lstat(d)
    return stat.S_ISGID if st is not None and st.st_mode & stat.S_ISGID else 0
