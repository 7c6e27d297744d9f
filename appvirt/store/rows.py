"""Row access for the two layers: SQL (one transaction) and an in-memory copy of all rows.

Both implement `view.LayerReader`; `SqlLayers` also has the raw writes the store composes.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Sequence

from .keys import ROOT, basename, parent, subtree_range
from .layers import BaseLayer, KeyKind
from .values import Value, ValueType
from .view import Pair, WKey, WValue

TOMBSTONE = "deleted"


def encode(value: Value) -> tuple[str, object]:
    """(type column, data column); multi values are a JSON array of strings."""
    d = value.data
    if value.type is ValueType.MULTI:
        d = json.dumps(list(d), ensure_ascii=False)  # type: ignore[arg-type]
    return value.type.value, d


def decode(type_: str, data: object) -> Value:
    t = ValueType(type_)
    if t is ValueType.MULTI:
        return Value(t, tuple(json.loads(data)))  # type: ignore[arg-type]
    return Value(t, data)  # type: ignore[arg-type]


def _w_value(type_: str, data: object, mtime: int) -> WValue:
    return (None if type_ == TOMBSTONE else decode(type_, data), mtime)


def _marks(n: int) -> str:
    return ",".join("?" * n)


class SqlLayers:
    """Layer rows through one connection, inside a transaction run by `Database.run`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.c = conn
        self._meta: dict[str, object] | None = None

    def meta(self, name: str) -> object:
        if self._meta is None:
            self._meta = dict(self.c.execute("SELECT name, value FROM meta"))
        return self._meta.get(name)

    def set_meta(self, name: str, value: object) -> None:
        self.c.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))
        if self._meta is not None:
            self._meta[name] = value

    @property
    def base_mtime_ns(self) -> int:
        return int(str(self.meta("base_mtime_ns")))

    @property
    def root_mtime_ns(self) -> int:
        return int(str(self.meta("root_mtime_ns")))

    # -- reads -------------------------------------------------------------------------------

    def w_keys(self, paths: Sequence[str]) -> dict[str, WKey]:
        rows = self.c.execute(f"SELECT path, kind, mtime_ns FROM w_keys WHERE path IN "
                              f"({_marks(len(paths))})", list(paths))
        return {p: WKey(KeyKind(k), m) for p, k, m in rows}

    def b_keys(self, paths: Sequence[str]) -> set[str]:
        rows = self.c.execute(f"SELECT path FROM b_keys WHERE path IN ({_marks(len(paths))})",
                              list(paths))
        return {p for (p,) in rows}

    def w_values_at(self, pairs: Sequence[Pair]) -> dict[Pair, WValue]:
        out: dict[Pair, WValue] = {}
        for key, name in pairs:
            row = self.c.execute("SELECT type, data, mtime_ns FROM w_values "
                                 "WHERE key = ? AND name = ?", (key, name)).fetchone()
            if row is not None:
                out[(key, name)] = _w_value(*row)
        return out

    def b_values_at(self, pairs: Sequence[Pair]) -> dict[Pair, Value]:
        out: dict[Pair, Value] = {}
        for key, name in pairs:
            row = self.c.execute("SELECT type, data FROM b_values WHERE key = ? AND name = ?",
                                 (key, name)).fetchone()
            if row is not None:
                out[(key, name)] = decode(*row)
        return out

    def w_children(self, key: str) -> dict[str, WKey]:
        rows = self.c.execute("SELECT path, kind, mtime_ns FROM w_keys WHERE parent = ?", (key,))
        return {basename(p): WKey(KeyKind(k), m) for p, k, m in rows}

    def b_children(self, key: str) -> set[str]:
        return {basename(p) for (p,) in
                self.c.execute("SELECT path FROM b_keys WHERE parent = ?", (key,))}

    def w_values(self, key: str) -> dict[str, WValue]:
        rows = self.c.execute("SELECT name, type, data, mtime_ns FROM w_values WHERE key = ?",
                              (key,))
        return {n: _w_value(t, d, m) for n, t, d, m in rows}

    def b_values(self, key: str) -> dict[str, Value]:
        rows = self.c.execute("SELECT name, type, data FROM b_values WHERE key = ?", (key,))
        return {n: decode(t, d) for n, t, d in rows}

    def count_values(self, key: str) -> tuple[int, int]:
        """(live writable values, base values) of a key, before layering."""
        live = self.c.execute("SELECT count(*) FROM w_values WHERE key = ? AND type != ?",
                              (key, TOMBSTONE)).fetchone()[0]
        base = self.c.execute("SELECT count(*) FROM b_values WHERE key = ?", (key,)).fetchone()[0]
        return int(live), int(base)

    # -- raw writes (no layering rules: the store applies those) ------------------------------

    def put_key(self, path: str, kind: KeyKind, mtime_ns: int) -> None:
        self.c.execute("INSERT OR REPLACE INTO w_keys (path, parent, kind, mtime_ns) "
                       "VALUES (?, ?, ?, ?)", (path, parent(path), int(kind), mtime_ns))

    def touch(self, path: str, mtime_ns: int) -> None:
        """Record a write to a key (the root's time lives in meta)."""
        if path == ROOT:
            self.set_meta("root_mtime_ns", mtime_ns)
        else:
            self.c.execute("UPDATE w_keys SET mtime_ns = ? WHERE path = ?", (mtime_ns, path))

    def put_value(self, key: str, name: str, value: Value | None, mtime_ns: int) -> None:
        """Write a value, or a tombstone when `value` is None."""
        t, d = (TOMBSTONE, None) if value is None else encode(value)
        self.c.execute("INSERT OR REPLACE INTO w_values (key, name, type, data, mtime_ns) "
                       "VALUES (?, ?, ?, ?, ?)", (key, name, t, d, mtime_ns))

    def drop_value(self, key: str, name: str) -> None:
        self.c.execute("DELETE FROM w_values WHERE key = ? AND name = ?", (key, name))

    def drop_subtree(self, path: str) -> None:
        """Remove every writable row at and below `path` (the whole layer for the root)."""
        if path == ROOT:
            self.c.execute("DELETE FROM w_keys")
            self.c.execute("DELETE FROM w_values")
            return
        lo, hi = subtree_range(path)
        self.c.execute("DELETE FROM w_keys WHERE path = ? OR (path >= ? AND path < ?)",
                       (path, lo, hi))
        self.c.execute("DELETE FROM w_values WHERE key = ? OR (key >= ? AND key < ?)",
                       (path, lo, hi))

    def replace_base(self, base: BaseLayer, mtime_ns: int) -> None:
        self.c.execute("DELETE FROM b_keys")
        self.c.execute("DELETE FROM b_values")
        self.c.executemany("INSERT INTO b_keys (path, parent) VALUES (?, ?)",
                           [(p, parent(p)) for p in base.keys])
        self.c.executemany("INSERT INTO b_values (key, name, type, data) VALUES (?, ?, ?, ?)",
                           [(p, n, *encode(v)) for p, vals in base.keys.items()
                            for n, v in vals.items()])
        self.set_meta("base_mtime_ns", mtime_ns)
        self.set_meta("base_digest", base.digest())

    def load(self) -> MemoryLayers:
        """An in-memory copy of every row, for whole-store walks."""
        return MemoryLayers(
            self.base_mtime_ns, self.root_mtime_ns,
            ((p, WKey(KeyKind(k), m)) for p, k, m in
             self.c.execute("SELECT path, kind, mtime_ns FROM w_keys")),
            (((k, n), _w_value(t, d, m)) for k, n, t, d, m in
             self.c.execute("SELECT key, name, type, data, mtime_ns FROM w_values")),
            (p for (p,) in self.c.execute("SELECT path FROM b_keys")),
            (((k, n), decode(t, d)) for k, n, t, d in
             self.c.execute("SELECT key, name, type, data FROM b_values")))


