"""`appvirt overlay APP commit|reset`: apply selected changes to the host, or drop them all.

Commit copies added and modified objects to the host with their metadata (atomically for
files), replaces the content of opaque directories, deletes deleted ones, and then takes the
committed entries out of the upper layer, so that the program's view stays exactly the same.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..globs import Glob, GlobError
from ..state import AppDir
from . import hostio
from .appstate import AppLock
from .copy import copy_atomic, copy_into, copy_xattrs
from .errors import BadPattern, CommitError
from .index import DIR
from .model import Change, ChangeKind
from .names import META_PREFIX, OPAQUE_MARKER, WH_PREFIX, ancestors, join, parent
from .overlay import Overlay


OLD_UPPER_PREFIX = b"upper.old."


@dataclass(frozen=True, slots=True)
class CommitStep:
    """One change to apply to the host."""

    change: Change
    action: str          # "add", "modify", "replace" (type changed), "delete"
    implied: bool        # not selected, but an added parent a selected path needs


def patterns(args: tuple[str, ...] | list[str]) -> list[Glob]:
    """PATH/GLOB arguments as globs (a path covers itself and everything below it)."""
    out = []
    for a in args:
        try:
            out.append(Glob.of(a.rstrip("/") or "/"))
        except GlobError as e:
            raise BadPattern(f"{a!r}: {e}") from None
    return out


def select(changes: list[Change], globs: list[Glob]) -> list[Change]:
    return [c for c in changes if any(g.matches(c.guest) for g in globs)]


def plan(ov: Overlay, selected: list[Change]) -> list[CommitStep]:
    """The steps, deletions first (deepest first), then the rest parents first."""
    by_path = {c.guest: c for c in ov.changes()}
    chosen = {c.guest: c for c in selected}
    implied: set[bytes] = set()
    for c in selected:
        if c.kind is ChangeKind.DELETED:
            continue
        for a in ancestors(c.guest):
            if hostio.lstat(ov.lower(a)) is None and a not in chosen:
                parent_change = by_path.get(a)
                if parent_change is None:
                    raise CommitError(f"cannot commit {_show(c.guest)}: {_show(a)} is not on "
                                      "the host and not in the overlay")
                chosen[a] = parent_change
                implied.add(a)
    steps = []
    for g in sorted(chosen, key=lambda p: (chosen[p].kind is not ChangeKind.DELETED, p)):
        c = chosen[g]
        if c.kind is ChangeKind.DELETED:
            action = "delete"
        elif c.kind is ChangeKind.ADDED:
            action = "add"
        else:
            action = "replace" if "type" in c.details else "modify"
        steps.append(CommitStep(c, action, g in implied))
    deletes = [s for s in steps if s.action == "delete"]
    return sorted(deletes, key=lambda s: s.change.guest, reverse=True) + [
        s for s in steps if s.action != "delete"]


def apply(ov: Overlay, steps: list[CommitStep],
          report: Callable[[CommitStep], None] = lambda s: None) -> None:
    """Apply the steps to the host in order, reporting each before it is made."""
    dirs: list[bytes] = []
    for s in steps:
        report(s)
        try:
            _apply_one(ov, s, dirs)
        except OSError as e:
            raise CommitError(f"cannot {s.action} {_show(s.change.guest)} on the host: "
                              f"{e.strerror or e}") from None
    # Directory times last: adding their entries changed them.
    for g in sorted(dirs, reverse=True):
        st = hostio.lstat(ov.upper(g))
        if st is not None:
            with contextlib.suppress(OSError):
                hostio.utime(ov.lower(g), st.st_atime_ns, st.st_mtime_ns)
    for g in sorted(dirs, reverse=True):
        _prune(ov, g)


def _apply_one(ov: Overlay, s: CommitStep, dirs: list[bytes]) -> None:
    g = s.change.guest
    host = ov.lower(g)
    for a in reversed(ancestors(g)):
        ast = hostio.lstat(ov.lower(a))
        if ast is None or not stat.S_ISDIR(ast.st_mode):
            raise CommitError(f"cannot {s.action} {_show(g)}: {_show(a)} is not a directory "
                              "on the host; commit it first")
    if s.action == "delete":
        hostio.remove_tree(host)
        ov._remove_whiteout(g)
        return
    up = ov.upper(g)
    ust = hostio.lstat(up)
    if ust is None:
        raise CommitError(f"{_show(g)} vanished from the overlay")
    hst = hostio.lstat(host)
    if hst is not None and (s.action == "replace" or (
            stat.S_ISDIR(ust.st_mode) != stat.S_ISDIR(hst.st_mode))):
        hostio.remove_tree(host)
        hst = None
    if not stat.S_ISDIR(ust.st_mode):
        copy_atomic(up, host, ust)
        if ust.st_nlink == 1 and ov._ancestors_unmasked(g):
            # The host now holds the same object: let it show through again. (A file with
            # other hard links in the overlay stays, or the links would be broken.)
            with hostio.keep_times(hostio.parent_of(up)):
                hostio.unlink(up)
            ov._ix.kinds.pop(g, None)
        return
    dirs.append(g)
    if hst is None:
        copy_into(up, host, ust)
    else:
        if hostio.euid() == 0:
            hostio.chown(host, ust.st_uid, ust.st_gid)
        copy_xattrs(up, host)
        hostio.chmod(host, stat.S_IMODE(ust.st_mode))
    if g in ov._ix.opaque:
        # The host directory gets exactly the upper one's names; what the upper layer has
        # below them must keep masking the host (its directories become opaque).
        keep = {n for n in hostio.scan(up) if not n.startswith(WH_PREFIX)}
        for name in hostio.scan(host):
            if name not in keep:
                hostio.remove_tree(host + b"/" + name)
            elif ov._ix.kinds.get(join(g, name)) == DIR and join(g, name) not in ov._ix.opaque:
                ov._mark_opaque(up + b"/" + name)
                ov._ix.opaque.add(join(g, name))
        with hostio.keep_times(up):
            hostio.unlink(up + b"/" + OPAQUE_MARKER)
        ov._ix.opaque.discard(g)
        for w in [w for w in ov._ix.whiteouts if parent(w) == g]:
            ov._remove_whiteout(w)     # nothing left on the host for them to hide


def _prune(ov: Overlay, g: bytes) -> None:
    """Drop a committed upper directory that no longer holds anything of its own."""
    up = ov.upper(g)
    if ov._ix.kinds.get(g) != DIR or hostio.scan(up) or not ov._ancestors_unmasked(g):
        return
    with contextlib.suppress(OSError), hostio.keep_times(hostio.parent_of(up)):
        hostio.rmdir(up)
        ov._ix.kinds.pop(g, None)


def reset(app: AppDir) -> int:
    """Delete the app's upper layer (refused while the app runs); return how many entries
    it had. The old layer is renamed away first, so the reset is all or nothing."""
    lock = AppLock.acquire(app)
    try:
        root = os.fsencode(app.root)
        for name in hostio.scan(root):     # left by a reset that was interrupted
            if name.startswith(OLD_UPPER_PREFIX):
                hostio.remove_tree(root + b"/" + name)
        upper = os.fsencode(app.upper)
        count = count_entries(app)
        if hostio.lstat(upper) is None:
            hostio.mkdir(upper, 0o700)
            return 0
        old = root + b"/" + OLD_UPPER_PREFIX + b"%d" % os.getpid()
        hostio.rename(upper, old)
        hostio.mkdir(upper, 0o700)
        hostio.remove_tree(old)
        return count
    except OSError as e:
        raise CommitError(f"cannot reset app {app.name}: {e.strerror or e}") from None
    finally:
        lock.release()


def count_entries(app: AppDir) -> int:
    """How many names (whiteouts and opaque markers included) the upper layer holds."""
    return sum(1 for _ in _walk(os.fsencode(app.upper)))


def _walk(top: bytes) -> Iterator[bytes]:
    for name in hostio.scan(top):
        if name.startswith(META_PREFIX):
            continue
        yield name
        st = hostio.lstat(top + b"/" + name)
        if st is not None and stat.S_ISDIR(st.st_mode):
            yield from _walk(top + b"/" + name)


def _show(g: bytes) -> str:
    return g.decode("utf-8", "backslashreplace")
