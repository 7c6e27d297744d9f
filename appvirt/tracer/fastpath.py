"""The compiled part of the wait loop: the commonest file calls answered without Python.

Most stops of a program that reads files (find, a compiler reading headers, Python importing
its modules) are a stat, an open for reading or a listing in a directory the program's view
shows as the host has it; most stops of one that writes files (tar, a build, a test suite)
are opens, creations and removals in directories it made itself in the overlay, and reads
in host directories where it changed something (merged: the upper layer's names over the
host's).
`_fastpath.Engine.wait()` answers those itself, exactly as the handlers would, and logs them
as they would (see _fastpath.c), and hands every other stop to the Python loop. This module
decides the directories the engine meets for the first time: plain (the filesystem's
`plain_dir`), owned (`owned_dir`: the upper directory that makes up the view, whose names the
engine opens, creates, changes and removes itself), merged (`merged_dir`: an upper directory
over the host's, whose names the engine reads) or neither. It brings the overlay's index
in step with what the engine changed before Python decides anything again (`drain`), forgets
every decision whenever the index changes otherwise, and says which threads the engine may
serve: those whose stops Python has nothing in flight for.

At log level `all` (every call is logged) the engine answers only the reads it writes the
records of (READS_LOGGED and openat: stats, access checks, opens and listings in plain
directories, and an fd's own stat) besides its changes in owned and merged directories, and
every other call goes to Python.

Under an `identity:` execve is Python's (set-id programs), and so is what a thread creates or
changes while its virtual ids are not appvirt's own (the objects it makes are the identity's).

The calls the engine answers without touching the program's registers (NOTIFIED: all but
opens and execs) reach it as seccomp user notifications rather than ptrace stops where the
kernel has them (`notified`, _fastpath_notify.c); APPVIRT_NOTIFY=0 keeps every call a stop.

Off (every stop in Python, same behaviour) when the extension is not built and when
APPVIRT_FASTPATH=0.
"""

import errno
import functools
import os
import stat as statmod
from typing import TYPE_CHECKING, NamedTuple

from ..core import sysnums
from ..core.action import Decision
from ..core.slotlayout import CELL_BASE, SLOT_BASE, SLOT_COUNT, SLOT_SIZE, TRAMP_BASE
from ..errors import GuestErrno
from ..fs.resolver import Caller, resolve
from ..log.records import ArgFormat, arg_specs
from ..log.writer import encode
from ..overlay.names import WH_PREFIX, parent
from ..policy.model import FileMode, LogLevel, Policy
from . import seccomp, trampoline

if TYPE_CHECKING:
    from ..core.table import SyscallEntry, SyscallTable
    from .loop import Tracer

try:
    from . import _fastpath
except ImportError:             # built without a C compiler: the Python loop does it all
    _fastpath = None

MAX_DIRS = 1 << 16              # remembered directories (then forgotten all at once)
FORGET_SCAN_MAX = 8192          # decisions searched for those a change touches (more: all go)
ITSELF = 1                      # a decision: only the directory itself is the host's (see plain)
DEVICE_PASSED = 3               # a name's: a host device a passthrough rule opens for writing too
# The changing calls the engine makes in owned directories (see _fastpath_owned.c), in the
# order of its enum Change.
CHANGES = ("unlink", "unlinkat", "rmdir", "mkdir", "mkdirat", "fchmod", "fchown",
           "fchmodat", "fchownat", "chmod", "chown", "lchown", "utimensat", "link", "linkat",
           "rename", "renameat", "renameat2")
LOGGED = ("openat",) + CHANGES          # the calls whose records the engine writes
READS_LOGGED = ("newfstatat", "stat", "lstat", "getdents64", "access", "faccessat",
                "faccessat2")           # ... and at log level all
