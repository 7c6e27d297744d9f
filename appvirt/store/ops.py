"""Layer-aware row operations inside one write transaction (the store's building blocks)."""

from __future__ import annotations

from .errors import KeyNotFound, LimitExceeded, LimitKind, NotAKey
from .keys import ROOT, Limits, join, parent, prefixes
from .layers import KeyKind, Node, NodeKind
from .rows import SqlLayers
from .view import KeyState, WKey, children, key_info, walk


def materialize(L: SqlLayers, key: str, now: int) -> KeyState:
    """Make `key` and its ancestors present in the writable layer, creating missing keys.

    A visible base key is copied up (its time unchanged); a missing key is created merged,
    except over a whiteout, where it becomes opaque: deleted-then-recreated starts empty.
    """
    if key == ROOT:
        return walk(L, ROOT)[0]
    states = walk(L, key)
    for st in states:
        if not st.visible:
            break
        if st.row is None:
            L.put_key(st.path, KeyKind.MERGED, L.base_mtime_ns)
    last = states[-1]
    if last.visible:
        row = last.row or WKey(KeyKind.MERGED, L.base_mtime_ns)
        return KeyState(key, row, True, last.base_reaches, last.base_shows)
    if last.value_here is not None:
        raise NotAKey(f"cannot create key {key!r}: {last.path!r} is a value")
    paths = prefixes(key)[len(states) - 1:]
    first_kind = (KeyKind.OPAQUE if last.row is not None and last.row.kind is KeyKind.WHITEOUT
                  else KeyKind.MERGED)
    for i, p in enumerate(paths):
        L.put_key(p, first_kind if i == 0 else KeyKind.MERGED, now)
    L.touch(parent(last.path), now)
    kind = first_kind if len(paths) == 1 else KeyKind.MERGED
    return KeyState(key, WKey(kind, now), True, False, False)


def subkey_visible(L: SqlLayers, st: KeyState, name: str) -> bool:
    """Is `name` a visible subkey of the visible key `st`?"""
    sub = join(st.path, name)
    row = L.w_keys([sub]).get(sub)
    if row is not None:
        return row.present
    if not st.base_shows or not L.b_keys([sub]):
        return False
    w = L.w_values_at([(st.path, name)]).get((st.path, name))
    return w is None or w[0] is None


def check_value_count(L: SqlLayers, st: KeyState, limits: Limits, *, adding: int) -> None:
    """LimitExceeded if the key would hold more values than allowed once `adding` are added."""
    live, base = L.count_values(st.path)
    if live + (base if st.base_shows else 0) + adding <= limits.max_values_per_key:
        return  # a cheap upper bound; the exact count below merges the layers
    count = len(children(L, st)[1])
    if count + adding > limits.max_values_per_key:
        raise LimitExceeded(LimitKind.VALUE_COUNT,
                            f"key {st.path!r} would hold {count + adding} values "
                            f"(limit {limits.max_values_per_key})")


def node_at(L: SqlLayers, path: str) -> Node:
    """What a full path names: a key, or a value of its parent key."""
    states = walk(L, path)
    last = states[-1]
    if last.visible:
        return Node(NodeKind.KEY, path, key=key_info(L, last))
    if last.value_here is not None:
        if last.path == path:
            return Node(NodeKind.VALUE, path, entry=last.value_here)
        raise NotAKey(f"{path!r}: {last.path!r} is a value, not a key")
    raise KeyNotFound(f"no key or value {path!r}")
