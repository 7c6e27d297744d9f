"""The program's filesystem: the app's Overlay, seen through the resolver's View protocol.

Every mode goes through the Overlay (passthrough paths too: then the tracer makes the change
on the host itself, on the path it checked). A directory fd is listed by the kernel when its
own listing is right (a host directory with no upper changes and no hidden or private child);
otherwise the tracer serves the merged listing.
"""

from __future__ import annotations

import enum
import errno
import os
import stat as statmod
from collections.abc import Iterable

from ..errors import GuestErrno
from ..overlay import Layer, Overlay
from ..overlay.index import DIR
from ..overlay.names import WH_PREFIX, has_reserved
from ..policy.model import FileMode, PathRule
from .dirents import DT_DIR, Dirent, host_listing
from .hostlookup import Missing, lstat_no_symlinks
from .machinetree import MachineTree
from .resolver import Resolved

_GLOB_CHARS = b"*?["
_NOT_HOST = (FileMode.HIDDEN, FileMode.PRIVATE)
# Modes under which the view shows a directory the upper layer never touched as the host's
# (passthrough paths are asked of their owners: the registry tree, /proc, /dev/pts).
_PLAIN_MODES = (FileMode.OVERLAY, FileMode.READONLY)
# Passthrough places with owners of their own (and the registry tree): never host_names.
_OWNED_ELSEWHERE = (b"/proc/", b"/dev/pts/")


class Shown(enum.Enum):
    """Where the view's object at a path comes from, when one kernel lookup finds it."""

    HOST = "host"                  # the host's, as are all its ancestors
    UNDER_UPPER = "under upper"    # the host's (if any), below some upper-layer directories
    IN_UPPER_DIR = "in upper dir"  # ... directly in an upper-layer directory
    UPPER = "upper"                # an upper-layer object under upper-layer directories


def _literal_prefix(pattern: str) -> tuple[bytes, bool]:
    """(the part of a glob before its first wildcard component, whether it has one)."""
    parts = pattern.encode().split(b"/")[1:]
    lit = []
    for p in parts:
        if any(c in p for c in _GLOB_CHARS):
            return b"/" + b"/".join(lit), True
        if p:
            lit.append(p)
    return b"/" + b"/".join(lit), False


def _parent(g: bytes) -> bytes:
    return g.rsplit(b"/", 1)[0] or b"/"


