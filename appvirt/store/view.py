"""The merged view: how the writable layer and the base combine, written once.

Rules (docs/registry.md, "Layers"):
- A key is visible if the writable layer has it present (merged or opaque), or if it has no
  writable row and the base *reaches* it: the base has it, every ancestor lets the base show
  through (visible, not opaque), and no live writable value of the parent has the same name.
- A whiteout hides the key and everything below it. An opaque key hides all base content at
  and below it (its base values and base subkeys): its content is the writable layer's.
- A value is visible if the writable layer has it live (a tombstone hides it), else if the
  base shows through at its key, has it, and no present writable subkey has the same name.
  Writable entries thus win over same-named base entries of the other kind.

The logic reads through `LayerReader`, implemented over SQL (one key at a time) and over an
in-memory copy of all rows (whole-store walks: export, diff, snapshot).
"""

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from .errors import KeyNotFound, NotAKey
from .keys import ROOT, basename, join, parent, prefixes
from .layers import KeyInfo, KeyKind, ValueEntry, View
from .values import Value

Pair = tuple[str, str]
WValue = tuple[Value | None, int]   # (value or None for a tombstone, mtime_ns)


class WKey(NamedTuple):
    """A writable-layer key row."""

    kind: KeyKind
    mtime_ns: int

    @property
    def present(self) -> bool:
        return self.kind is not KeyKind.WHITEOUT


class LayerReader(Protocol):
    @property
    def base_mtime_ns(self) -> int: ...
    @property
    def root_mtime_ns(self) -> int: ...
    def w_keys(self, paths: Sequence[str]) -> dict[str, WKey]: ...
    def b_keys(self, paths: Sequence[str]) -> set[str]: ...
    def w_values_at(self, pairs: Sequence[Pair]) -> dict[Pair, WValue]: ...
    def b_values_at(self, pairs: Sequence[Pair]) -> dict[Pair, Value]: ...
    def w_children(self, key: str) -> dict[str, WKey]: ...
    def b_children(self, key: str) -> set[str]: ...
    def w_values(self, key: str) -> dict[str, WValue]: ...
    def b_values(self, key: str) -> dict[str, Value]: ...


class KeyState(NamedTuple):
    """How one key path resolves through the layers."""

    path: str
    row: WKey | None
    visible: bool
    base_reaches: bool      # the base has this key and shows through down to it
    base_shows: bool        # the base's values and subkeys of this key are visible
    value_here: ValueEntry | None = None  # a visible value of the parent bearing this name

    @property
    def opaque(self) -> bool:
        return self.row is not None and self.row.kind is KeyKind.OPAQUE


ROOT_STATE = KeyState(ROOT, None, True, True, True)


def walk(r: LayerReader, path: str) -> list[KeyState]:
    """States of `path`'s prefixes, outermost first, ending at the first invisible one."""
    ps = prefixes(path)
    if not ps:
        return [ROOT_STATE]
    pairs = [(parent(p), basename(p)) for p in ps]
    wk, bk = r.w_keys(ps), r.b_keys(ps)
    wv, bv = r.w_values_at(pairs), r.b_values_at(pairs)
    out: list[KeyState] = []
    shows = True
    for p, pair in zip(ps, pairs):
        st = _state(r, p, wk.get(p), shows, p in bk, wv.get(pair), bv.get(pair))
        out.append(st)
        if not st.visible:
            break
        shows = st.base_shows
    return out


def _state(r: LayerReader, path: str, row: WKey | None, parent_shows: bool, in_base: bool,
           w_value: WValue | None, b_value: Value | None) -> KeyState:
    live_w = w_value is not None and w_value[0] is not None
    present = row is not None and row.present
    reaches = parent_shows and in_base and not live_w
    visible = present or (row is None and reaches)
    shows = visible and reaches and not (row is not None and row.kind is KeyKind.OPAQUE)
    here: ValueEntry | None = None
    if live_w:
        here = ValueEntry(basename(path), w_value[0], w_value[1])  # type: ignore[index,arg-type]
    elif w_value is None and parent_shows and b_value is not None and not present:
        here = ValueEntry(basename(path), b_value, r.base_mtime_ns)
    return KeyState(path, row, visible, reaches, shows, here)


def resolve_key(r: LayerReader, path: str) -> KeyState:
    """The state of a visible key, or KeyNotFound / NotAKey."""
    last = walk(r, path)[-1]
    if last.visible:
        return last
    if last.value_here is not None:
        if last.path == path:
            raise NotAKey(f"{path!r} is a value, not a key")
        raise NotAKey(f"{path!r} is not a key ({last.path!r} is a value)")
    raise KeyNotFound(f"no key {path!r}")


def key_info(r: LayerReader, st: KeyState) -> KeyInfo:
    if st.path == ROOT:
        return KeyInfo(ROOT, False, r.root_mtime_ns)
    return KeyInfo(st.path, st.opaque, st.row.mtime_ns if st.row else r.base_mtime_ns)


def children(r: LayerReader, st: KeyState) -> tuple[dict[str, KeyState], dict[str, ValueEntry]]:
    """The visible subkeys (as states) and values of a visible key."""
    path = st.path
    wch, wvals = r.w_children(path), r.w_values(path)
    bch = r.b_children(path) if st.base_shows else set()
    bvals = r.b_values(path) if st.base_shows else {}
    values = {n: ValueEntry(n, v, mt) for n, (v, mt) in wvals.items() if v is not None}
    subkeys: dict[str, KeyState] = {}
    for n, row in wch.items():
        if row.present:
            subkeys[n] = _state(r, join(path, n), row, st.base_shows, n in bch,
                                wvals.get(n), bvals.get(n))
    for n in bch:
        if n not in wch and n not in values:
            subkeys[n] = KeyState(join(path, n), None, True, True, True)
    for n, v in bvals.items():
        if n not in wvals and not (n in wch and wch[n].present):
            values[n] = ValueEntry(n, v, r.base_mtime_ns)
    return subkeys, values


def get_value(r: LayerReader, st: KeyState, name: str) -> ValueEntry | None:
    """The visible value `name` of a visible key, or None."""
    pair = (st.path, name)
    w = r.w_values_at([pair]).get(pair)
    if w is not None:
        return None if w[0] is None else ValueEntry(name, w[0], w[1])
    if not st.base_shows:
        return None
    b = r.b_values_at([pair]).get(pair)
    if b is None:
        return None
    sub = join(st.path, name)
    row = r.w_keys([sub]).get(sub)
    return None if row is not None and row.present else ValueEntry(name, b, r.base_mtime_ns)


def full_view(r: LayerReader) -> View:
    """Every visible key and value."""
    keys: dict[str, bool] = {}
    values: dict[tuple[str, str], Value] = {}
    stack = [ROOT_STATE]
    while stack:
        st = stack.pop()
        subs, vals = children(r, st)
        for n, e in vals.items():
            values[(st.path, n)] = e.value
        for sub in subs.values():
            keys[sub.path] = sub.opaque
            stack.append(sub)
    return View(keys, values)
