"""The SQLite file: schema, corruption checks, bounded-retry transactions.

WAL journal, `synchronous=NORMAL`: a committed transaction survives the death of any process
(SIGKILL included) and the file stays consistent after a power loss (which may lose the last
commits, never half of one). Writes run in `BEGIN IMMEDIATE` transactions, so a writer takes
the write lock before reading and never has to upgrade a read lock (which SQLite cannot wait
for). Waiting for a lock is bounded: `busy_timeout` per attempt, a few attempts, then
`StoreBusy`. A file that is not an appvirt store, or is damaged, raises `StoreCorrupt` and is
never modified, deleted or recreated.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from .errors import StoreBusy, StoreCorrupt, StoreError, StoreIOError, StoreVersionError

T = TypeVar("T")

SCHEMA_VERSION = 1
APPLICATION_ID = 0x61767267  # "avrg", in the SQLite header: marks the file as an appvirt store
SQLITE_MAGIC = b"SQLite format 3\x00"

# w_* tables: the writable layer; b_* tables: the base layer (replaced when the policy changes).
# A w_values row with type 'deleted' is a tombstone. `parent` columns serve child listings.
SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE w_keys (path TEXT PRIMARY KEY, parent TEXT NOT NULL,
                     kind INTEGER NOT NULL CHECK (kind IN (0, 1, 2)),
                     mtime_ns INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX w_keys_by_parent ON w_keys (parent);
CREATE TABLE w_values (key TEXT NOT NULL, name TEXT NOT NULL,
                       type TEXT NOT NULL CHECK (type IN ('string', 'integer', 'binary', 'multi',
                                                          'deleted')),
                       data, mtime_ns INTEGER NOT NULL,
                       PRIMARY KEY (key, name)) WITHOUT ROWID;
CREATE TABLE b_keys (path TEXT PRIMARY KEY, parent TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX b_keys_by_parent ON b_keys (parent);
CREATE TABLE b_values (key TEXT NOT NULL, name TEXT NOT NULL,
                       type TEXT NOT NULL CHECK (type IN ('string', 'integer', 'binary', 'multi')),
                       data, PRIMARY KEY (key, name)) WITHOUT ROWID;
"""
TABLES = frozenset({"meta", "w_keys", "w_values", "b_keys", "b_values"})

# Primary result codes (sqlite3.h).
_BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB, _PERM = \
    5, 6, 8, 10, 11, 13, 14, 26, 3


def _code(e: sqlite3.Error) -> int:
    return (getattr(e, "sqlite_errorcode", None) or 0) & 0xFF


def is_busy(e: sqlite3.Error) -> bool:
    return _code(e) in (_BUSY, _LOCKED) or "database is locked" in str(e)


def translate(e: sqlite3.Error, path: Path) -> StoreError:
    """The StoreError for a SQLite failure on the store at `path`."""
    code = _code(e)
    if code in (_CORRUPT, _NOTADB) or "malformed" in str(e) or "not a database" in str(e):
        return StoreCorrupt(f"configuration store {path} is corrupt ({e}); it was left as is: "
                            "move it away to start afresh, or restore a backup")
    if code in (_READONLY, _CANTOPEN, _PERM, _IOERR, _FULL):
        return StoreIOError(f"configuration store {path}: {e}")
    if is_busy(e):
        return StoreBusy(f"configuration store {path} is locked by another process")
    return StoreError(f"configuration store {path}: {type(e).__name__}: {e}")


