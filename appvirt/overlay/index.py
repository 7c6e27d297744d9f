"""The in-memory index of the upper layer, so that lookups are dict operations.

It holds, by guest path: the objects present in the upper layer (with their S_IFMT), the
whiteouts and the opaque directories. It is built by walking the upper layer once and kept in
step with every change the overlay makes. Loading also recovers from an interrupted run:
temporary names are removed, and a whiteout next to a present object of the same name (a
crash between the two steps of a create or delete) gives way to the object.
"""

from __future__ import annotations

import contextlib
import stat

from . import hostio
from .names import META_PREFIX, OPAQUE_MARKER, WH_PREFIX, join, parent, under, whiteout_name

DIR = stat.S_IFDIR


JOURNAL_MAX = 256               # changed paths kept between two takes (then: "any")


class _Counter:
    """The index's changes: how many, and the guest paths they were at since the last take
    (None: too many, or a change of a whole collection)."""

    __slots__ = ("n", "paths")

    def __init__(self) -> None:
        self.n = 0
        self.paths: list[bytes] | None = []

    def saw(self, path: bytes) -> None:
        self.n += 1
        if self.paths is not None:
            self.paths.append(path)
            if len(self.paths) > JOURNAL_MAX:
                self.paths = None

    def saw_any(self) -> None:
        self.n += 1
        self.paths = None

    def take(self) -> list[bytes] | None:
        paths, self.paths = self.paths, []
        return paths


def _counting(base: type, keyed: tuple[str, ...], whole: tuple[str, ...]) -> type:
    """A dict or set type whose changes are counted, with the keys they were at: what the
    tracer remembers of the view (its decided directories, tracer/fastpath.py) is valid while
    the count stays the same, and for the directories away from those paths after."""
    def wrap(name: str):
        method = getattr(base, name)
        if name in keyed:
            def counted(self, *args, **kw):
                self.changes.saw(args[0])
                return method(self, *args, **kw)
        else:
            def counted(self, *args, **kw):
                self.changes.saw_any()
                return method(self, *args, **kw)
        counted.__name__ = name
        return counted
    ns = {name: wrap(name) for name in keyed + whole}
    ns["__slots__"] = ("changes",)
    return type(f"Counted{base.__name__.capitalize()}", (base,), ns)


_CountedDict = _counting(dict, ("__setitem__", "__delitem__", "pop", "setdefault"),
                         ("popitem", "clear", "update", "__ior__"))
_CountedSet = _counting(set, ("add", "discard", "remove"),
                        ("pop", "clear", "update", "difference_update", "intersection_update",
                         "symmetric_difference_update", "__ior__", "__isub__", "__iand__",
                         "__ixor__"))


def _counted(kind: type, changes: _Counter):
    c = kind()
    c.changes = changes
    return c


class UpperIndex:
    """The upper layer's names by kind, its whiteouts and opaque directories; every change to
    them counted (`version`)."""

    __slots__ = ("changes", "kinds", "whiteouts", "opaque")

    def __init__(self) -> None:
        self.changes = _Counter()
        # guest -> S_IFMT, "/" excluded
        self.kinds: dict[bytes, int] = _counted(_CountedDict, self.changes)
        self.whiteouts: set[bytes] = _counted(_CountedSet, self.changes)
        self.opaque: set[bytes] = _counted(_CountedSet, self.changes)

    def __eq__(self, other: object) -> bool:
        """The same names, whiteouts and opaque directories (however many changes made them)."""
        return (type(other) is UpperIndex and self.kinds == other.kinds
                and self.whiteouts == other.whiteouts and self.opaque == other.opaque)

    __hash__ = None                   # type: ignore[assignment] - mutable

    @property
    def version(self) -> int:
        """How many changes the index has had (any change to any of its collections)."""
        return self.changes.n

    def set_kinds(self, made: "list[tuple[bytes, int]]") -> None:
        """Each (guest, S_IFMT) in order, 0 removing the name: counted as one change whose
        paths are not kept (the caller, tracer/fastpath.py, forgot what it decided of them,
        and a tar -x hands thousands at once, 0.6 us each through the counting wrapper)."""
        kinds = self.kinds
        put, drop = dict.__setitem__, dict.pop
        for guest, kind in made:
            if kind:
                put(kinds, guest, kind)
            else:
                drop(kinds, guest, None)
        if made:
            self.changes.saw_any()

    def take_changed(self) -> list[bytes] | None:
        """The guest paths changed since the last take, in order (repeats included); None
        when unknown (too many, or a whole collection changed)."""
        return self.changes.take()

    @classmethod
    def load(cls, upper_root: bytes, *, recover: bool) -> "UpperIndex":
        ix = cls()
        stack = [(upper_root, b"/")]
        while stack:
            host_dir, guest_dir = stack.pop()
            for name, (dt, _ino) in hostio.scan(host_dir).items():
                host = host_dir + b"/" + name
                if name == OPAQUE_MARKER:
                    if guest_dir != b"/":
                        ix.opaque.add(guest_dir)
                elif name.startswith(META_PREFIX):
                    if recover:           # a temporary left by an interrupted operation
                        with contextlib.suppress(OSError):
                            hostio.remove_tree(host)
                elif name.startswith(WH_PREFIX):
                    if len(name) > len(WH_PREFIX):
                        ix.whiteouts.add(join(guest_dir, name[len(WH_PREFIX):]))
                else:
                    g = join(guest_dir, name)
                    ix.kinds[g] = dt << 12
                    if dt << 12 == DIR:
                        stack.append((host, g))
        for g in [w for w in ix.whiteouts if w in ix.kinds]:
            ix.whiteouts.discard(g)
            if recover:
                with contextlib.suppress(OSError):
                    hostio.unlink(_host(upper_root, parent(g)) + b"/" + whiteout_name(
                        g[g.rfind(b"/") + 1:]))
        return ix

    def is_dir(self, g: bytes) -> bool:
        return self.kinds.get(g) == DIR

    def subtree(self, top: bytes) -> list[bytes]:
        """The present paths at and below top."""
        return [g for g in self.kinds if under(g, top)]

    def drop_subtree(self, top: bytes) -> None:
        """Forget the upper object at top and everything below it (a whiteout of top itself,
        which lives in the parent directory, stays)."""
        self.kinds.pop(top, None)
        self.opaque.discard(top)
        below = top + b"/"
        for coll in (self.kinds, self.whiteouts, self.opaque):
            for g in [g for g in coll if g.startswith(below)]:
                coll.remove(g) if isinstance(coll, set) else coll.pop(g)

    def move_subtree(self, src: bytes, dst: bytes) -> None:
        """Re-key the upper object at src and everything below it to dst (a plain rename)."""
        n = len(src)
        below = src + b"/"
        moved_kinds = {g: k for g, k in self.kinds.items() if g == src or g.startswith(below)}
        moved_wh = {g for g in self.whiteouts if g.startswith(below)}
        moved_opq = {g for g in self.opaque if g == src or g.startswith(below)}
        self.drop_subtree(src)
        self.kinds.update({dst + g[n:]: k for g, k in moved_kinds.items()})
        self.whiteouts.update(dst + g[n:] for g in moved_wh)
        self.opaque.update(dst + g[n:] for g in moved_opq)


def _host(upper_root: bytes, g: bytes) -> bytes:
    return upper_root if g == b"/" else upper_root + g
