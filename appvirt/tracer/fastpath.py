"""The compiled part of the wait loop: the commonest file calls answered without Python.

Most stops of a program that reads files (find, a compiler reading headers, Python importing
its modules) are a stat, an open for reading or a listing in a directory the program's view
shows as the host has it; most stops of one that writes files (tar, a build, a test suite)
are opens, creations and removals in directories it made itself in the overlay.
`_fastpath.Engine.wait()` answers those itself, exactly as the handlers would (see
_fastpath.c), and hands every other stop to the Python loop. This module decides the
directories the engine meets for the first time: plain (the filesystem's `plain_dir`), owned
(`owned_dir`: the upper directory that makes up the view, whose names the engine opens,
creates and removes, with compiled.py keeping the log and the index) or neither. It forgets
them all whenever the overlay's index changes by anything but the engine's own work in owned
directories, and says which threads the engine may serve: those whose stops Python has
nothing in flight for.

Off (every stop in Python, same behaviour) when the extension is not built, when
APPVIRT_FASTPATH=0, and for policies whose answers need Python at every read: log level
`all` (every call is logged), an `identity:` (owners shown by the tracer).
"""

from __future__ import annotations

import os
import stat as statmod

from ..core import sysnums
from ..core.slotlayout import SLOT_BASE, SLOT_COUNT, SLOT_SIZE
from ..errors import GuestErrno
from ..fs.resolver import Caller, resolve
from ..policy.model import LogLevel, Policy

try:
    from . import _fastpath
except ImportError:             # built without a C compiler: the Python loop does it all
    _fastpath = None

MAX_DIRS = 1 << 16              # remembered directories (then forgotten all at once)
# The changing calls the engine has made in owned directories (see _fastpath.c do_change).
CHANGES = ("unlink", "unlinkat", "mkdir", "mkdirat", "fchmod", "fchown", "fchmodat",
           "fchownat", "utimensat", "link", "linkat", "rename", "renameat", "renameat2")
_NOBODY = Caller(0, 0, lambda pid: False)    # resolves no /proc/self (never asked here)


def wanted(policy: Policy) -> bool:
    """Whether this run may use the compiled fast path."""
    return (_fastpath is not None and os.environ.get("APPVIRT_FASTPATH", "1") != "0"
            and policy.log.level is not LogLevel.ALL and policy.identity is None)


