"""The virtual directory tree over a store: pure logic for the tracer, no system calls.

Keys are directories and values are regular files under the registry mount (default
`/run/appvirt/registry`). The tracer resolves a guest path to a path relative to the mount
(bytes, '..' already resolved or left to `_path` as lexical), calls one method per file
operation, and turns a raised `GuestErrno` into the syscall's error return.

File content: `render.render` (reading) and `render.value_from_content` (writing, the typing
rule). Writes are whole-content: the tracer buffers what a program writes to an open file
and calls `write_file` with the complete new content (at close, or at each write; partial
writes and O_APPEND splice into `read_file`'s content first).

Values cannot live at the root (EACCES); renaming a key gives EXDEV, so `mv` copies it.
Store failures (busy, corrupt, I/O) surface as EIO with the StoreError as `__cause__`.
"""

import contextlib
import enum
import errno
import stat as stat_mod
from collections.abc import Iterator
from typing import NamedTuple

from ..errors import GuestErrno
from ..hashes import blake2b
from . import wellknown
from .errors import (InvalidKey, InvalidValue, IsAKey, KeyExists, KeyNotEmpty, KeyNotFound,
                     LimitExceeded, LimitKind, NotAKey, StoreError, ValueNotFound)
from .keys import ROOT, SEP, basename, check_key, check_name, parent
from .layers import Listing, Node, NodeKind
from .render import render, value_from_content
from .store import Store

DIR_MODE = stat_mod.S_IFDIR | 0o755
FILE_MODE = stat_mod.S_IFREG | 0o644
DT_DIR = 4
DT_REG = 8


class FileKind(enum.Enum):
    DIRECTORY = "directory"
    REGULAR = "regular"


class NodeStat(NamedTuple):
    """What stat(2) reports; uid/gid are the tracer's to fill (the program's own)."""

    kind: FileKind
    mode: int          # full st_mode, file type bits included
    size: int          # bytes of the rendered content; 0 for directories
    mtime_ns: int      # last-write time (also for atime and ctime)
    ino: int           # stable across runs: a hash of the path
    nlink: int         # 2 + subkeys for directories, 1 for files

    @property
    def is_dir(self) -> bool:
        return self.kind is FileKind.DIRECTORY


class DirEntry(NamedTuple):
    name: bytes
    d_type: int        # DT_DIR or DT_REG
    ino: int


def fake_ino(path: str) -> int:
    """A stable, non-zero inode number for a tree path."""
    h = blake2b(path.encode(), digest_size=8, person=b"appvirt-reg").digest()
    return (int.from_bytes(h, "little") & ((1 << 63) - 1)) or 1


_LIMIT_ERRNO = {LimitKind.PATH_LENGTH: errno.ENAMETOOLONG, LimitKind.DEPTH: errno.ENAMETOOLONG,
                LimitKind.NAME_LENGTH: errno.ENAMETOOLONG, LimitKind.VALUE_SIZE: errno.EFBIG,
                LimitKind.VALUE_COUNT: errno.ENOSPC}
_ERRNO: tuple[tuple[type[StoreError], int], ...] = (
    (KeyNotFound, errno.ENOENT), (ValueNotFound, errno.ENOENT), (KeyExists, errno.EEXIST),
    (NotAKey, errno.ENOTDIR), (IsAKey, errno.EISDIR), (KeyNotEmpty, errno.ENOTEMPTY),
    (InvalidKey, errno.EINVAL), (InvalidValue, errno.EINVAL))


def errno_for(e: StoreError) -> int:
    """The errno a program sees for a store failure."""
    if isinstance(e, LimitExceeded):
        return _LIMIT_ERRNO[e.kind]
    for cls, err in _ERRNO:
        if isinstance(e, cls):
            return err
    return errno.EIO


@contextlib.contextmanager
def guest_errors() -> Iterator[None]:
    """Turn StoreErrors raised inside into GuestErrno (chained)."""
    try:
        yield
    except StoreError as e:
        raise GuestErrno(errno_for(e), e.message) from e


class _DryRun(Exception):
    """Rolls back a batch whose only purpose was to see whether it would succeed."""


