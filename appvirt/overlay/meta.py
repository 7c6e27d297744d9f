"""What an upper-layer file cannot carry itself: the owner a non-root appvirt could not give
it, and the device a device node stands for (appvirt never makes real device nodes).

Records are keyed by the upper file's (st_dev, st_ino), as fakeroot keys its database, so
they follow renames and hard links for free. They live in the app's meta.sqlite; the
overlay drops a record when it removes the file's last link, and opening the table drops
records whose inode is no longer in the upper layer (a file removed behind its back).
"""

import contextlib
import os
import sqlite3
import stat
from pathlib import Path
from typing import NamedTuple

from ..core.kind import kind_hash, other_kind, same_kind
from ..errors import StateDirError

_SCHEMA = """CREATE TABLE IF NOT EXISTS meta (
    dev INTEGER NOT NULL, ino INTEGER NOT NULL,
    uid INTEGER, gid INTEGER, kind INTEGER, rdev INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (dev, ino))"""


class FileMeta(NamedTuple):
    uid: int | None = None          # None: the file's own
    gid: int | None = None
    kind: int | None = None         # stat.S_IFCHR / S_IFBLK for a device stand-in
    rdev: int = 0

    def apply(self, st_mode: int, st_uid: int, st_gid: int, st_rdev: int
              ) -> tuple[int, int, int, int]:
        """The (mode, uid, gid, rdev) the program must see for a file the host shows so."""
        mode = st_mode if self.kind is None else self.kind | stat.S_IMODE(st_mode)
        return (mode, st_uid if self.uid is None else self.uid,
                st_gid if self.gid is None else self.gid,
                st_rdev if self.kind is None else self.rdev)

    __eq__, __ne__, __hash__ = same_kind, other_kind, kind_hash


def _inodes(root: bytes) -> set[tuple[int, int]]:
    found = set()
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(top, name))
                found.add((st.st_dev, st.st_ino))
    return found


class MetaTable:
    """The records of one app, cached in memory; every change is written at once."""

    def __init__(self, path: Path | None, upper_root: bytes | None = None) -> None:
        self._db: sqlite3.Connection | None = None
        self.records: dict[tuple[int, int], FileMeta] = {}
        if path is None:
            return                   # in memory only (tests)
        try:
            self._db = sqlite3.connect(os.fspath(path), isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
            for dev, ino, uid, gid, kind, rdev in self._db.execute("SELECT * FROM meta"):
                self.records[(dev, ino)] = FileMeta(uid, gid, kind, rdev)
        except sqlite3.Error as e:
            raise StateDirError(f"cannot open the overlay's metadata {path}: {e}") from None
        if self.records and upper_root is not None:
            live = _inodes(upper_root)
            for key in [k for k in self.records if k not in live]:
                self._delete(key)

    def __bool__(self) -> bool:
        return bool(self.records)

    def get(self, dev: int, ino: int) -> FileMeta | None:
        return self.records.get((dev, ino))

    def of(self, st: os.stat_result) -> FileMeta | None:
        return self.records.get((st.st_dev, st.st_ino))

    def set(self, st: os.stat_result, meta: FileMeta) -> None:
        key = (st.st_dev, st.st_ino)
        old = self.records.get(key)
        if old is not None:           # a chown keeps the device, a new device keeps no owner
            meta = FileMeta(meta.uid if meta.uid is not None else old.uid,
                            meta.gid if meta.gid is not None else old.gid,
                            meta.kind if meta.kind is not None else old.kind,
                            meta.rdev if meta.kind is not None else old.rdev)
        self.records[key] = meta
        if self._db is not None:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?, ?, ?, ?, ?)",
                             (*key, meta.uid, meta.gid, meta.kind, meta.rdev))

    def removing(self, host: bytes) -> None:
        """The overlay is about to remove a name of host: forget its last link's record."""
        if not self.records:
            return
        with contextlib.suppress(OSError):
            st = os.lstat(host)
            if st.st_nlink <= 1 or stat.S_ISDIR(st.st_mode):
                self._delete((st.st_dev, st.st_ino))

    def forget_tree(self, host_dir: bytes) -> None:
        """A directory tree is about to go: forget the records of everything in it."""
        if not self.records:
            return
        for top, dirs, files in os.walk(host_dir):
            for name in dirs + files:
                self.removing(os.path.join(top, name))
        self.removing(host_dir)

    def _delete(self, key: tuple[int, int]) -> None:
        if self.records.pop(key, None) is not None and self._db is not None:
            self._db.execute("DELETE FROM meta WHERE dev = ? AND ino = ?", key)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
