"""Resolve a path component by component, as the kernel's path walk does, in the caller's view.

Never lexical (threat #18): `..` pops a component that is known to be a real directory, each
symlink is read and followed in place, `/proc/self` and `/proc/thread-self` mean the caller, and
magic links under `/proc/PID/` are followed only after checking that the text they show names
the same object. The result is an absolute path with no symlink in it, which the kernel is then
told to open with RESOLVE_NO_SYMLINKS, so a swap after this walk fails instead of escaping.
"""

import errno
import os
import stat as statmod
from collections.abc import Callable
from typing import NamedTuple, Protocol

from ..errors import GuestErrno
from .dirents import Dirent

MAXSYMLINKS = 40
NAME_MAX = 255
PATH_MAX = 4096

# Entries of /proc/PID (and /proc/PID/task/TID) that are magic links or directories of them.
_MAGIC_LINKS = frozenset((b"cwd", b"root", b"exe"))
_MAGIC_DIRS = frozenset((b"fd", b"map_files", b"ns"))


class MagicObject(NamedTuple):
    """An object reached through a /proc magic link that has no path (pipe, socket, ...)."""

    proc_path: bytes          # canonical /proc/TGID/fd/N form, for the kernel to follow
    dev: int
    ino: int
    owner_pid: int            # the process whose fd table or view it belongs to


class Resolved(NamedTuple):
    """Where a path leads. `path` is absolute and free of symlinks and `.`/`..`."""

    path: bytes
    st: os.stat_result | None        # lstat of the final component; None if it does not exist
    trailing_slash: bool = False
    magic: MagicObject | None = None

    @property
    def exists(self) -> bool:
        return self.st is not None or self.magic is not None

    @property
    def is_dir(self) -> bool:
        return self.st is not None and statmod.S_ISDIR(self.st.st_mode)

    @property
    def kernel_path(self) -> bytes:
        """The path to hand the kernel (keeps a trailing slash: it changes the errors)."""
        if self.magic is not None:
            return self.magic.proc_path
        return self.path + b"/" if self.trailing_slash and self.path != b"/" else self.path


class Caller(NamedTuple):
    """Who resolves: /proc/self is its tgid, /proc/thread-self its tid."""

    tid: int
    pid: int
    is_member: Callable[[int], bool]


class View(Protocol):
    """A filesystem as the program sees it: the host itself, or the app's overlay."""

    def lstat(self, path: bytes) -> os.stat_result | None:
        """lstat of a path in the view; None if absent; GuestErrno for other failures."""

    def readlink(self, path: bytes) -> bytes:
        """The target of a symlink in the view."""

    def to_guest(self, host: bytes) -> bytes | None:
        """The view's path of a host path (as /proc magic links show them); None if hidden."""

    def listing(self, host_dir: bytes) -> "list[Dirent] | None":
        """The entries ("." and ".." first) a program must see when it lists the host
        directory `host_dir` through an fd; None when the kernel's own listing is right."""


class HostView:
    """The host filesystem, unchanged."""

    def lstat(self, path: bytes) -> os.stat_result | None:
        try:
            return os.lstat(path)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise GuestErrno(e.errno or errno.EIO, os.fsdecode(path)) from None

    def readlink(self, path: bytes) -> bytes:
        try:
            target = os.readlink(path)
        except OSError as e:
            raise GuestErrno(e.errno or errno.EIO, os.fsdecode(path)) from None
        return target if isinstance(target, bytes) else os.fsencode(target)

    def to_guest(self, host: bytes) -> bytes | None:
        return host

    def listing(self, host_dir: bytes) -> "list[Dirent] | None":
        return None


HOST = HostView()


def _readlink(path: bytes) -> bytes:
    return HOST.readlink(path)


def _join(parts: list[bytes]) -> bytes:
    return b"/" + b"/".join(parts)


def _proc_pid(parts: list[bytes]) -> int | None:
    """The pid of a /proc/PID/... path (parts are components of an absolute path)."""
    if len(parts) >= 2 and parts[0] == b"proc" and parts[1].isdigit():
        return int(parts[1])
    return None