class RegistryTree:
    """File operations on the registry mount, answered from a Store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- paths -------------------------------------------------------------------------------

    def _path(self, rel: bytes, *, creating: bool = False) -> str:
        """The key path of a mount-relative path; `creating` judges the last component as a
        name to create (EINVAL, ENAMETOOLONG) rather than one to find (ENOENT)."""
        parts: list[str] = []
        raw = [c for c in rel.split(b"/") if c not in (b"", b".")]
        for i, c in enumerate(raw):
            if c == b"..":
                if not parts:
                    raise ValueError(f"{rel!r} leaves the registry tree: resolve it first")
                parts.pop()
                continue
            new = creating and i == len(raw) - 1
            try:
                parts.append(check_name(c.decode("utf-8"), self.store.limits, what="name"))
            except UnicodeDecodeError:
                raise GuestErrno(errno.EINVAL if new else errno.ENOENT,
                                 "names in the registry tree are UTF-8") from None
            except LimitExceeded as e:
                raise GuestErrno(errno.ENAMETOOLONG, e.message) from e
            except InvalidKey as e:
                raise GuestErrno(errno.EINVAL if new else errno.ENOENT, e.message) from e
        path = SEP.join(parts)
        try:
            check_key(path, self.store.limits)
        except LimitExceeded as e:
            raise GuestErrno(errno.ENAMETOOLONG if creating else errno.ENOENT, e.message) from e
        return path

    def _lookup(self, path: str) -> Node | None:
        """The node at `path`, None if absent; ENOTDIR when a component is a value."""
        try:
            return self.store.node(path)
        except KeyNotFound:
            return None

    def _require_dir(self, path: str) -> None:
        node = self._lookup(path)
        if node is None:
            raise GuestErrno(errno.ENOENT, f"no key {path!r}")
        if node.kind is NodeKind.VALUE:
            raise GuestErrno(errno.ENOTDIR, f"{path!r} is a value")
        if path == ROOT:
            raise GuestErrno(errno.EACCES, "the registry root holds only keys (directories)")

    # -- reading -----------------------------------------------------------------------------

    def stat(self, rel: bytes) -> NodeStat:
        path = self._path(rel)
        with guest_errors():
            node = self.store.node(path)
            if node.kind is NodeKind.KEY:
                listing = self.store.list(path)
                return NodeStat(FileKind.DIRECTORY, DIR_MODE, 0, listing.key.mtime_ns,
                                fake_ino(path), 2 + len(listing.subkeys))
            entry = node.entry
            assert entry is not None
            return NodeStat(FileKind.REGULAR, FILE_MODE, len(render(entry.value)),
                            entry.mtime_ns, fake_ino(path), 1)

    def list_dir(self, rel: bytes, *, dots: bool = False) -> list[DirEntry]:
        """Directory entries sorted by name; with `dots`, '.' and '..' first."""
        path = self._path(rel)
        with guest_errors():
            listing = self.store.list(path)
        entries = [DirEntry(k.name.encode(), DT_DIR, fake_ino(k.path)) for k in listing.subkeys]
        entries += [DirEntry(v.name.encode(), DT_REG, fake_ino(f"{path}{SEP}{v.name}"))
                    for v in listing.values]
        entries.sort(key=lambda e: e.name)
        if dots:
            up = parent(path) if path else ROOT
            entries[:0] = [DirEntry(b".", DT_DIR, fake_ino(path)),
                           DirEntry(b"..", DT_DIR, fake_ino(up))]
        return entries

    def read_file(self, rel: bytes) -> bytes:
        path = self._path(rel)
        with guest_errors():
            node = self.store.node(path)
        if node.kind is NodeKind.KEY:
            raise GuestErrno(errno.EISDIR, f"{path!r} is a key")
        assert node.entry is not None
        return render(node.entry.value)

    def lookup(self, rel: bytes) -> Node | None:
        """The key or value at `rel`, None when there is none (ENOENT would be the answer)."""
        try:
            path = self._path(rel)
        except GuestErrno as e:
            if e.errno == errno.ENOENT:
                return None
            raise
        with guest_errors():
            return self._lookup(path)

    def listing(self, rel: bytes) -> Listing:
        """The subkeys and values (with their content) of the key at `rel`."""
        path = self._path(rel)
        with guest_errors():
            return self.store.list(path)

    # -- writing -----------------------------------------------------------------------------

    def write_file(self, rel: bytes, content: bytes, *, create: bool = True,
                   exclusive: bool = False, retype: bool = False) -> None:
        """Replace a value's whole content (O_CREAT: `create`, O_EXCL: `exclusive`).

        `retype` types the content as for a new value: the file was created by the very open
        that wrote it, so the empty value stored at its creation does not fix the type."""
        path = self._path(rel, creating=create)
        if path == ROOT:
            raise GuestErrno(errno.EISDIR, "the registry root is a directory")
        key, name = parent(path), basename(path)
        with guest_errors(), self.store.batch():
            node = self._lookup(path)
            if node is None:
                if not create:
                    raise GuestErrno(errno.ENOENT, f"no value {path!r}")
                self._require_dir(key)
                existing = None
            elif node.kind is NodeKind.KEY:
                raise GuestErrno(errno.EISDIR, f"{path!r} is a key")
            else:
                if exclusive:
                    raise GuestErrno(errno.EEXIST, f"{path!r} exists")
                existing = None if retype else node.entry.value.type  # type: ignore[union-attr]
            value = value_from_content(content, existing,
                                       fixed=wellknown.expected_type(key, name))
            self.store.set(key, name, value)

    def check_create(self, rel: bytes) -> None:
        """Raise the GuestErrno that creating an empty value at `rel` (O_CREAT|O_EXCL) would
        give, changing nothing: the tracer asks before the kernel creates the file."""
        try:
            with self.store.batch():
                self.write_file(rel, b"", exclusive=True)
                raise _DryRun
        except _DryRun:
            pass

    def mkdir(self, rel: bytes) -> None:
        path = self._path(rel, creating=True)
        if path == ROOT:
            raise GuestErrno(errno.EEXIST, "the registry root exists")
        with guest_errors(), self.store.batch():
            if self._lookup(path) is not None:
                raise GuestErrno(errno.EEXIST, f"{path!r} exists")
            if parent(path) != ROOT:
                self._require_dir(parent(path))
            self.store.create_key(path, exist_ok=False)

    def unlink(self, rel: bytes) -> None:
        path = self._path(rel)
        with guest_errors(), self.store.batch():
            node = self._lookup(path)
            if node is None:
                raise GuestErrno(errno.ENOENT, f"no value {path!r}")
            if node.kind is NodeKind.KEY:
                raise GuestErrno(errno.EISDIR, f"{path!r} is a key: use rmdir")
            self.store.delete_value(parent(path), basename(path))

    def rmdir(self, rel: bytes) -> None:
        path = self._path(rel)
        if path == ROOT:
            raise GuestErrno(errno.EBUSY, "the registry root cannot be removed")
        with guest_errors(), self.store.batch():
            node = self._lookup(path)
            if node is None:
                raise GuestErrno(errno.ENOENT, f"no key {path!r}")
            if node.kind is NodeKind.VALUE:
                raise GuestErrno(errno.ENOTDIR, f"{path!r} is a value")
            self.store.delete_key(path, recursive=False)

    def rename(self, src: bytes, dst: bytes) -> None:
        """Move a value (replacing a value at `dst`); keys cannot move (EXDEV)."""
        s, d = self._path(src), self._path(dst, creating=True)
        with guest_errors(), self.store.batch():
            snode = self._lookup(s)
            if snode is None:
                raise GuestErrno(errno.ENOENT, f"no key or value {s!r}")
            if s == d:
                return
            if snode.kind is NodeKind.KEY:
                raise GuestErrno(errno.EBUSY if s == ROOT else errno.EXDEV,
                                 "keys cannot be renamed; copy and delete them")
            dnode = self._lookup(d)
            if dnode is not None and dnode.kind is NodeKind.KEY:
                raise GuestErrno(errno.EISDIR, f"{d!r} is a key")
            self._require_dir(parent(d))
            self.store.move_value(parent(s), basename(s), parent(d), basename(d))
