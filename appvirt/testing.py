"""Test helpers for handlers: build stops and a fake sandbox without ptrace.

Handlers are functions of (Stop, Context); `FakeContext` answers the Context questions from
plain data and resolves paths with the real resolver (on whatever filesystem the test set
up, e.g. pyfakefs), so handler tests exercise the real decision logic.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

from .core.stop import Stop
from .errors import GuestErrno
from .fs.resolver import HOST, Caller, Resolved, resolve
from .handlers import TABLE
from .policy.model import Policy

AT_FDCWD = -100


def handle(stop: Stop, ctx: "FakeContext"):
    """Run a stop's handler as the tracer does: an errno raised on the way is the answer."""
    from .core.action import Deny, Note
    try:
        return stop.entry.handler(stop, ctx)
    except GuestErrno as e:
        return Deny(e.errno, Note(rule=e.rule, detail=e.detail), native=not e.rule)


def make_stop(name: str, *args: int, paths: dict[int, bytes | None] | None = None,
              tid: int = 1000, pid: int = 1000) -> Stop:
    """A seccomp stop of syscall `name` with the given arguments and pre-read paths."""
    entry = TABLE.by_name[name]
    full = tuple(a & 0xFFFFFFFFFFFFFFFF for a in (list(args) + [0] * 6)[:6])
    paths = paths or {}
    return Stop(tid, pid, entry, full, tuple(paths.get(i) for i in entry.path_args))  # type: ignore[arg-type]


