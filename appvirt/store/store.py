"""The configuration store of one application: the public API.

    store = Store.open(app_dir("myapp"), base=config.base)
    store.set("app/settings", "theme", Value.string("dark"))
    store.get("app/settings", "theme")          # Value(STRING, 'dark')

Every method is one transaction (or joins the one `batch()` opened). A Store is one SQLite
connection: use it from one thread, and open a new one in a child process after fork().
"""

from __future__ import annotations

import builtins
import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ..state import AppDir
from .db import Database
from .errors import (IsAKey, KeyExists, KeyNotEmpty, KeyNotFound, NotAKey, ValueNotFound,
                     WrongType)
from .keys import DEFAULT_LIMITS, ROOT, Limits, check_key, check_name, join, parent
from .layers import BaseLayer, KeyInfo, KeyKind, Listing, Node, ValueEntry, View, check_value
from .ops import check_value_count, materialize, node_at, subkey_visible
from .rows import SqlLayers
from .values import Value, ValueType
from .view import children, full_view, get_value, key_info, resolve_key, walk

if TYPE_CHECKING:
    # Diffs, exports and imports (`appvirt reg`) import their modules when used: the tracer,
    # which opens a store at every start, never needs them.
    from .diff import DiffEntry
    from .textformat import Section
    from .transfer import ImportSummary

T = TypeVar("T")