TIME_CALLS = ("clock_gettime", "gettimeofday", "time")    # ... and under a virtual clock
# The calls the engine answers with a result alone (no register rewritten, unlike its opens
# and execs), which may therefore reach it as notifications; at log level all, only those it
# writes records of. (Under an identity, a thread acting as another owner has its changes
# handed to the handlers: a virtual root run by root makes them in C.)
NOTIFIED_READS = ("newfstatat", "stat", "lstat", "getdents64", "access", "faccessat",
                  "faccessat2") + TIME_CALLS
NOTIFIED_OTHERS = ("getcwd", "readlink", "readlinkat", "statfs")
# The sixth argument register's value that sends a notified call to RET_TRACE (seccomp.py):
# none of them has a sixth argument.
NOTIFY_MARK = 0x61707076_6972742E       # "appvirt." in r9
_NOBODY = Caller(0, 0, lambda pid: False)    # resolves no /proc/self (never asked here)


def wanted(policy: Policy) -> bool:
    """Whether this run may use the compiled fast path: under every policy now (log level all
    and identities restrict what it answers, see above), unless the extension is missing or
    APPVIRT_FASTPATH=0."""
    return _fastpath is not None and os.environ.get("APPVIRT_FASTPATH", "1") != "0"


def notified(policy: Policy, traced: "dict[str, tuple]") -> "seccomp.Notified | None":
    """The calls of the filter (traced: its traced calls) that notify under this policy, or
    None: every call a ptrace stop (no compiled loop, a kernel before 5.19, APPVIRT_NOTIFY=0,
    none of them traced)."""
    if not wanted(policy) or os.environ.get("APPVIRT_NOTIFY", "1") == "0" \
            or not seccomp.notify_available():
        return None
    names = set(NOTIFIED_READS + CHANGES)
    if policy.log.level is not LogLevel.ALL:
        names.update(NOTIFIED_OTHERS)
    calls = frozenset(names & traced.keys())
    return seccomp.Notified(calls, NOTIFY_MARK) if calls else None


def record_spec(table: "SyscallTable", logged: tuple[str, ...], nr: int) -> tuple | None:
    """How the engine writes the records of syscall nr (call_spec); None for a call it does
    not log (not in `logged`). Asked with its first record: the formats come from
    python-ptrace, whose import a run that logs nothing does not pay."""
    entry = table.lookup(nr)
    return call_spec(entry) if entry is not None and entry.name in logged else None


def call_spec(entry: "SyscallEntry") -> tuple:
    """A syscall's records as Tracer.log_call writes them: "syscall" and "class" as JSON,
    and each argument's JSON name and format (records.arg_specs)."""
    head = b'"syscall":%s,"class":%s,' % (encode(entry.name), encode(entry.op.value))
    return head, tuple((encode(a.name) + b":", int(a.fmt), a.dirfd,
                        {} if a.fmt is ArgFormat.SYMBOLIC else None, a.symbolic)
                       for a in arg_specs(entry.name, entry.path_args))


class EngineCounts(NamedTuple):
    """What the engine did in a run (appvirt run --stats)."""

    seccomp: int                    # seccomp stops answered
    exits: int                      # syscall-exit stops
    signals: int                    # signal-delivery stops
    stubs: int                      # seccomp stops of slot stubs, resumed
    by_syscall: dict[str, int]      # the calls answered (stops and notifications), by call
    dirs_compiled: int              # directories it decided itself
    dirs_python: int                # directories the Python side decided for it
    trampolines: int                # opens resumed through trampolines (no exit stop)
    fd_paths_known: int             # fds' paths known without a readlink (_fastpath_fds.c)
    notified: int                   # calls answered from notifications (no ptrace stop)
    handed_over: int                # notified calls handed to the ptrace handlers
    handover_stops: int             # ... the stops of their interrupts, resumed