def _is_magic(parts: list[bytes]) -> bool:
    """Whether parts names a magic link (/proc/P/{cwd,root,exe,fd/N,...}, also under task/T)."""
    if _proc_pid(parts) is None:
        return False
    rest = parts[2:]
    if len(rest) >= 2 and rest[0] == b"task" and rest[1].isdigit():
        rest = rest[2:]
    return (len(rest) == 1 and rest[0] in _MAGIC_LINKS) or (
        len(rest) == 2 and rest[0] in _MAGIC_DIRS)


def follow_magic(parts: list[bytes], caller: Caller, view: View = HOST) -> bytes | MagicObject:
    """Follow a magic link: its text if that names the same object, else the object itself.

    The text is a host path; the view translates it into the path the program knows."""
    pid = _proc_pid(parts)
    assert pid is not None
    if not caller.is_member(pid):
        # Another process's fds, cwd or root are outside the sandbox (threats #20, #30).
        raise GuestErrno(errno.EACCES, "magic link of a process outside the sandbox")
    link = _join(parts)
    try:
        target = _readlink(link)
        obj = os.stat(link)
    except FileNotFoundError:
        raise GuestErrno(errno.ENOENT, os.fsdecode(link)) from None
    except OSError as e:
        raise GuestErrno(e.errno or errno.EIO, os.fsdecode(link)) from None
    if target.startswith(b"/") and not target.endswith(b" (deleted)"):
        try:
            named = os.stat(target)
        except OSError:
            named = None
        same = named is not None and (named.st_dev, named.st_ino) == (obj.st_dev, obj.st_ino)
        if not same:
            try:
                lnamed = os.lstat(target)
                same = (lnamed.st_dev, lnamed.st_ino) == (obj.st_dev, obj.st_ino)
            except OSError:
                pass
        if same:
            guest = view.to_guest(target)
            if guest is None:
                raise GuestErrno(errno.ENOENT, "magic link into a hidden place")
            return guest
    return MagicObject(link, obj.st_dev, obj.st_ino, pid)


def _plain(path: bytes, base: bytes) -> bytes | None:
    """The absolute path `path` names from `base` when it holds no ".." component, no "."
    as its last one and no over-long name (then the kernel may look it up whole); else None.
    A "." before another component changes nothing ("./d/f", "d/./f" are "d/f")."""
    if b"/" not in path:          # a name in the directory: the commonest case, made cheap
        if path == b"." or path == b".." or len(path) > NAME_MAX:
            return None
        return base + b"/" + path if base != b"/" else b"/" + path
    parts = [c for c in (path if path.startswith(b"/") else base + b"/" + path).split(b"/")
             if c]
    if not parts or parts[-1] == b"." or b".." in parts \
            or any(len(c) > NAME_MAX for c in parts):
        return None
    return b"/" + b"/".join(c for c in parts if c != b".")