class FastPath:
    """The engine, the directories it may answer in, and the threads it may serve."""

    def __init__(self, fs, area, tracer=None) -> None:
        """tracer: the Python loop, whose log and overlay the engine's work in owned
        directories goes to; without it, only plain directories are served."""
        assert _fastpath is not None
        from .compiled import CompiledCalls
        self.fs = fs
        # directory -> True (plain), (the plain directory its walk reaches,), the host path
        # of its upper directory (owned), 0 (ask `names` for each name), False
        self.plain: dict[bytes, bool | int | bytes | tuple[bytes]] = {}
        self.names: dict[bytes, bool] = {}    # path -> the host's own object (host_name)
        self._index = fs.ov._ix
        self._version = self._index.version
        self._meta = fs.meta
        self.error: str | None = None     # the first failure deciding a directory
        self.busy = False                 # Python code runs in the middle of a stop
        calls = CompiledCalls(tracer, self) if tracer is not None else None
        self._owned = calls is not None
        self.engine = _fastpath.Engine(
            area=area, plain=self.plain, learn=self._learn, names=self.names,
            learn_name=self._learn_name, slot_base=SLOT_BASE,
            slot_size=SLOT_SIZE, slots=SLOT_COUNT, nr_newfstatat=sysnums.nr("newfstatat"),
            nr_openat=sysnums.nr("openat"), nr_getdents64=sysnums.nr("getdents64"),
            nr_openat2=sysnums.nr("openat2"), nr_access=sysnums.nr("access"),
            nr_faccessat=sysnums.nr("faccessat"), nr_faccessat2=sysnums.nr("faccessat2"),
            changes=tuple(sysnums.nr(n) for n in CHANGES), upper=fs.ov.upper_root,
            opening=calls.opening if calls else None, opened=calls.opened if calls else None,
            changing=calls.changing if calls else None)

    def wait(self) -> tuple[int, int]:
        """The next stop (or exit) the Python loop must handle."""
        return self.engine.wait()

    def _learn(self, d: bytes) -> bool | int | bytes | tuple[bytes]:
        """Called by the engine for a directory it has no answer for (in the middle of a
        stop: `busy` tells the tracer's timer so)."""
        if len(self.plain) >= MAX_DIRS:
            self.plain.clear()
        self.busy = True
        try:
            return self._decide(d)
        finally:
            self.busy = False

    def _learn_name(self, p: bytes) -> bool:
        """Called by the engine for a name in a directory decided 0 (see `plain`)."""
        if len(self.names) >= MAX_DIRS:
            self.names.clear()
        self.busy = True
        try:
            host = self.fs.host_name(p)
        except Exception as e:  # noqa: BLE001 - not the host's: the Python handlers decide
            if self.error is None:
                self.error = f"deciding {os.fsdecode(p)}: {type(e).__name__}: {e}"
            host = False
        finally:
            self.busy = False
        self.names[p] = host
        return host

    def _decide(self, d: bytes) -> bool | int | bytes | tuple[bytes]:
        """Decide d, its parents first (a plain parent decides its names cheaply)."""
        parent = d[:d.rfind(b"/")] or b"/"
        parent_plain = self.plain.get(parent)
        if parent_plain is None and parent != b"/":
            parent_plain = self._decide(parent)
        try:
            kind: bool | bytes | tuple[bytes] = self.fs.plain_dir(d, parent_plain is True)
            if not kind and self._owned:
                kind = self.fs.owned_dir(d) or False
            if not kind:
                kind = self._alias(d)
            if not kind and self.fs.host_name_dir(d):
                kind = 0
        except Exception as e:  # noqa: BLE001 - neither: the Python handlers decide
            if self.error is None:
                self.error = f"deciding {os.fsdecode(d)}: {type(e).__name__}: {e}"
            kind = False
        self.plain[d] = kind
        return kind

    def _alias(self, d: bytes) -> tuple[bytes] | bool:
        """(c,) when the view's walk of d follows symlinks to c, a plain directory: every
        name in d is then c's (/lib/x86_64-linux-gnu on a merged-/usr system); else False."""
        if d.startswith(b"/proc/") or d == b"/proc":
            return False
        try:
            r = resolve(_NOBODY, b"/", d, follow=True, view=self.fs)
        except GuestErrno:
            return False
        if r.magic is not None or r.st is None or not statmod.S_ISDIR(r.st.st_mode) \
                or r.path == d:
            return False
        canonical = self.plain.get(r.path)
        if canonical is None:
            canonical = self._decide(r.path)
        return (r.path,) if canonical is True else False

    def made_here(self, change, *names: bytes):
        """Make a change the engine asked for at `names` in owned directories; its result.
        It changes no other decision (names in owned directories are decided by the upper
        layer alone, and no directory is removed or moved), so the index's new version
        counts as seen; what was decided for the names themselves is forgotten."""
        before = self._index.version
        try:
            return change()
        finally:
            if self._version == before:
                self._version = self._index.version
            for name in names:
                self.plain.pop(name, None)

    def fresh(self) -> None:
        """Forget every plain directory if the overlay changed since they were decided, and
        whether stat answers need recorded owners patched in."""
        v = self._index.version
        if v != self._version:
            self._version = v
            self.plain.clear()
            self.names.clear()
        self.engine.stat_ok = not self._meta

    def serve(self, tid: int, slot: int | None) -> None:
        """Let the engine answer tid's reads (from this slot), or not (None)."""
        if slot is None:
            self.engine.disable(tid)
        else:
            self.engine.enable(tid, slot)

    def forget(self, tid: int) -> None:
        self.engine.forget(tid)

    def counts(self) -> tuple[int, int, dict[str, int]]:
        """(seccomp stops, exit stops, stops by syscall name) answered by the engine."""
        seccomp, exits, by_nr = self.engine.counts()
        return seccomp, exits, {sysnums.name(nr): n for nr, n in by_nr.items()}