class Store:
    """A layered, typed, hierarchical key/value store in one SQLite file."""

    def __init__(self, db: Database, limits: Limits) -> None:
        self._db = db
        self.limits = limits

    @classmethod
    def open(cls, location: AppDir | Path | str, *, base: BaseLayer | None = None,
             limits: Limits = DEFAULT_LIMITS, busy_timeout_s: float = 5.0,
             busy_attempts: int = 3, verify: bool = True) -> Store:
        """Open (creating if absent) the store of an app directory.

        `base`, when given, replaces the remembered base layer (the policy's `registry:`
        section); None keeps the one remembered from the last open with a base. `verify` runs
        SQLite's quick_check, so that a damaged file is reported now, not mid-operation.
        """
        if not isinstance(location, AppDir):
            p = Path(location)
            location = AppDir(p.name, p)
        db = Database(location.store, busy_timeout_s=busy_timeout_s, busy_attempts=busy_attempts)
        try:
            if verify:
                db.quick_check()
            store = cls(db, limits)
            if base is not None:
                store.set_base(base)
        except BaseException:
            db.close()
            raise
        return store

    @property
    def path(self) -> Path:
        return self._db.path

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def batch(self) -> contextlib.AbstractContextManager[object]:
        """Group operations into one atomic transaction: `with store.batch(): ...`."""
        return self._db.batch()

    def _read(self, fn: Callable[[SqlLayers], T]) -> T:
        return self._db.run(lambda c: fn(SqlLayers(c)), write=False)

    def _write(self, fn: Callable[[SqlLayers, int], T]) -> T:
        return self._db.run(lambda c: fn(SqlLayers(c), time.time_ns()), write=True)

    # -- reading -----------------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        check_key(key, self.limits)
        return self._read(lambda L: walk(L, key)[-1].visible)

    def key_info(self, key: str) -> KeyInfo:
        check_key(key, self.limits)
        return self._read(lambda L: key_info(L, resolve_key(L, key)))

    def get_entry(self, key: str, name: str) -> ValueEntry:
        """The value `name` of `key` with its last-write time, or KeyNotFound/ValueNotFound."""
        check_key(key, self.limits)
        check_name(name, self.limits)

        def op(L: SqlLayers) -> ValueEntry:
            st = resolve_key(L, key)
            entry = get_value(L, st, name)
            if entry is None:
                if subkey_visible(L, st, name):
                    raise IsAKey(f"{join(key, name)!r} is a key, not a value")
                raise ValueNotFound(f"no value {name!r} in key {key!r}")
            return entry
        return self._read(op)

    def get(self, key: str, name: str) -> Value:
        return self.get_entry(key, name).value

    def lookup(self, key: str, name: str) -> Value | None:
        """The value, or None when the key or the value does not exist."""
        try:
            return self.get(key, name)
        except (KeyNotFound, ValueNotFound, NotAKey, IsAKey):
            return None

    def get_typed(self, key: str, name: str, vtype: ValueType) -> Value | None:
        """Like lookup, but WrongType when the value exists with another type."""
        v = self.lookup(key, name)
        if v is not None and v.type is not vtype:
            raise WrongType(f"{join(key, name)} is a {v.type.value} value, "
                            f"expected {vtype.value}")
        return v

    def get_int(self, key: str, name: str, default: int | None = None) -> int | None:
        v = self.get_typed(key, name, ValueType.INTEGER)
        return default if v is None else v.data  # type: ignore[return-value]

    def get_str(self, key: str, name: str, default: str | None = None) -> str | None:
        v = self.get_typed(key, name, ValueType.STRING)
        return default if v is None else v.data  # type: ignore[return-value]

    def list(self, key: str = ROOT) -> Listing:
        """Subkeys and values of a key, merged across layers, sorted by name."""
        check_key(key, self.limits)

        def op(L: SqlLayers) -> Listing:
            st = resolve_key(L, key)
            subs, vals = children(L, st)
            return Listing(key_info(L, st),
                           tuple(key_info(L, subs[n]) for n in sorted(subs)),
                           tuple(vals[n] for n in sorted(vals)))
        return self._read(op)

    def node(self, path: str) -> Node:
        """What a full path names: a key, or a value of its parent key ('app/settings/theme')."""
        check_key(path, self.limits)
        return self._read(lambda L: node_at(L, path))

    def view(self) -> View:
        """Everything visible (the merged view), in one consistent snapshot."""
        return full_view(self._read(lambda L: L.load()))

    def base(self) -> BaseLayer:
        """The remembered base layer."""
        return self._read(lambda L: L.load()).base()

    def diff(self) -> builtins.list[DiffEntry]:
        """The app's changes against the base layer."""
        from .diff import diff_views
        mem = self._read(lambda L: L.load())
        return diff_views(mem.base().view(), full_view(mem))

    def generation(self) -> tuple[int, int]:
        """A token that changes whenever the store may have changed (by anyone): cheap, for
        callers that cache what they read."""
        return self._db.generation()

    def check(self) -> builtins.list[str]:
        """Problems found by `PRAGMA integrity_check`; empty when the file is sound."""
        return self._db.integrity_problems()

    # -- writing -----------------------------------------------------------------------------

    def set(self, key: str, name: str, value: Value) -> None:
        """Write a value, creating `key` and its ancestors as needed."""
        check_key(key, self.limits, allow_root=False)
        check_name(name, self.limits)
        check_value(key, name, value, self.limits)

        def op(L: SqlLayers, now: int) -> None:
            st = materialize(L, key, now)
            if subkey_visible(L, st, name):
                raise IsAKey(f"{join(key, name)!r} is a key: delete it before storing a value "
                             f"named {name!r}")
            if get_value(L, st, name) is None:
                check_value_count(L, st, self.limits, adding=1)
            L.put_value(key, name, value, now)
            L.touch(key, now)
        self._write(op)

    def create_key(self, key: str, *, exist_ok: bool = True) -> bool:
        """Create a key and its ancestors; False if it already existed."""
        check_key(key, self.limits, allow_root=False)

        def op(L: SqlLayers, now: int) -> bool:
            last = walk(L, key)[-1]
            if last.visible and last.path == key:
                if exist_ok:
                    return False
                raise KeyExists(f"key {key!r} already exists")
            materialize(L, key, now)
            return True
        return self._write(op)

    def delete_value(self, key: str, name: str) -> None:
        check_key(key, self.limits, allow_root=False)
        check_name(name, self.limits)

        def op(L: SqlLayers, now: int) -> None:
            st = resolve_key(L, key)
            if get_value(L, st, name) is None:
                if subkey_visible(L, st, name):
                    raise IsAKey(f"{join(key, name)!r} is a key, not a value")
                raise ValueNotFound(f"no value {name!r} in key {key!r}")
            materialize(L, key, now)
            if st.base_shows and L.b_values_at([(key, name)]):
                L.put_value(key, name, None, now)   # tombstone over the base value
            else:
                L.drop_value(key, name)
            L.touch(key, now)
        self._write(op)

    def delete_key(self, key: str, *, recursive: bool = False) -> None:
        """Delete a key; without `recursive` it must have no subkeys and no values."""
        check_key(key, self.limits, allow_root=False)

        def op(L: SqlLayers, now: int) -> None:
            st = resolve_key(L, key)
            if not recursive:
                subs, vals = children(L, st)
                if subs or vals:
                    raise KeyNotEmpty(f"key {key!r} is not empty ({len(subs)} subkeys, "
                                      f"{len(vals)} values): delete it recursively (rm -r)")
            materialize(L, parent(key), now)
            L.drop_subtree(key)
            if st.base_reaches:
                L.put_key(key, KeyKind.WHITEOUT, now)   # hide the base key and its subtree
            L.touch(parent(key), now)
        self._write(op)

    def mark_opaque(self, key: str, opaque: bool = True) -> bool:
        """Make a key opaque (no base content at or below it shows) or merged; True if changed."""
        check_key(key, self.limits, allow_root=False)

        def op(L: SqlLayers, now: int) -> bool:
            st = resolve_key(L, key)
            if st.opaque == opaque:
                return False
            materialize(L, key, now)
            L.put_key(key, KeyKind.OPAQUE if opaque else KeyKind.MERGED, now)
            return True
        return self._write(op)

    def move_value(self, src_key: str, src_name: str, dst_key: str, dst_name: str) -> None:
        """Rename a value atomically (`mv a/tmp a/name` inside the sandbox)."""
        if (src_key, src_name) == (dst_key, dst_name):
            self.get(src_key, src_name)
            return
        with self.batch():
            value = self.get(src_key, src_name)
            self.set(dst_key, dst_name, value)
            self.delete_value(src_key, src_name)

    def set_base(self, base: BaseLayer) -> bool:
        """Replace the remembered base layer; False when it was already this one (seen
        without a write transaction, as at nearly every run's start)."""
        if self._read(lambda L: L.meta("base_digest")) == base.digest():
            return False

        def op(L: SqlLayers, now: int) -> bool:
            if L.meta("base_digest") == base.digest():
                return False
            L.replace_base(base, now)
            return True
        return self._write(op)

    # -- export and import -------------------------------------------------------------------

    def export_sections(self, *, merged: bool = False) -> builtins.list[Section]:
        """The writable layer (with deletion markers), or with `merged` the whole view."""
        from .transfer import merged_sections, writable_sections
        mem = self._read(lambda L: L.load())
        return merged_sections(mem) if merged else writable_sections(mem)

    def export_text(self, *, merged: bool = False) -> str:
        from . import textformat
        return textformat.format_sections(self.export_sections(merged=merged),
                                          layer="merged" if merged else "writable")

    def export_json(self, *, merged: bool = False) -> dict[str, object]:
        from . import textformat
        return textformat.sections_to_json(self.export_sections(merged=merged),
                                           layer="merged" if merged else "writable")

    def import_text(self, text: str, *, replace: bool = False, source: str = "") -> ImportSummary:
        """Apply an export to the writable layer in one transaction (all or nothing).

        Sections are laid onto the writable layer as they are, markers included, so importing
        an export into an app with the same base reproduces the store exactly. `replace`
        empties the writable layer first.
        """
        from . import textformat
        from .transfer import apply_sections
        sections = textformat.parse(text, source=source, limits=self.limits)
        for s in sections:
            for name, value in s.values:
                if value is not None:
                    check_value(s.path, name, value, self.limits)

        return self._write(lambda L, now: apply_sections(L, sections, now, replace=replace,
                                                         limits=self.limits))


def iter_keys(store: Store, key: str = ROOT) -> Iterator[Listing]:
    """Listings of `key` and of every key below it, depth first (for `ls -r`)."""
    stack = [key]
    while stack:
        listing = store.list(stack.pop())
        yield listing
        stack.extend(k.path for k in reversed(listing.subkeys))