class Database:
    """One connection to a store file, with bounded-retry transactions."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 5.0, busy_attempts: int = 3) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self.busy_attempts = max(1, busy_attempts)
        self._depth = 0
        _check_header(path)
        try:
            self.conn = sqlite3.connect(str(path), timeout=busy_timeout_s, isolation_level=None)
        except sqlite3.Error as e:
            raise translate(e, path) from e
        try:
            self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            # One read transaction: the header and the table list come from the same snapshot,
            # even while another process is creating the store.
            made = self.run(lambda _conn: self._check_identity(), write=False)
            self._with_retry(self._set_wal)
            if not made:                # (a write transaction only to make it)
                self.run(self._init_schema, write=True)
            self.conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            self.conn.close()
            raise

    # -- opening -----------------------------------------------------------------------------

    def _check_identity(self) -> bool:
        """Read-only checks before anything is written to the file; whether it holds a
        store (False: a new, empty file)."""
        app_id = self.conn.execute("PRAGMA application_id").fetchone()[0]
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in self.conn.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table'")}
        if app_id == 0 and not tables:
            return False    # a new, empty file: _init_schema creates the store
        if app_id != APPLICATION_ID:
            raise StoreCorrupt(f"{self.path} is a SQLite database but not an appvirt "
                               "configuration store; it was left as is")
        if version > SCHEMA_VERSION:
            raise StoreVersionError(f"configuration store {self.path} has schema version "
                                    f"{version}, newer than this appvirt's {SCHEMA_VERSION}: "
                                    "use a newer appvirt")
        if version != SCHEMA_VERSION or not TABLES <= tables:
            raise StoreCorrupt(f"configuration store {self.path} has an unknown layout "
                               f"(schema version {version}, tables {sorted(tables)}); "
                               "it was left as is")
        return True

    def _set_wal(self) -> None:
        mode = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreIOError(f"configuration store {self.path}: cannot use WAL mode "
                               f"(journal mode is {mode}); is the file system a network one?")

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type='table'")}
        if tables:
            self._check_identity()  # created meanwhile by another process: vet it again
            return
        for stmt in SCHEMA.split(";"):
            if stmt.strip():
                conn.execute(stmt)
        now = time.time_ns()
        conn.executemany("INSERT INTO meta (name, value) VALUES (?, ?)",
                         [("created_ns", now), ("base_mtime_ns", now), ("root_mtime_ns", now),
                          ("base_digest", "")])
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self.conn.close()

    # -- transactions ------------------------------------------------------------------------

    def _with_retry(self, fn: Callable[[], T]) -> T:
        last: sqlite3.Error | None = None
        for _ in range(self.busy_attempts):
            try:
                return fn()
            except sqlite3.Error as e:
                if not is_busy(e):
                    raise translate(e, self.path) from e
                last = e
                import random       # here: only a busy store needs it, not every start
                time.sleep(random.uniform(0.01, 0.05))
        raise StoreBusy(
            f"configuration store {self.path} stayed locked by another process for "
            f"{self.busy_timeout_s * self.busy_attempts:g} s; try again") from last

    def run(self, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Run `fn` in one transaction, retried (bounded) when the database is busy.

        `fn` must only touch the database: it may run several times. Inside `batch()` it joins
        the open transaction instead.
        """
        if self._depth:
            try:
                return fn(self.conn)
            except sqlite3.Error as e:
                raise translate(e, self.path) from e

        def attempt() -> T:
            self.conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = fn(self.conn)
                self.conn.execute("COMMIT")
                return result
            except BaseException:
                self._rollback()
                raise
        return self._with_retry(attempt)

    @contextlib.contextmanager
    def batch(self) -> Iterator[sqlite3.Connection]:
        """One write transaction around several operations: all of them land, or none."""
        if self._depth:
            self._depth += 1
            try:
                yield self.conn
            finally:
                self._depth -= 1
            return
        self._with_retry(lambda: self.conn.execute("BEGIN IMMEDIATE"))
        self._depth = 1
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback()
            raise translate(e, self.path) from e
        except BaseException:
            self._rollback()
            raise
        finally:
            self._depth = 0

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")

    def generation(self) -> tuple[int, int]:
        """Differs whenever the file may have changed since the last call: a commit by another
        connection moves `data_version`, one by this connection `total_changes`."""
        try:
            version = self.conn.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error as e:
            raise translate(e, self.path) from e
        return version, self.conn.total_changes

    def integrity_problems(self) -> list[str]:
        """`PRAGMA integrity_check` messages; empty when the file is sound."""
        try:
            rows = [r[0] for r in self.conn.execute("PRAGMA integrity_check")]
        except sqlite3.Error as e:
            return [str(e)]
        return [] if rows == ["ok"] else rows

    def quick_check(self) -> None:
        try:
            rows = [r[0] for r in self.conn.execute("PRAGMA quick_check")]
        except sqlite3.Error as e:
            raise translate(e, self.path) from e
        if rows != ["ok"]:
            problems = [line.strip() for r in rows for line in str(r).splitlines()
                        if line.strip() and not line.startswith("*** in database")]
            first = problems[0] if problems else "integrity check failed"
            more = f" and {len(problems) - 1} more problems" if len(problems) > 1 else ""
            raise StoreCorrupt(f"configuration store {self.path} is corrupt ({first}{more}); "
                               "it was left as is: move it away to start afresh, or restore "
                               "a backup")


def _check_header(path: Path) -> None:
    """Refuse, before SQLite opens it, a file that is not SQLite at all."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise StoreIOError(f"cannot create configuration store {path}: "
                               "its directory does not exist") from None
        return
    except IsADirectoryError:
        raise StoreCorrupt(f"configuration store {path} is a directory") from None
    except OSError as e:
        raise StoreIOError(f"cannot read configuration store {path}: {e.strerror}") from e
    if head and head != SQLITE_MAGIC:
        raise StoreCorrupt(f"configuration store {path} is not a SQLite database; "
                           "it was left as is: move it away to start afresh")