class FastPath:
    """The engine, the directories it may answer in, and the threads it may serve."""

    def __init__(self, fs, area, tracer: "Tracer | None" = None,
                 trampolines: bool = False, area_file: tuple[int, int] = (0, 0)) -> None:
        """tracer: the Python loop, whose log and overlay the engine's work in owned
        directories goes to; without it, only plain directories are served. trampolines:
        tracees have them and their result cells (trampoline.py), and opens rewritten from
        the slot need no exit stop. area_file: the slot area's file (device, inode), which
        the engine checks the slot stubs map (stub_mapped); (0, 0): it checks nothing."""
        assert _fastpath is not None
        self.fs = fs
        # directory -> True (plain), (the plain directory its walk reaches,), (its upper
        # directory, ...) (owned, see _owned; merged, see _merged), 0 (ask `names` for each
        # name), ITSELF (only its own stat and a cwd there are the host's), False
        self.plain: dict[bytes, bool | int | tuple] = {}
        # path -> the host's own object (host_name), or an upper directory's stat answer
        # (upper_dir_stat), see _learn_name
        self.names: dict[bytes, bool | tuple] = {}
        self.made: list[tuple[bytes, int]] = []   # (guest path, S_IFMT) it changed (drain)
        self.decided = 0                  # directories decided here (_decide)
        self._index = fs.ov._ix
        self._version = self._index.version
        self._index.take_changed()        # (what loading made: nothing is decided yet)
        self._meta = fs.meta
        self._rule_of = tracer.policy.files.mode_for if tracer is not None else None
        self.error: str | None = None     # the first failure deciding a directory
        self.busy = False                 # Python code runs in the middle of a stop
        # The virtual clock the engine answers the time calls from (None: the host's).
        self._clock = tracer.ctx.clock if tracer is not None else None
        self._ctx = tracer.ctx if tracer is not None else None
        self._umask_changes = 0
        log = tracer.log if tracer is not None else None
        logs = log is not None and Decision.REDIRECTED in tracer.logged   # type: ignore[union-attr]
        # Log level all: reads are logged too (Decision.ALLOWED), with their directory's rule.
        log_reads = logs and Decision.ALLOWED in tracer.logged            # type: ignore[union-attr]
        self.engine = _fastpath.Engine(
            area=area, plain=self.plain, learn=self._learn, names=self.names,
            learn_name=self._learn_name, slot_base=SLOT_BASE,
            slot_size=SLOT_SIZE, slots=SLOT_COUNT, nr_newfstatat=sysnums.nr("newfstatat"),
            nr_openat=sysnums.nr("openat"), nr_getdents64=sysnums.nr("getdents64"),
            nr_openat2=sysnums.nr("openat2"), nr_access=sysnums.nr("access"),
            nr_faccessat=sysnums.nr("faccessat"), nr_faccessat2=sysnums.nr("faccessat2"),
            nr_getcwd=sysnums.nr("getcwd"), nr_execve=sysnums.nr("execve"),
            nr_stat=sysnums.nr("stat"), nr_lstat=sysnums.nr("lstat"),
            nr_readlink=sysnums.nr("readlink"), nr_readlinkat=sysnums.nr("readlinkat"),
            nr_statfs=sysnums.nr("statfs"),
            changes=tuple(sysnums.nr(n) for n in CHANGES), upper=fs.ov.upper_root,
            made=self.made if tracer is not None else None,
            log_fd=log.fd if logs else -1,        # type: ignore[union-attr]
            spec_of=functools.partial(record_spec, tracer.table,  # type: ignore[union-attr]
                                      LOGGED + (READS_LOGGED if log_reads else ())
                                      + (TIME_CALLS if self._clock is not None else ()))
            if logs else None,
            programs=tracer.tasks.program if tracer is not None else {},
            errnames=dict(errno.errorcode),
            clock_virtual=tracer is not None and tracer.policy.time.virtual,
            dir_rule=self._dir_rule if log_reads else None,
            nr_clock_gettime=sysnums.nr("clock_gettime"),
            nr_gettimeofday=sysnums.nr("gettimeofday"), nr_time=sysnums.nr("time"),
            tramp_base=TRAMP_BASE if trampolines else 0, cell_base=CELL_BASE,
            tramp_code=trampoline.code(),
            log_ring=log.ring if logs else None,    # type: ignore[union-attr]
            slot_dev=area_file[0], slot_ino=area_file[1])
        self._clock_changes = -1
        self._clock_to_engine()
        self.engine.log_reads = log_reads
        if tracer is not None:
            self.engine.seq = tracer.seq          # one numbering for both loops' records
            # A host program run as the handler runs it, where no exec rule has a say.
            self.engine.exec_native = not tracer.policy.processes.exec_rules
            self.engine.identity = tracer.policy.identity is not None

    def _clock_to_engine(self) -> None:
        """Hand the engine the virtual clock's state when the program has set it since."""
        clock = self._clock
        if clock is not None and clock.changes != self._clock_changes:
            self._clock_changes = clock.changes
            self.engine.set_clock(*clock.state())

    def _dir_rule(self, d: bytes) -> bytes:
        """The JSON text of the rule that decides every name in plain directory d (the
        engine's records at log level all): d's own, as plain_dir admits no rule telling
        names there apart from d."""
        assert self._rule_of is not None
        return encode(self._rule_of(d)[1])

    def wait(self) -> tuple[int, int]:
        """The next stop (or exit) the Python loop must handle, the index in step."""
        try:
            return self.engine.wait()
        finally:
            if self.made:
                self.drain()

    def drain(self) -> None:
        """Bring the overlay's index in step with the names the engine made, removed or moved,
        in the order it did (each with the kind it found there right after, note_made). That
        changes no other decision (names in owned directories are decided by the upper layer
        alone, and the engine moves no directory and removes only empty ones; it forgot its
        decisions of those names itself), so the index's new version counts as seen."""
        made = self.made[:]
        self.made.clear()
        before = self._index.version
        self.fs.ov.record(made)
        if self._version == before:
            self._version = self._index.version
            self._index.take_changed()    # its own changes: it forgot those decisions itself

    def _learn(self, d: bytes) -> bool | int | tuple:
        """Called by the engine for a directory it has no answer for (in the middle of a
        stop: `busy` tells the tracer's timer so)."""
        if len(self.plain) >= MAX_DIRS:
            self.plain.clear()
            self.engine.forget_dirs()
        self.busy = True
        try:
            if self.made:
                self.drain()
            return self._decide(d)
        finally:
            self.busy = False

    def _learn_name(self, p: bytes) -> bool | int | tuple:
        """Called by the engine for a name in a directory decided 0 (see `plain`), and for
        the object of a stat it could not answer otherwise: True when it is the host's own;
        DEVICE_PASSED when it is also a character device that a passthrough rule lets the
        program open for writing as on the host (/dev/null & co.: the handlers rewrite such an
        open to the host path, with no record but at level all); a directory of the upper
        layer under upper-layer directories, the upper_dir_stat tuple (its stat is answered in
        C); else False."""
        if len(self.names) >= MAX_DIRS:
            self.names.clear()
        self.busy = True
        try:
            if self.made:
                self.drain()
            got = self.fs.host_name(p) or self.fs.upper_dir_stat(p) or False
            if got is True and self._passes_devices(p):
                got = DEVICE_PASSED
        except Exception as e:  # noqa: BLE001 - not the host's: the Python handlers decide
            if self.error is None:
                self.error = f"deciding {os.fsdecode(p)}: {type(e).__name__}: {e}"
            got = False
        finally:
            self.busy = False
        self.names[p] = got
        return got

    def _passes_devices(self, p: bytes) -> bool:
        """Whether p, the host's own object, is a character device under a passthrough
        rule."""
        if self._rule_of is None or self._rule_of(p)[0] is not FileMode.PASSTHROUGH:
            return False
        try:
            return statmod.S_ISCHR(os.lstat(p).st_mode)
        except OSError:
            return False

    def _decide(self, d: bytes) -> bool | int | tuple:
        """Decide d, its parents first (a plain parent decides its names cheaply)."""
        self.decided += 1
        parent = d[:d.rfind(b"/")] or b"/"
        parent_plain = self.plain.get(parent)
        if parent_plain is None and parent != b"/":
            parent_plain = self._decide(parent)
        try:
            kind: bool | int | tuple | None = None
            if isinstance(parent_plain, tuple) and len(parent_plain) in (2, 3):
                kind = self._below_upper(parent, parent_plain, d)
            if kind is None:
                kind = self.fs.plain_dir(d, parent_plain is True)
                if not kind and self._rule_of is not None:
                    kind = self._owned(d) or self._merged(d)
                if not kind:
                    kind = self._alias(d)
                if not kind and self.fs.host_name_dir(d):
                    kind = 0
                elif not kind and self.fs.shows_itself(d):
                    kind = ITSELF
        except Exception as e:  # noqa: BLE001 - neither: the Python handlers decide
            if self.error is None:
                self.error = f"deciding {os.fsdecode(d)}: {type(e).__name__}: {e}"
            kind = False
        self.plain[d] = kind
        return kind

    def _below_upper(self, p: bytes, decided: tuple, d: bytes) -> bool | tuple | None:
        """d, a name in an owned or a merged directory p (`decided`: p's decision), where
        the host has nothing, decided from p's upper directory alone: True when that has
        nothing at d either (every name in d is ENOENT in the view as on the host: an absent
        plain directory); owned when it has a directory there (no rule tells names in p
        apart: owned_dir's answer, with p's rule and p's inode in the view as d's ".."); None:
        the long way. git probes each objects/XX before it makes it, then uses it: 512
        decisions a commit; tar and mkdir -p in the directory they work in (merged) make one
        for each directory they make."""
        upper = decided[0]
        name = d[d.rfind(b"/") + 1:]
        if name.startswith(WH_PREFIX):
            return None
        try:
            os.lstat(d)              # the host's (an opaque directory above may hide it)
            return None
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError:
            return None
        try:
            st = os.lstat(upper + b"/" + name)
        except FileNotFoundError:
            return True
        except OSError:
            return None
        if not statmod.S_ISDIR(st.st_mode) or self._index.kinds.get(d) != statmod.S_IFDIR:
            return None
        try:
            if len(decided) == 3:        # owned: p is its upper directory alone
                return upper + b"/" + name, decided[1], os.lstat(upper).st_ino
            above = self.fs.ov.entry(p)  # merged: p may keep the host directory's identity
            return (upper + b"/" + name, decided[1],
                    self.fs.dir_ino(p, above.st) if above else 0)
        except OSError:
            return None

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

    def _owned(self, d: bytes) -> tuple[bytes, bytes, int] | bool:
        """(its upper directory, the JSON text of the rule that decides every name in it,
        the view's inode of its parent: the ".." of its listing) when d is owned."""
        upper = self.fs.owned_dir(d)
        if not upper:
            return False
        assert self._rule_of is not None
        rule = self._rule_of(d)[1]      # every name's: owned_dir admits no rule telling apart
        above = self.fs.ov.entry(parent(d))
        return upper, encode(rule) if rule else b"", \
            self.fs.dir_ino(parent(d), above.st) if above else 0

    def _merged(self, d: bytes) -> tuple[bytes, bytes] | bool:
        """(its upper directory, the JSON text of the rule that decides every name in it)
        when d is merged name by name from that directory and the host's d (merged_dir): a
        directory where the program changed something, as a build's after its first object
        file, whose reads would otherwise all be Python's."""
        upper = self.fs.merged_dir(d)
        if not upper:
            return False
        assert self._rule_of is not None
        rule = self._rule_of(d)[1]      # every name's: merged_dir admits no rule telling apart
        return upper, encode(rule) if rule else b""

    def fresh(self) -> None:
        """Forget what was decided around each path the overlay's index changed at since
        (every decision when it cannot tell), and whether stat answers need recorded owners
        patched in; the engine's kept umasks when a umask call started or ended since (it
        keeps none while one runs)."""
        v = self._index.version
        if v != self._version:
            self._version = v
            changed = self._index.take_changed()
            if changed is None or len(self.plain) + len(self.names) > FORGET_SCAN_MAX:
                self.plain.clear()
                self.names.clear()
            else:
                self._forget_around(changed)
            self.engine.forget_dirs()       # the directories it held open with them
        self.engine.stat_ok = not self._meta
        self._clock_to_engine()
        ctx = self._ctx
        if ctx is not None and ctx.umask_changes != self._umask_changes:
            self._umask_changes = ctx.umask_changes     # a umask call started or ended
            self.engine.forget_umasks(not ctx.umask_calls)

    def _forget_around(self, changed: list[bytes]) -> None:
        """Forget the decisions an upper-layer change at each of these guest paths can touch:
        the path's own (a directory made, removed, made opaque, whited out), everything below
        it (what was there), and its directory's stat answer (its link count) and decision,
        unless that directory is owned or merged: the engine looks up each name of those in
        the upper directory (and the host's) at every call, so a name Python made, removed or
        copied up there changes no decision of theirs (as the engine's own changes, note_made).
        The directories further up keep theirs: an upper object below a plain one comes with
        an upper directory for each directory between, each a change of the index at its own
        path; owned and merged ones are decided by their own names. So Python's changes in
        one directory (a program under an identity writing its files, copy-ups in a build's
        directories) leave the rest decided. A path that reaches a plain directory through
        symlinks (an alias) goes too: its directory may be anywhere."""
        plain, names = self.plain, self.names
        doomed: set[bytes] = set()
        below = []
        for g in set(changed):
            below.append(g + b"/")
            doomed.add(g)
            up = parent(g)
            names.pop(up, None)
            kept = plain.get(up)
            if not (type(kept) is tuple and len(kept) in (2, 3)):       # owned, merged
                doomed.add(up)
        prefixes = tuple(below)
        for k in [k for k, v in plain.items() if k in doomed or k.startswith(prefixes)
                  or (type(v) is tuple and len(v) == 1)]:
            del plain[k]
        for k in [k for k in names if k in doomed or k.startswith(prefixes)]:
            del names[k]

    def serve(self, tid: int, slot: int | None, pid: int = 0, changes: bool = True) -> None:
        """Let the engine answer tid's calls (from this slot; pid: its process; changes
        False: its reads only), or not (None)."""
        if slot is None:
            self.engine.disable(tid)
        else:
            self.engine.enable(tid, slot, pid, changes)

    def stub(self, tid: int) -> None:
        """tid runs the slot stub (inject.py): its calls are resumed by the engine, its int3
        and signals come to Python."""
        self.engine.stub(tid)

    def stub_mapped(self, tid: int) -> bool:
        """Whether tid's slot stub mapped the area from an fd the engine found to be the
        area's file (its int3 then needs no look at /proc/PID/maps)."""
        return self.engine.stub_mapped(tid)

    def forget(self, tid: int) -> None:
        """tid is gone: what its open in flight made goes to the index now (no stop of its
        may come, the run may be over)."""
        self.engine.forget(tid)
        if self.made:
            self.drain()

    def log_failure(self) -> str | None:
        """Why the engine could not write a record, if it could not."""
        e = self.engine.log_errno
        return os.strerror(e) if e else None

    def notify(self, pid: int, hand: int) -> None:
        """Answer the notifications of the filter that process pid installs and whose
        listener's number it writes to pipe `hand` (the engine's fd from now on)."""
        os.set_blocking(hand, False)
        self.engine.notify(pid, hand, NOTIFY_MARK)

    def end_notify(self) -> str | None:
        """The listener closed; why it could not be taken, if it could not."""
        self.engine.end_notify()
        e = self.engine.listener_error
        return f"the seccomp listener could not be taken: {os.strerror(e)}" if e else None

    def counts(self) -> "EngineCounts":
        """What the engine answered, and the directories it and Python decided."""
        (stops, exits, signals, by_nr, decided, stubs, tramps, fds, notified, handed,
         handover_stops) = self.engine.counts()
        return EngineCounts(stops, exits, signals, stubs,
                            {sysnums.name(nr): n for nr, n in by_nr.items()}, decided,
                            self.decided, tramps, fds, notified, handed, handover_stops)
