"""The program's filesystem with the registry tree mounted on it.

`RegistryFS` wraps the OverlayFS (the resolver's View and the handlers' filesystem): paths at
and below the mount are answered from the registry spool (registryspool.py); every other path
goes to the overlay after one prefix test. The mount hides whatever the host has there, and
the mount's ancestors that the host lacks (/run/appvirt) are shown as read-only directories.
Nothing is ever made on the host at the mount: the spool lives in the app's state directory,
which the program cannot see.

`RegistryFS.ov` is the overlay's change interface (mkdir, unlink, rename ...), with the calls
on registry paths made on the store instead.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat as statmod
from collections.abc import Iterator
from typing import Any

from ..errors import GuestErrno
from .dirents import DT_DIR, Dirent, host_listing
from .registryspool import RegistrySpool
from .resolver import Resolved


def _parent(g: bytes) -> bytes:
    return g.rsplit(b"/", 1)[0] or b"/"


@contextlib.contextmanager
def spool_errors() -> Iterator[None]:
    """A failure of the spool directory (disk full ...) is the program's EIO or the like."""
    try:
        yield
    except OSError as e:
        raise GuestErrno(e.errno or errno.EIO, f"registry spool: {e.strerror}") from e


class RegistryFS:
    """The View and filesystem of the handlers: the overlay's, with the registry mounted."""

    def __init__(self, inner: Any, mount: bytes, shown_root: bytes,
                 spool: RegistrySpool) -> None:
        """`shown_root` is the host directory holding the guest paths the spool shows:
        `shown_root + mount` is the spool's root."""
        assert mount.startswith(b"/") and mount != b"/" and spool.root == shown_root + mount
        self.inner = inner
        self.mount = mount
        self.spool = spool
        self.top = b"/" + mount.split(b"/")[1]   # other paths: one test against this
        self._below = mount + b"/"
        self._shown = shown_root
        self._shown_below = shown_root + b"/"
        parts = mount.split(b"/")[1:]
        self._ancestors = frozenset(b"/" + b"/".join(parts[:i]) for i in range(1, len(parts)))
        # Each directory on the way to the mount, with the name it must list.
        self._child_of = {b"/" + b"/".join(parts[:i]) if i else b"/": parts[i]
                          for i in range(len(parts))}
        self.ov = RegistryChanges(inner.ov, self)
        # The overlay's methods every path call goes through, bound once (the hot path).
        self._lstat, self._fast_lookup = inner.lstat, inner.fast_lookup
        self._to_guest, self._host_for_read = inner.to_guest, inner.host_for_read

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def meta(self) -> Any:
        """The overlay's recorded owners (asked on every stat: no __getattr__ detour)."""
        return self.inner.meta

    # -- where a guest path is ----------------------------------------------------------------

    def registry_rel(self, g: bytes) -> bytes | None:
        """g relative to the mount (b"" for the mount), None when g is not in the tree."""
        if g.startswith(self._below):
            return g[len(self.mount):]
        return b"" if g == self.mount else None

    def is_virtual_dir(self, g: bytes) -> bool:
        """Whether g is an ancestor of the mount that only appvirt shows."""
        return g in self._ancestors and self.inner.lstat(g) is None

    # -- View ---------------------------------------------------------------------------------

    def lstat(self, path: bytes) -> os.stat_result | None:
        if path.startswith(self.top):
            rel = self.registry_rel(path)
            if rel is not None:
                with spool_errors():
                    return self.spool.lookup(rel)
            if path in self._ancestors:
                st = self.inner.lstat(path)
                if st is not None:
                    return st
                with spool_errors():
                    self.spool.ready()         # makes the mount's parents too
                    return os.lstat(self._shown + path)
        return self._lstat(path)

    def _holds_tree(self, d: bytes) -> bool:
        """Whether d is the tree, in it, or one of the directories that hold it."""
        m = self.mount
        return d == m or d.startswith(self._below) or m.startswith(d + b"/" if d != b"/" else d)

    def plain_dir(self, d: bytes, parent_plain: bool = False) -> bool:
        """See OverlayFS.plain_dir: never the tree, its virtual ancestors or what holds them."""
        return not self._holds_tree(d) and self.inner.plain_dir(d, parent_plain)

    def owned_dir(self, d: bytes) -> bytes | None:
        """See OverlayFS.owned_dir: never the tree, its virtual ancestors or what holds them."""
        return None if self._holds_tree(d) else self.inner.owned_dir(d)

    def merged_dir(self, d: bytes) -> bytes | None:
        """See OverlayFS.merged_dir: never the tree, its virtual ancestors or what holds them."""
        return None if self._holds_tree(d) else self.inner.merged_dir(d)

    def upper_dir_stat(self, g: bytes) -> tuple[bytes, int, bytes, int, int] | None:
        """See OverlayFS.upper_dir_stat: never the tree, its virtual ancestors or what holds
        them (a holder's listing shows the tree's top too)."""
        return None if self._holds_tree(g) else self.inner.upper_dir_stat(g)

    def host_name_dir(self, d: bytes) -> bool:
        """See OverlayFS.host_name_dir: never the tree, its virtual ancestors or what holds
        it."""
        return not self._holds_tree(d) and self.inner.host_name_dir(d)

    def shows_itself(self, d: bytes) -> bool:
        """See OverlayFS.shows_itself: a directory holding the tree ("/", "/run") is itself
        the host's when the host has it; the tree and the ancestors only appvirt shows are
        not."""
        return (self.registry_rel(d) is None and not self.is_virtual_dir(d)
                and self.inner.host_name_dir(d))

    def host_name(self, p: bytes) -> bool:
        return not self._holds_tree(p) and self.inner.host_name(p)

    def fast_lookup(self, guest: bytes, follow: bool) -> Resolved | None:
        if guest.startswith(self.top) and (self.registry_rel(guest) is not None
                                           or guest in self._ancestors):
            return None                    # walked component by component, through lstat
        return self._fast_lookup(guest, follow)

    def readlink(self, path: bytes) -> bytes:
        if path.startswith(self.top) and self.registry_rel(path) is not None:
            raise GuestErrno(errno.EINVAL, "the registry tree has no symlinks")
        return self.inner.readlink(path)

    def to_guest(self, host: bytes) -> bytes | None:
        if host.startswith(self._shown_below):
            return host[len(self._shown):]
        return self._to_guest(host)

    def listing(self, host_dir: bytes) -> list[Dirent] | None:
        if host_dir.startswith(self._shown_below):
            rel = self.spool.rel(host_dir)
            if rel is not None:
                with spool_errors():
                    self.spool.sync_dir(rel)   # from the store; then the kernel lists it
            return None
        base = self.inner.listing(host_dir)
        name = self._child_of.get(host_dir)
        if name is None:
            return base
        child = host_dir.rstrip(b"/") + b"/" + name
        try:
            if base is None:
                if os.path.lexists(child):
                    return None            # the host has it: the kernel's listing shows it
                base = host_listing(host_dir)
            elif any(d.name == name for d in base):
                return base
            self.spool.ready()
            ino = os.lstat(self._shown + child).st_ino
        except OSError:
            return base
        return base + [Dirent(name, DT_DIR, ino)]

    # -- where the kernel acts ----------------------------------------------------------------

    def host_for_read(self, guest: bytes) -> bytes:
        if guest.startswith(self.top):
            rel = self.registry_rel(guest)
            if rel is not None:
                host = self.spool.host(rel)
                if os.path.isdir(host):
                    with spool_errors():
                        self.spool.sync_dir(rel)
                return host
            if self.is_virtual_dir(guest):
                return self._shown + guest
        return self._host_for_read(guest)

    def host_for_write(self, guest: bytes, *, truncate: bool = False) -> bytes:
        if guest.startswith(self.top):
            rel = self.registry_rel(guest)
            if rel is not None:
                with spool_errors():
                    return self.spool.open_for_write(rel)
            if self.is_virtual_dir(guest):
                raise GuestErrno(errno.EACCES, "a parent of the registry tree")
        return self.inner.host_for_write(guest, truncate=truncate)

    def host_for_create(self, guest: bytes) -> bytes:
        if guest.startswith(self.top):
            rel = self.registry_rel(guest)
            if rel is not None:
                with spool_errors():
                    return self.spool.prepare_create(rel)
            if self.is_virtual_dir(_parent(guest)):
                raise GuestErrno(errno.EACCES, "a parent of the registry tree")
        return self.inner.host_for_create(guest)

    def created(self, guest: bytes) -> None:
        rel = self.registry_rel(guest) if guest.startswith(self.top) else None
        if rel is not None:
            self.spool.created(rel)
        else:
            self.inner.created(guest)

    def merged_nlink(self, guest: bytes) -> int | None:
        if guest.startswith(self.top) and self.registry_rel(guest) is not None:
            return None                    # the spool directory's own count is right
        return self.inner.merged_nlink(guest)

    def kept_identity(self, guest: bytes) -> tuple[bytes, os.stat_result] | None:
        if guest.startswith(self.top) and self.registry_rel(guest) is not None:
            return None                    # the spool's directories are appvirt's own
        return self.inner.kept_identity(guest)

    def redirected(self, guest: bytes) -> bool:
        if guest.startswith(self.top) and self.registry_rel(guest) is not None:
            return True
        return self.inner.redirected(guest)


