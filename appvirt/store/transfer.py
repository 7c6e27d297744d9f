"""Export and import: the sections of the text format, taken from or laid onto the layers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import IsAKey, NotAKey
from .keys import ROOT, Limits, basename, join, parent, prefixes, sort_key
from .layers import KeyKind
from .ops import check_value_count
from .rows import MemoryLayers, SqlLayers
from .textformat import Section
from .values import Value
from .view import full_view, walk


@dataclass(frozen=True, slots=True)
class ImportSummary:
    keys: int
    values: int
    deleted_keys: int
    deleted_values: int


def apply_sections(L: SqlLayers, sections: Sequence[Section], now: int, *, replace: bool,
                   limits: Limits) -> ImportSummary:
    """Lay sections onto the writable layer as they are, markers included (raw, so that an
    export imported over the same base reproduces the layer exactly)."""
    if replace:
        L.drop_subtree(ROOT)
        L.touch(ROOT, now)
    counts = [0, 0, 0, 0]
    touched: set[str] = set()
    for s in sections:
        if s.deleted:
            ensure_rows(L, parent(s.path), now)
            L.drop_subtree(s.path)
            L.put_key(s.path, KeyKind.WHITEOUT, now)
            counts[2] += 1
            continue
        ensure_rows(L, s.path, now)
        if s.opaque is not None:
            L.put_key(s.path, KeyKind.OPAQUE if s.opaque else KeyKind.MERGED, now)
        counts[0] += 1
        for name, value in s.values:
            sub = join(s.path, name)
            row = L.w_keys([sub]).get(sub)
            if row is not None and row.present:
                raise IsAKey(f"import: {sub!r} is a key and cannot also be a value")
            L.put_value(s.path, name, value, now)
            counts[1 if value is not None else 3] += 1
        L.touch(s.path, now)
        touched.add(s.path)
    for path in touched:
        st = walk(L, path)[-1]
        if st.visible:
            check_value_count(L, st, limits, adding=0)
    return ImportSummary(*counts)


def ensure_rows(L: SqlLayers, key: str, now: int) -> None:
    """Import's raw counterpart of ops.materialize: present rows for `key` and its ancestors."""
    for p in prefixes(key):
        pair = (parent(p), basename(p))
        w = L.w_values_at([pair]).get(pair)
        if w is not None and w[0] is not None:
            raise NotAKey(f"import: {p!r} is a value and cannot also be a key")
        row = L.w_keys([p]).get(p)
        if row is None:
            L.put_key(p, KeyKind.MERGED, now)
        elif row.kind is KeyKind.WHITEOUT:
            L.put_key(p, KeyKind.OPAQUE, now)


def writable_sections(mem: MemoryLayers) -> list[Section]:
    out = []
    for p in sorted(mem.wk, key=sort_key):
        row = mem.wk[p]
        if row.kind is KeyKind.WHITEOUT:
            out.append(Section(p, deleted=True))
            continue
        vals = mem.w_values(p)
        out.append(Section(p, opaque=row.kind is KeyKind.OPAQUE or None,
                           values=tuple((n, vals[n][0]) for n in sorted(vals))))
    return out


def merged_sections(mem: MemoryLayers) -> list[Section]:
    view = full_view(mem)
    by_key: dict[str, list[tuple[str, Value | None]]] = {k: [] for k in view.keys}
    for (k, n), v in view.values.items():
        by_key[k].append((n, v))
    return [Section(k, opaque=view.keys[k] or None, values=tuple(sorted(by_key[k])))
            for k in sorted(view.keys, key=sort_key)]