@dataclass
class FakeContext:
    """A sandbox of one process, described by data."""

    policy: Policy
    cwd: bytes = b"/"
    members: set[int] = field(default_factory=lambda: {1000})
    fds: dict[int, bytes] = field(default_factory=dict)       # fd -> path of its file
    memory: dict[int, bytes] = field(default_factory=dict)    # address -> bytes there
    shared_fds: bool = False
    groups: dict[int, tuple[list[int], bool]] = field(default_factory=dict)
    umask_calls: set[int] = field(default_factory=set)        # threads in a umask call

    def read(self, tid: int, addr: int, size: int) -> bytes:
        for base, data in self.memory.items():
            if base <= addr and addr + size <= base + len(data):
                return data[addr - base:addr - base + size]
        raise GuestErrno(errno.EFAULT, f"bad address {addr:#x}")

    def resolve(self, stop: Stop, dirfd: int | None, path: bytes, *, follow: bool,
                no_symlinks: bool = False, no_magiclinks: bool = False,
                in_root: bool = False, beneath: bool = False) -> Resolved:
        base = self.cwd if dirfd in (None, AT_FDCWD) else self.fds.get(dirfd)
        if base is None:
            raise GuestErrno(errno.EBADF)
        return resolve(Caller(stop.tid, stop.pid, self.is_member), base, path, follow=follow,
                       no_symlinks=no_symlinks, no_magiclinks=no_magiclinks,
                       root=base if in_root else None, beneath=beneath,
                       view=self.view or HOST)

    def fd_object(self, tid: int, fd: int) -> Resolved:
        path = self.cwd if fd == AT_FDCWD else self.fds.get(fd)
        if path is None:
            raise GuestErrno(errno.EBADF)
        try:
            st = os.lstat(path)
        except OSError:
            st = None
        return Resolved(path, st)

    def is_member(self, pid: int) -> bool:
        return pid in self.members

    def members_in_group(self, pgid: int) -> tuple[list[int], bool]:
        return self.groups.get(pgid, ([], False))

    def member_pids(self) -> list[int]:
        return sorted(self.members)

    forking: set[int] = field(default_factory=set)

    def reserve_process(self, tid: int, limit: int) -> bool:
        if len(self.members) + len(self.forking) >= limit:
            return False
        self.forking.add(tid)
        return True

    def release_process(self, tid: int) -> None:
        self.forking.discard(tid)

    def shares_fd_table(self, tid: int) -> bool:
        return self.shared_fds

    foreign_creds: bool = False

    def pidfd_target(self, tid: int, fd: int) -> int | None:
        return None

    def read_string(self, tid: int, addr: int, limit: int) -> bytes:
        data = self.memory.get(addr)
        if data is None:
            raise GuestErrno(errno.EFAULT, f"bad address {addr:#x}")
        end = data.find(b"\0")
        if end < 0 or end >= limit:
            raise GuestErrno(errno.ERANGE, "string too long")
        return data[:end]

    host_calls: list = field(default_factory=list)   # (name, args, out) the handlers made
    host_result: int = 0

    def host_call(self, name: str, args, out):
        """Record the call; answer `host_result` with zeroed output buffers."""
        self.host_calls.append((name, args, dict(out)))
        return self.host_result, {i: bytes(n) for i, n in out.items()}

    affinity: frozenset[int] | None = None
    chosen_affinity: set[int] = field(default_factory=set)

    def virtual_affinity(self, tid: int) -> frozenset[int] | None:
        return None if tid in self.chosen_affinity else self.affinity

    def affinity_chosen(self, tid: int) -> None:
        self.chosen_affinity.add(tid)

    listings: dict[int, list] = field(default_factory=dict)   # dir fd -> merged listing
    positions: dict[int, int] = field(default_factory=dict)   # fd -> file offset

    def dir_listing(self, tid: int, fd: int):
        return self.listings.get(fd)

    def fd_position(self, tid: int, fd: int) -> int:
        return self.positions.get(fd, 0)

    def cwd_path(self, tid: int) -> bytes:
        return self.cwd

    socket_names: dict[int, bytes] = field(default_factory=dict)
    peers: dict[int, bytes] = field(default_factory=dict)

    def socket_name(self, tid: int, fd: int) -> bytes | None:
        return self.socket_names.get(fd)

    def remember_peer(self, tid: int, fd: int, original: bytes) -> None:
        self.peers[fd] = original

    def remembered_peer(self, tid: int, fd: int) -> bytes | None:
        return self.peers.get(fd)

    clock: object = None          # a VirtualClock for time handlers
    clock_sets: list = field(default_factory=list)

    def set_clock(self, realtime_ns: int) -> None:
        self.clock_sets.append(realtime_ns)
        if self.clock is not None:
            self.clock.set_realtime(realtime_ns)

    view: object = field(default=None)
    fs: object = field(default=None)
    uts: object = None            # a VirtualUts for host-name handlers
    caps: frozenset[int] = frozenset(range(41))       # the caller's effective capabilities
    machine_files: dict[bytes, bytes] = field(default_factory=dict)   # guest -> spool path

    power_events: list = field(default_factory=list)
    modules: object = None        # a VirtualModules under `modules: virtual`
    loaded_on_host: set = field(default_factory=set)

    def open_fd(self, tid: int, fd: int):
        path = self.fds.get(fd)
        if path is None:
            raise GuestErrno(errno.EBADF)
        return open(path, "rb")

    def host_modules(self) -> set[str]:
        return set(self.loaded_on_host)

    def power(self, event, detail: str) -> None:
        self.power_events.append(event)

    def capable(self, tid: int, cap: int) -> bool:
        if self.policy.identity is not None:
            return self.credentials(tid).capable(cap)
        return cap in self.caps

    creds: dict = field(default_factory=dict)          # tid -> virtual Credentials
    real_root: bool = True

    def credentials(self, tid: int):
        assert self.policy.identity is not None
        return self.creds.get(tid) or self.policy.identity.start()

    def set_credentials(self, tid: int, creds) -> None:
        self.creds[tid] = creds

    def machine_file(self, tid: int, path: bytes) -> bytes | None:
        return self.machine_files.get(path)

    sysctl_spool: object = None    # a SysctlFiles for /proc/sys writes; None: EROFS

    def sysctl_file(self, tid: int, r: Resolved) -> bytes:
        if self.sysctl_spool is None:
            raise GuestErrno(errno.EROFS, "no store", rule="builtin:sysctl")
        return self.sysctl_spool.open_for_write(r.path, r.st, True)

    def sysctl_abandoned(self, host: bytes) -> None:
        if self.sysctl_spool is not None:
            self.sysctl_spool.abandon(host)

    def use_overlay(self, upper: bytes = b"/.appvirt-upper") -> "FakeContext":
        """Give the fake sandbox a real Overlay (on whatever filesystem the test set up, e.g.
        pyfakefs) as its view and filesystem; its upper layer is hidden from the view."""
        from .fs.overlayfs import OverlayFS
        from .overlay import Overlay
        ov = Overlay(upper, mode_of=lambda g: self.policy.files.mode_for(g)[0],
                     hidden_host=(upper,))
        self.fs = self.view = OverlayFS(ov, self.policy.files.rules, hidden=(upper,),
                                        kernel_lookups=False)
        return self

    def now_ns(self) -> int:
        import time
        return self.clock.now(0) if self.clock is not None else time.time_ns()

    def umask(self, tid: int) -> int:
        return 0o022

    def umask_changing(self, tid: int, running: bool) -> None:
        (self.umask_calls.add if running else self.umask_calls.discard)(tid)

    def host_resolves_alike(self, stop: Stop, path: bytes, guest: bytes) -> bool:
        base = self.cwd if not path.startswith(b"/") else b"/"
        try:
            return resolve(Caller(stop.tid, stop.pid, self.is_member), base, path,
                           follow=True).path == guest
        except GuestErrno:
            return False

    def same_credentials(self, tid: int) -> bool:
        return not self.foreign_creds

    def credentials_changed(self, tid: int) -> None:
        self.foreign_creds = True