class OverlayFS:
    """The resolver's View and the handlers' filesystem, over one Overlay."""

    def __init__(self, overlay: Overlay, rules: Iterable[PathRule],
                 hidden: Iterable[bytes] = (), *, kernel_lookups: bool = True) -> None:
        """kernel_lookups=False: never ask the kernel to resolve a whole path (for a
        filesystem only Python sees, such as pyfakefs in unit tests)."""
        self.ov = overlay
        self._kernel_lookups = kernel_lookups
        self._rules = tuple(rules)
        # Directories whose listings a hidden or private rule can change.
        self._parents: set[bytes] = set()
        self._trees: list[bytes] = []
        for rule in self._rules:
            if rule.mode not in (FileMode.HIDDEN, FileMode.PRIVATE):
                continue
            prefix, globby = _literal_prefix(rule.glob.pattern)
            if globby:
                self._trees.append(prefix)
            else:
                self._parents.add(_parent(prefix))
        for h in hidden:
            self._parents.add(_parent(h))
        self.machine: MachineTree | None = None     # entries appvirt adds under /sys
        self._mode_of = overlay._mode_of
        self._to_guest_memo: dict[bytes, bytes | None] = {}
        # (glob, literal prefix, whether a wildcard follows it) of each rule, for plain_dir.
        self._rule_prefixes = tuple((r.glob, *_literal_prefix(r.glob.pattern))
                                    for r in self._rules)

    def _tree_dirents(self, guest: bytes) -> list[Dirent]:
        assert self.machine is not None
        out = []
        for name in self.machine.added(guest):
            try:
                st = os.lstat(self.machine.root + guest + b"/" + name)
            except FileNotFoundError:
                continue
            out.append(Dirent(name, statmod.S_IFMT(st.st_mode) >> 12, st.st_ino))
        return out

    # --- View ------------------------------------------------------------------------------
    def lstat(self, path: bytes) -> os.stat_result | None:
        if self.ov.mode(path) is FileMode.HIDDEN:
            # Not there, because of a rule: say which, for the log (the errno is the same).
            raise GuestErrno(errno.ENOENT, os.fsdecode(path), rule=self._hidden_rule(path))
        if self.machine is not None:
            tree = self.machine.host(path)
            if tree is not None:
                return os.lstat(tree)
        return self.ov.lstat(path)

    def fast_lookup(self, guest: bytes, follow: bool) -> "Resolved | None":
        """Resolve an absolute, normalised guest path in one kernel lookup when the view of
        it and of its ancestors is the host's own, or when it is an upper-layer object under
        upper-layer directories; None: walk it component by component (a symlink is on the
        way, or the overlay or a rule changes what is there)."""
        shown = self._shown(guest) if self._kernel_lookups else None
        if shown is None:
            return None
        if shown is Shown.UPPER:
            got = self._lstat_walked(self.ov.upper(guest))
            if got is None or (follow and statmod.S_ISLNK(got.st_mode)):
                return None
            return Resolved(guest, got)
        try:
            got = lstat_no_symlinks(self.ov.lower(guest))
        except Missing:
            return Resolved(guest, None)     # the view's parent is there, the name is not
        if isinstance(got, int):
            if got in (-errno.ENOENT, -errno.ENOTDIR):
                if shown is Shown.HOST:
                    raise GuestErrno(-got, os.fsdecode(guest))
                if shown is Shown.IN_UPPER_DIR:
                    return Resolved(guest, None)
            return None     # (below upper directories the host may lack a parent the view has)
        if follow and statmod.S_ISLNK(got.st_mode):
            return None
        return Resolved(guest, got)

    @staticmethod
    def _lstat_walked(host: bytes) -> os.stat_result | None:
        """lstat of a host path reached without a symlink; None when it is not."""
        try:
            got = lstat_no_symlinks(host)
        except Missing:
            return None
        return None if isinstance(got, int) else got

    def _shown(self, g: bytes) -> "Shown | None":
        """Where the view's object at g comes from, when one kernel lookup can find it (see
        Shown); None when the overlay or a rule changes what g is, or when unsure."""
        if g.startswith(b"/proc/") or g == b"/proc" or has_reserved(g):
            return None           # /proc/self and magic links name the caller, not us
        ov = self.ov
        for h, hs in ov._hidden:
            if g == h or g.startswith(hs):
                return None
        if self.machine is not None and self.machine.covers(g):
            return None
        ix = ov._ix
        mode_of = self._mode_of
        untouched = not ix.kinds and not ix.whiteouts
        shown = Shown.HOST
        upper_modes, masked = True, False
        i = 1
        while True:
            j = g.find(b"/", i)
            prefix = g if j < 0 else g[:j]
            mode = mode_of(prefix)
            if mode in _NOT_HOST:
                return None
            if mode not in _PLAIN_MODES:
                upper_modes = False
            if not untouched:
                # Upper entries imply upper copies of their ancestors: below a prefix the
                # upper layer never touched, nothing is touched.
                if prefix in ix.whiteouts:
                    return None
                kind = ix.kinds.get(prefix)
                if kind is None:
                    if prefix in ix.opaque:
                        return None
                    untouched = True
                    if masked:
                        return None      # below an opaque directory: not the host's
                    shown = Shown.IN_UPPER_DIR if j < 0 and shown is not Shown.HOST \
                        else shown
                elif j < 0:
                    # An upper object under upper directories: the view shows it whatever
                    # the host has (an opaque ancestor hides only the host's names).
                    return Shown.UPPER if upper_modes else None
                elif kind != DIR:
                    return None
                else:
                    shown = Shown.UNDER_UPPER
                    masked = masked or prefix in ix.opaque
            if j < 0:
                return shown
            i = j + 1

    def plain_dir(self, d: bytes, parent_plain: bool = False) -> bool:
        """Whether the view of host directory d, and of every name in it, is the host's own
        whatever the name, so that a read of a name there may be answered from the host
        without asking the view (tracer/fastpath.py). The caller still refuses a name that
        is reserved or a symlink to follow. False whenever unsure; valid while the upper
        index does not change (the tracer forgets its answers when it does).

        parent_plain: d's parent is plain (decided with the same index). Then so is d, unless
        its name is reserved: no upper entry, hidden place or rule can be below the parent
        (they would have made it not plain), and the rules that match the parent match d.
        Then d may also be absent or not a directory: the view, as the host, has nothing in
        it (ENOENT, ENOTDIR). Without a plain parent d must be a real directory reached
        without a symlink, never a symlink, or absent from the host and from the upper layer
        where a walk that crosses no symlink finds a name missing (HOME=/nonexistent)."""
        if parent_plain:
            if d[d.rfind(b"/") + 1:].startswith(WH_PREFIX):
                return False
            try:
                return not statmod.S_ISLNK(os.lstat(d).st_mode)
            except FileNotFoundError:
                return True          # absent in the view too: every name in it is ENOENT
            except OSError:
                return False
        ov = self.ov
        # (UNDER_UPPER, IN_UPPER_DIR: upper directories above d, but d itself the host's)
        if ov.lower_root != b"/" or self._shown(d) in (None, Shown.UPPER) \
                or self._mode_of(d) not in _PLAIN_MODES or self._overlay_guest(d) != d:
            return False
        if not self._names_alike(d):
            return False
        # A real directory reached without a symlink: the path the program gave may cross
        # one (/lib -> usr/lib), and then it names another directory, decided on its own.
        try:
            got = lstat_no_symlinks(d)
        except Missing:
            return True              # absent (no upper object either: _shown), names ENOENT
        if isinstance(got, int):
            return got == -errno.ENOENT      # an ancestor missing before any symlink
        return statmod.S_ISDIR(got.st_mode)

    def owned_dir(self, d: bytes) -> bytes | None:
        """The upper-layer directory that alone makes up the view of directory d, when
        there is one: d is an upper directory with nothing of the host's in it (the program
        made it, or it is opaque), in overlay mode, reached through upper directories only,
        with no rule, hidden place or machine file that could tell names in d apart. Then
        the object at d/NAME is that directory's NAME (or nothing) whatever NAME is, and the
        compiled loop may open, create and remove there (tracer/fastpath.py). None whenever
        unsure; valid while the upper index changes only by what is done there."""
        ov = self.ov
        if not self._upper_in_overlay(d):
            return None
        if d not in ov._ix.opaque and ov._lower_at(d) is not None:
            return None                  # merged with the host's directory
        return self._upper_alike(d)

    def merged_dir(self, d: bytes) -> bytes | None:
        """The upper-layer directory that, merged name by name with the host's directory d,
        makes up the view of d, when one does: d is an upper directory that is not opaque over
        a real host directory reached without a symlink, in overlay mode, reached through
        upper directories only, with no rule, hidden place or machine file that could tell
        names in d apart. Then the object at d/NAME is the upper directory's NAME when it has
        one, nothing when it has NAME's whiteout, else the host's d/NAME (OverlayView._entry),
        and the compiled loop may answer reads there (tracer/fastpath.py). None whenever
        unsure; valid while the upper index does not change."""
        ov = self.ov
        if not self._upper_in_overlay(d) or d in ov._ix.opaque \
                or not ov._ancestors_unmasked(d):
            return None
        host = self._lstat_walked(d)
        return self._upper_alike(d) if host is not None and statmod.S_ISDIR(host.st_mode) \
            else None

    def upper_dir_stat(self, g: bytes) -> tuple[bytes, int, bytes, int, int, bool] | None:
        """How the view answers a stat of g when g is a directory of the upper layer under
        upper-layer directories (fast_lookup's UPPER: $TMPDIR's ancestors once the program
        made something there): the upper directory's own stat, with merged_nlink's link count
        when it is merged with the host's, and the host directory's (st_dev, st_ino) when it
        keeps its identity (kept_identity). Then (the upper directory, that count or -1 for
        the upper directory's own, the host path the count also depends on or b"" for none,
        that path's inode and ctime in ns, (0, 0) when it is absent, whether its identity is
        kept); None otherwise. Valid while the upper index and that host object do not change
        (the compiled loop checks the host object at every answer: a directory made or
        removed there changes its ctime)."""
        if self._shown(g) is not Shown.UPPER:
            return None
        got = self.fast_lookup(g, follow=False)
        if got is None or got.st is None or not statmod.S_ISDIR(got.st.st_mode):
            return None
        upper = self.ov.upper(g)
        nlink = self.merged_nlink(g)
        if nlink is None:
            return upper, -1, b"", 0, 0, False
        lower = self.ov.lower(g)
        try:
            host = os.lstat(lower)
        except (FileNotFoundError, NotADirectoryError):
            return upper, nlink, lower, 0, 0, False
        except OSError:
            return None
        if not statmod.S_ISDIR(host.st_mode):
            return None          # (a symlink's target could change unseen)
        return (upper, nlink, lower, host.st_ino, host.st_ctime_ns,
                self.kept_identity(g) is not None)

    def _upper_in_overlay(self, d: bytes) -> bool:
        """d is an upper directory in overlay mode reached through upper directories only,
        each name a kernel lookup finds (where owned_dir and merged_dir start)."""
        ov = self.ov
        return (ov.lower_root == b"/" and self._kernel_lookups and d != b"/"
                and self._shown(d) is Shown.UPPER and ov._ix.kinds.get(d) == DIR
                and self._mode_of(d) is FileMode.OVERLAY)

    def _upper_alike(self, d: bytes) -> bytes | None:
        """d's upper directory, reached without a symlink, when nothing tells names in d
        apart (where owned_dir and merged_dir end)."""
        if not self._names_alike(d):
            return None
        up = self.ov.upper(d)
        got = self._lstat_walked(up)
        return up if got is not None and statmod.S_ISDIR(got.st_mode) else None

    def host_names(self, d: bytes) -> bool:
        """Whether the names of d, a directory that is not plain (a rule for some of them,
        as /dev's device nodes), may be decided one by one with host_name: d and its
        ancestors are the host's own, seen through no rule that hides or moves them."""
        return (self.ov.lower_root == b"/" and self._kernel_lookups
                and not (d + b"/").startswith(_OWNED_ELSEWHERE) and self._shown(d) is Shown.HOST
                and self._overlay_guest(d) == d)       # (_shown: no hidden, private place)

    def host_name_dir(self, d: bytes) -> bool:
        """host_names, for a real directory reached without a symlink."""
        got = _reached(d) if self.host_names(d) else None
        return got is not None and statmod.S_ISDIR(got.st_mode)

    def shows_itself(self, d: bytes) -> bool:
        """Whether the view of directory d itself (its stat, a cwd there) is the host's, its
        names being decided elsewhere: host_name_dir."""
        return self.host_name_dir(d)

    def host_name(self, p: bytes) -> bool:
        """Whether the object at p is the host's own for the reads the compiled loop answers
        (stat, an open for reading, access): p and its ancestors are the host's (no upper
        entry, hidden or private place, machine file), and p an existing object that is
        neither a directory nor a symlink, reached without a symlink. Valid while the upper
        index does not change."""
        got = _reached(p) if self.host_names(p) else None
        return got is not None and not statmod.S_ISDIR(got.st_mode) \
            and not statmod.S_ISLNK(got.st_mode)

    def _names_alike(self, d: bytes) -> bool:
        """Whether every name in d is decided as d is: no hidden place, machine file or rule
        that applies to some names in d and not to d."""
        ov = self.ov
        below = d + b"/" if d != b"/" else d
        if any(h.startswith(below) for h, _ in ov._hidden):
            return False
        if self.machine is not None and any(p.startswith(below) or d.startswith(p + b"/")
                                            for p in self.machine.prefixes):
            return False
        for glob, prefix, globby in self._rule_prefixes:
            if glob.matches(d):
                continue                 # it applies to every name in d as to d itself
            if prefix.startswith(below) or (globby and (
                    prefix == b"/" or d == prefix or d.startswith(prefix + b"/"))):
                return False             # it may apply to some names in d, not to d
        return True

    def _hidden_rule(self, path: bytes) -> str:
        for rule in reversed(self._rules):
            if rule.glob.matches(path):
                return rule.rule_id
        return "builtin:appvirt-state"

    def readlink(self, path: bytes) -> bytes:
        return self.ov.readlink(path)

    def to_guest(self, host: bytes) -> bytes | None:
        if self.machine is not None:
            guest = self.machine.to_guest(host)
            if guest is not None:
                return guest
        return self._overlay_guest(host)

    def _overlay_guest(self, host: bytes) -> bytes | None:
        """The overlay's guest path of a host path. Asked for the directory of nearly every
        relative path call and listing; a function of the layers' places and the rules
        only, so remembered (bounded)."""
        memo = self._to_guest_memo
        if host in memo:
            return memo[host]
        guest = self.ov.to_guest(host)
        if len(memo) >= 8192:
            memo.clear()
        memo[host] = guest
        return guest

    @property
    def meta(self):
        """The app's recorded owners and device stand-ins (overlay/meta.py)."""
        return self.ov.meta

    def listing(self, host_dir: bytes) -> list[Dirent] | None:
        if self.machine is not None:
            guest = self.to_guest(host_dir)
            added = self._tree_dirents(guest) if guest is not None else []
            if added:
                if self.machine.to_guest(host_dir) is not None:
                    base: list[Dirent] = [Dirent(b".", DT_DIR, 0), Dirent(b"..", DT_DIR, 0)]
                else:
                    base = self._layered_listing(host_dir, guest) or host_listing(host_dir)
                names = {d.name for d in base}
                return base + [d for d in added if d.name not in names]
        return self._layered_listing(host_dir, self._overlay_guest(host_dir))

    def _layered_listing(self, host_dir: bytes, guest: bytes | None) -> list[Dirent] | None:
        if guest is None:
            return None
        in_upper = host_dir == self.ov.upper_root or host_dir.startswith(
            self.ov.upper_root + b"/")
        if not in_upper and not self._changed(guest):
            return None
        try:
            entries = self.ov.listdir(guest)
            me = self.ov.entry(guest)
            up = self.ov.entry(_parent(guest))
        except GuestErrno:
            return None               # gone meanwhile: the kernel answers for its fd
        dots = [Dirent(b".", DT_DIR, self.dir_ino(guest, me.st) if me else 0),
                Dirent(b"..", DT_DIR, self.dir_ino(_parent(guest), up.st) if up else 0)]
        return dots + [Dirent(e.name, e.d_type, e.ino) for e in entries]

    def _changed(self, guest: bytes) -> bool:
        """Whether the merged listing of a host directory differs from the host's own."""
        ix = self.ov._ix
        if ix.is_dir(guest) or (guest == b"/" and ix.kinds) or guest in self._parents:
            return True
        g = guest + b"/"
        return any(guest == t or g.startswith(t + b"/") or t == b"/" for t in self._trees)

    # --- where the kernel acts ---------------------------------------------------------------
    def host_for_read(self, guest: bytes) -> bytes:
        if self.machine is not None:
            tree = self.machine.host(guest)
            if tree is not None:
                return tree
        return self.ov.where_read(guest)

    def host_for_write(self, guest: bytes, *, truncate: bool = False) -> bytes:
        return self.ov.copy_up(guest, truncate=truncate)

    def host_for_create(self, guest: bytes) -> bytes:
        return self.ov.prepare_create(guest)

    def created(self, guest: bytes) -> None:
        self.ov.created(guest)

    def layer(self, guest: bytes) -> Layer | None:
        e = self.ov.entry(guest)
        return e.layer if e is not None else None

    def merged_nlink(self, guest: bytes) -> int | None:
        """The link count a directory shown from both layers must report (2 + its merged
        subdirectories, as for a real directory); None when the host object's own is right."""
        if guest not in self.ov._ix.kinds:
            return None           # not in the upper layer: the host's count is the view's
        e = self.ov.entry(guest)
        if e is None or e.layer is not Layer.UPPER or not e.is_dir:
            return None
        if guest in self.ov._ix.opaque or self.ov.mode(guest) is FileMode.PRIVATE:
            return None
        try:
            return 2 + sum(1 for d in self.ov.listdir(guest) if d.d_type == DT_DIR)
        except GuestErrno:
            return None

    def dir_ino(self, guest: bytes, st: os.stat_result) -> int:
        """The inode the view shows for the directory at guest, whose own lstat is st."""
        kept = self.ov.kept_identity(guest)
        return kept.st_ino if kept is not None else st.st_ino

    def kept_identity(self, guest: bytes) -> tuple[bytes, os.stat_result] | None:
        """(host path, its lstat) of the host directory whose identity the directory at
        guest keeps, shown from both layers (OverlayView.kept_identity); None for the rest."""
        if self.machine is not None and self.machine.host(guest) is not None:
            return None
        st = self.ov.kept_identity(guest)
        return (self.ov.lower(guest), st) if st is not None else None

    def redirected(self, guest: bytes) -> bool:
        """Whether changes to guest land somewhere else than the host path of that name."""
        return self.ov.mode(guest) not in (FileMode.PASSTHROUGH,)


def _reached(p: bytes) -> os.stat_result | None:
    """The host object at p when a walk that crosses no symlink reaches it (p itself may be
    one), else None."""
    try:
        got = lstat_no_symlinks(p)
    except Missing:
        return None
    return None if isinstance(got, int) else got