class RegistryChanges:
    """The overlay's change operations; on registry paths, made on the store. Modes, owners
    and times of registry files cannot change (those calls succeed and do nothing); links,
    symlinks, devices and extended attributes do not exist there."""

    def __init__(self, ov: Any, fs: RegistryFS) -> None:
        self._ov = ov
        self._fs = fs
        self._spool = fs.spool

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ov, name)

    def _route(self, g: bytes, *, making: bool = False) -> bytes | None:
        """g's registry-relative path, or None for the overlay's paths. The mount's virtual
        parents cannot change (EBUSY; EEXIST to mkdir) and hold nothing else (EACCES)."""
        fs = self._fs
        if not g.startswith(fs.top):
            return None
        rel = fs.registry_rel(g)
        if rel is not None:
            return rel
        if fs.is_virtual_dir(g):
            raise GuestErrno(errno.EEXIST if making else errno.EBUSY,
                             "a parent of the registry tree")
        if making and fs.is_virtual_dir(_parent(g)):
            raise GuestErrno(errno.EACCES, "a parent of the registry tree")
        return None

    def mkdir(self, g: bytes, mode: int) -> None:
        rel = self._route(g, making=True)
        if rel is None:
            return self._ov.mkdir(g, mode)
        with spool_errors():
            self._spool.mkdir(rel)

    def mknod(self, g: bytes, mode: int, *args: Any, **kw: Any) -> None:
        rel = self._route(g, making=True)
        if rel is None:
            return self._ov.mknod(g, mode, *args, **kw)
        if statmod.S_IFMT(mode) not in (0, statmod.S_IFREG):
            raise GuestErrno(errno.EPERM, "only regular files (values) in the registry tree")
        with spool_errors():
            self._spool.make_value(rel)

    def rmdir(self, g: bytes) -> None:
        rel = self._route(g)
        if rel is None:
            return self._ov.rmdir(g)
        with spool_errors():
            self._spool.rmdir(rel)

    def unlink(self, g: bytes) -> None:
        rel = self._route(g)
        if rel is None:
            return self._ov.unlink(g)
        with spool_errors():
            self._spool.unlink(rel)

    def rename(self, src: bytes, dst: bytes, flags: int = 0) -> None:
        rs, rd = self._route(src), self._route(dst, making=True)
        if rs is None and rd is None:
            return self._ov.rename(src, dst, flags)
        if rs is None or rd is None:
            raise GuestErrno(errno.EXDEV, "the registry tree is another file system")
        with spool_errors():
            self._spool.rename(rs, rd, flags)

    def link(self, src: bytes, dst: bytes) -> None:
        rs, rd = self._route(src), self._route(dst, making=True)
        if rs is None and rd is None:
            return self._ov.link(src, dst)
        if rs is None or rd is None:
            raise GuestErrno(errno.EXDEV, "the registry tree is another file system")
        raise GuestErrno(errno.EPERM, "values have one name")

    def symlink(self, target: bytes, g: bytes) -> None:
        if self._route(g, making=True) is None:
            return self._ov.symlink(target, g)
        raise GuestErrno(errno.EPERM, "the registry tree has no symlinks")

    def truncate(self, g: bytes, length: int) -> None:
        rel = self._route(g)
        if rel is None:
            return self._ov.truncate(g, length)
        with spool_errors():
            self._spool.truncate(rel, length)

    def chmod(self, g: bytes, *args: Any, **kw: Any) -> None:
        if self._route(g) is None:
            return self._ov.chmod(g, *args, **kw)

    def chown(self, g: bytes, *args: Any, **kw: Any) -> None:
        if self._route(g) is None:
            return self._ov.chown(g, *args, **kw)

    def utimens(self, g: bytes, *args: Any, **kw: Any) -> None:
        if self._route(g) is None:
            return self._ov.utimens(g, *args, **kw)

    def setxattr(self, g: bytes, *args: Any, **kw: Any) -> None:
        if self._route(g) is None:
            return self._ov.setxattr(g, *args, **kw)
        raise GuestErrno(errno.EOPNOTSUPP, "no extended attributes in the registry tree")

    def removexattr(self, g: bytes, *args: Any, **kw: Any) -> None:
        if self._route(g) is None:
            return self._ov.removexattr(g, *args, **kw)
        raise GuestErrno(errno.EOPNOTSUPP, "no extended attributes in the registry tree")