def resolve(caller: Caller, base: bytes, path: bytes, *, follow: bool,
            no_symlinks: bool = False, no_magiclinks: bool = False,
            root: bytes | None = None, beneath: bool = False, view: View = HOST) -> Resolved:
    """Resolve `path` for `caller`; relative paths start at the absolute directory `base`.

    Args:
        follow: follow a symlink in the final component (a trailing slash always does).
        no_symlinks, no_magiclinks: openat2's RESOLVE_NO_SYMLINKS / RESOLVE_NO_MAGICLINKS.
        root: openat2's RESOLVE_IN_ROOT: `/` and absolute symlinks mean this directory.
        beneath: openat2's RESOLVE_BENEATH: escaping `base` fails with EXDEV.

    Raises:
        GuestErrno: ENOENT, ENOTDIR, ELOOP, ENAMETOOLONG, EACCES, EXDEV as the kernel would.
    """
    if not path:
        raise GuestErrno(errno.ENOENT, "empty path")
    trailing = path.endswith(b"/")
    fast = getattr(view, "fast_lookup", None)
    if fast is not None and root is None and not beneath and not trailing:
        full = _plain(path, base)
        if full is not None and len(full) < PATH_MAX:
            got = fast(full, follow)
            if got is not None:
                return got
    root_parts = [c for c in root.split(b"/") if c] if root is not None else []
    if path.startswith(b"/"):
        if beneath:
            raise GuestErrno(errno.EXDEV, "absolute path with RESOLVE_BENEATH")
        cur = list(root_parts)
    else:
        cur = [c for c in base.split(b"/") if c]
    floor = len(cur) if (beneath or root is not None) else 0
    # "." stays in the walk: like a trailing slash it makes the component before it be
    # followed and be a directory ("link/." is the link's target, "file/." is ENOTDIR).
    todo = [c for c in reversed(path.split(b"/")) if c]
    links = 0
    st: os.stat_result | None = None
    while todo:
        comp = todo.pop()
        last = not todo
        if comp in (b".", b".."):
            if comp == b".." and len(cur) > floor:
                cur.pop()
            elif comp == b".." and beneath:
                raise GuestErrno(errno.EXDEV, "'..' escapes RESOLVE_BENEATH")
            st = view.lstat(_join(cur)) if last else None
            continue
        if len(comp) > NAME_MAX:
            raise GuestErrno(errno.ENAMETOOLONG, "path component longer than NAME_MAX")
        # /proc/self and /proc/thread-self name the caller, not the tracer.
        if cur == [b"proc"] and comp in (b"self", b"thread-self"):
            links += 1
            target = (str(caller.pid).encode() if comp == b"self"
                      else b"%d/task/%d" % (caller.pid, caller.tid))
            todo.extend(reversed(target.split(b"/")))
            continue
        cand = cur + [comp]
        st = view.lstat(_join(cand))
        if st is None:
            if not last:
                raise GuestErrno(errno.ENOENT, os.fsdecode(_join(cand)))
            return Resolved(_join(cand), None, trailing)
        if statmod.S_ISLNK(st.st_mode) and (not last or follow or trailing):
            links += 1
            if links > MAXSYMLINKS:
                raise GuestErrno(errno.ELOOP, "too many levels of symbolic links")
            if _is_magic(cand):
                if no_magiclinks or no_symlinks:
                    raise GuestErrno(errno.ELOOP, "magic link refused by RESOLVE flags")
                target_or_obj = follow_magic(cand, caller, view)
                if isinstance(target_or_obj, MagicObject):
                    if not last:
                        raise GuestErrno(errno.ENOTDIR, os.fsdecode(_join(cand)))
                    return Resolved(_join(cand), None, trailing, target_or_obj)
                target = target_or_obj
            else:
                if no_symlinks:
                    raise GuestErrno(errno.ELOOP, "symlink refused by RESOLVE_NO_SYMLINKS")
                target = view.readlink(_join(cand))
            if target.startswith(b"/"):
                if beneath:
                    raise GuestErrno(errno.EXDEV, "absolute symlink with RESOLVE_BENEATH")
                cur = list(root_parts)
            todo.extend(c for c in reversed(target.split(b"/")) if c)
            if not todo:          # a symlink to "/" (or to the IN_ROOT root)
                st = view.lstat(_join(cur))
            continue
        if not last and not statmod.S_ISDIR(st.st_mode):
            raise GuestErrno(errno.ENOTDIR, os.fsdecode(_join(cand)))
        cur = cand
    final = _join(cur)
    if len(final) >= PATH_MAX:
        raise GuestErrno(errno.ENAMETOOLONG, "resolved path longer than PATH_MAX")
    if st is None and cur:
        st = view.lstat(final)
    elif not cur:
        st = view.lstat(b"/")
    if trailing and st is not None and not statmod.S_ISDIR(st.st_mode):
        raise GuestErrno(errno.ENOTDIR, os.fsdecode(final))
    return Resolved(final, st, trailing)