class MemoryLayers:
    """All rows of both layers in dictionaries (a consistent snapshot)."""

    def __init__(self, base_mtime_ns: int, root_mtime_ns: int,
                 w_keys: Iterable[tuple[str, WKey]], w_values: Iterable[tuple[Pair, WValue]],
                 b_keys: Iterable[str], b_values: Iterable[tuple[Pair, Value]]) -> None:
        self.base_mtime_ns, self.root_mtime_ns = base_mtime_ns, root_mtime_ns
        self.wk = dict(w_keys)
        self.wv = dict(w_values)
        self.bk = set(b_keys)
        self.bv = dict(b_values)
        self._wk_by_parent: dict[str, dict[str, WKey]] = defaultdict(dict)
        for p, row in self.wk.items():
            self._wk_by_parent[parent(p)][basename(p)] = row
        self._bk_by_parent: dict[str, set[str]] = defaultdict(set)
        for p in self.bk:
            self._bk_by_parent[parent(p)].add(basename(p))
        self._wv_by_key: dict[str, dict[str, WValue]] = defaultdict(dict)
        for (k, n), wvalue in self.wv.items():
            self._wv_by_key[k][n] = wvalue
        self._bv_by_key: dict[str, dict[str, Value]] = defaultdict(dict)
        for (k, n), bvalue in self.bv.items():
            self._bv_by_key[k][n] = bvalue

    def w_keys(self, paths: Sequence[str]) -> dict[str, WKey]:
        return {p: self.wk[p] for p in paths if p in self.wk}

    def b_keys(self, paths: Sequence[str]) -> set[str]:
        return {p for p in paths if p in self.bk}

    def w_values_at(self, pairs: Sequence[Pair]) -> dict[Pair, WValue]:
        return {q: self.wv[q] for q in pairs if q in self.wv}

    def b_values_at(self, pairs: Sequence[Pair]) -> dict[Pair, Value]:
        return {q: self.bv[q] for q in pairs if q in self.bv}

    def w_children(self, key: str) -> dict[str, WKey]:
        return dict(self._wk_by_parent.get(key, {}))

    def b_children(self, key: str) -> set[str]:
        return set(self._bk_by_parent.get(key, set()))

    def w_values(self, key: str) -> dict[str, WValue]:
        return dict(self._wv_by_key.get(key, {}))

    def b_values(self, key: str) -> dict[str, Value]:
        return dict(self._bv_by_key.get(key, {}))

    def base(self) -> BaseLayer:
        keys: dict[str, dict[str, Value]] = {p: {} for p in self.bk}
        for (k, n), v in self.bv.items():
            keys.setdefault(k, {})[n] = v
        return BaseLayer.build(keys)
