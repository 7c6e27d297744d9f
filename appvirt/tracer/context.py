"""The tracer's implementation of the handlers' Context: reads tracee state from /proc."""

from __future__ import annotations

import ctypes
import errno
import os
import time
from typing import TYPE_CHECKING, BinaryIO

from ..core.stop import Stop
from ..errors import GuestErrno
from ..fs.dirents import host_listing
from ..fs.resolver import HOST, Caller, Resolved, View, follow_magic, resolve
from ..policy.model import Policy
from ..store import Store
from ..virt.clock import VirtualClock
from ..virt.clockstore import save_clock
from ..virt.identity import VirtualIdentity
from ..virt.procpolicy import ProcView
from ..virt.uts import VirtualUts
from ..fs.writeback import WriteBacks
from .hostcalls import host_syscall
from .memory import TraceeMemory
from .sysctlfiles import SysctlFiles
from .tasks import Tasks

if TYPE_CHECKING:       # imported where used: most policies have neither
    from ..virt.credentials import Credentials
    from ..virt.modules import VirtualModules

AT_FDCWD = -100


class TracerContext:
    """Everything a handler may ask about the sandbox, answered from the live tracees."""

    def __init__(self, policy: Policy, tasks: Tasks, memory: TraceeMemory) -> None:
        self.policy = policy
        self.tasks = tasks
        self.memory = memory
        self.placement = None      # set by the launcher when CPU placement is on
        self.view: View = HOST     # the filesystem as the program sees it
        self.fs = None             # the OverlayFS (set by the launcher)
        self.peers: dict[tuple[int, int], tuple[int, bytes]] = {}   # redirected sockets
        self.clock: VirtualClock | None = None
        self.store: Store | None = None
        self.uts: VirtualUts | None = None
        self.modules: VirtualModules | None = None
        self.identity = VirtualIdentity(policy.identity.start()) if policy.identity else None
        self.real_root = os.geteuid() == 0
        self.machine = None        # MachineFiles (set by the launcher)
        self.on_power = None       # Tracer.end_machine (set by the tracer)
        # With the app's store (tracer/storefiles.py): what programs write to registry and
        # /proc/sys files, folded into the store at sync points; the /proc/sys files.
        self.writebacks: WriteBacks | None = None
        self.sysctl: SysctlFiles | None = None
        # umask calls running (their threads), and how many started or ended: the compiled
        # loop keeps processes' umasks while none runs, forgetting them at each (fastpath.py).
        self.umask_calls: set[int] = set()
        self.umask_changes = 0

    def read(self, tid: int, addr: int, size: int) -> bytes:
        return self.memory.read(tid, addr, size)

    def _cwd(self, tid: int) -> bytes:
        try:
            cwd = os.readlink(f"/proc/{tid}/cwd".encode())
        except OSError as e:
            raise GuestErrno(e.errno or errno.ENOENT, "cwd") from None
        if not cwd.startswith(b"/") or (cwd.endswith(b" (deleted)") and not _same(
                f"/proc/{tid}/cwd".encode(), cwd)):
            raise GuestErrno(errno.ENOENT, "the working directory was deleted")
        return self._guest(cwd)

    def _guest(self, host: bytes) -> bytes:
        guest = self.view.to_guest(host)
        if guest is None:
            raise GuestErrno(errno.ENOENT, "a directory outside the program's view")
        return guest

    def _dir_of(self, tid: int, dirfd: int | None) -> bytes:
        if dirfd is None or dirfd == AT_FDCWD:
            return self._cwd(tid)
        if dirfd < 0:
            raise GuestErrno(errno.EBADF, f"bad dirfd {dirfd}")
        link = f"/proc/{tid}/fd/{dirfd}".encode()
        try:
            target = os.readlink(link)
        except FileNotFoundError:
            raise GuestErrno(errno.EBADF, f"fd {dirfd} is not open") from None
        except OSError as e:
            raise GuestErrno(e.errno or errno.EBADF, "dirfd") from None
        if not target.startswith(b"/"):
            raise GuestErrno(errno.ENOTDIR, "dirfd is not a directory")
        if target.endswith(b" (deleted)") and not _same(link, target):
            raise GuestErrno(errno.ENOENT, "dirfd's directory was deleted")
        return self._guest(target)

    def _caller(self, stop: Stop) -> Caller:
        return Caller(stop.tid, stop.pid, self.tasks.is_member)

    def resolve(self, stop: Stop, dirfd: int | None, path: bytes, *, follow: bool,
                no_symlinks: bool = False, no_magiclinks: bool = False,
                in_root: bool = False, beneath: bool = False) -> Resolved:
        base = b"/" if path.startswith(b"/") and not (in_root or beneath) else \
            self._dir_of(stop.tid, dirfd)
        return resolve(self._caller(stop), base, path, follow=follow, no_symlinks=no_symlinks,
                       no_magiclinks=no_magiclinks, root=base if in_root else None,
                       beneath=beneath, view=self.view)

    def fd_object(self, tid: int, fd: int) -> Resolved:
        task = self.tasks.by_tid.get(tid)
        pid = task.pid if task else tid
        if fd == AT_FDCWD:
            return resolve(Caller(tid, pid, self.tasks.is_member), self._cwd(tid), b".",
                           follow=True, view=self.view)
        if fd < 0:
            raise GuestErrno(errno.EBADF, f"bad fd {fd}")
        parts = [b"proc", str(tid).encode(), b"fd", str(fd).encode()]
        try:
            got = follow_magic(parts, Caller(tid, pid, self.tasks.is_member), self.view)
        except GuestErrno as e:
            raise GuestErrno(errno.EBADF if e.errno == errno.ENOENT else e.errno) from None
        if isinstance(got, bytes):
            return Resolved(got, self.view.lstat(got))
        return Resolved(b"/proc/%d/fd/%d" % (tid, fd), None, magic=got)

    def is_member(self, pid: int) -> bool:
        return self.tasks.is_member(pid)

    def members_in_group(self, pgid: int) -> tuple[list[int], bool]:
        return self.tasks.members_in_group(pgid)

    def member_pids(self) -> list[int]:
        return self.tasks.member_pids()

    def reserve_process(self, tid: int, limit: int) -> bool:
        if self.tasks.live_processes() >= limit:
            return False
        self.tasks.forking.add(tid)
        return True

    def release_process(self, tid: int) -> None:
        self.tasks.forking.discard(tid)

    def shares_fd_table(self, tid: int) -> bool:
        return self.tasks.shares_fd_table(tid)

    def read_string(self, tid: int, addr: int, limit: int) -> bytes:
        return self.memory.read_cstring(tid, addr, limit)

    def host_call(self, name: str, args: tuple[int | bytes | None, ...],
                  out: dict[int, int]) -> tuple[int, dict[int, bytes]]:
        return host_syscall(name, args, out)

    def same_credentials(self, tid: int) -> bool:
        task = self.tasks.by_tid.get(tid)
        return task is not None and task.pid not in self.tasks.foreign_creds

    def credentials_changed(self, tid: int) -> None:
        """A thread's set*id call succeeded: its process acts with other rights than the
        tracer's, unless every thread of it has the tracer's very ids and capabilities (a
        call that changed nothing, as GNU make's switches between equal real and effective
        ids: its whole build would otherwise lose the compiled loop)."""
        task = self.tasks.by_tid.get(tid)
        if task is None:
            return
        tids = self.tasks.threads.get(task.pid) or {tid}
        mine = _credentials("self")
        if all(_credentials(t) == mine for t in tids):
            self.tasks.foreign_creds.discard(task.pid)
        else:
            self.tasks.foreign_creds.add(task.pid)

    def virtual_affinity(self, tid: int) -> frozenset[int] | None:
        return self.placement.virtual_mask(tid) if self.placement else None

    def affinity_chosen(self, tid: int) -> None:
        if self.placement:
            self.placement.unmanaged.add(tid)

    def dir_listing(self, tid: int, fd: int):
        own_proc = self.policy.processes.proc is ProcView.OWN
        if self.view is HOST and not own_proc:
            return None
        try:
            host = os.readlink(f"/proc/{tid}/fd/{fd}".encode())
        except OSError:
            return None            # not open: the kernel answers EBADF
        if not host.startswith(b"/"):
            return None
        listing = self.view.listing(host)
        if own_proc and host == b"/proc":
            listing = [d for d in listing or host_listing(host)
                       if not d.name.isdigit() or self.is_member(int(d.name))]
        return listing

    def fd_position(self, tid: int, fd: int) -> int:
        try:
            with open(f"/proc/{tid}/fdinfo/{fd}", "rb") as f:
                for line in f:
                    if line.startswith(b"pos:"):
                        return int(line.split()[1])
        except (OSError, ValueError):
            pass
        raise GuestErrno(errno.EBADF, f"fd {fd}")

    def cwd_path(self, tid: int) -> bytes:
        return self._cwd(tid)

    def _fd_inode(self, tid: int, fd: int) -> int | None:
        try:
            return os.stat(f"/proc/{tid}/fd/{fd}").st_ino
        except OSError:
            return None

    def socket_name(self, tid: int, fd: int) -> bytes | None:
        task = self.tasks.by_tid.get(tid)
        return socket_name_of(task.pid if task else tid, fd)

    def remember_peer(self, tid: int, fd: int, original: bytes) -> None:
        task = self.tasks.by_tid.get(tid)
        ino = self._fd_inode(tid, fd)
        if task is not None and ino is not None:
            self.peers[(task.pid, fd)] = (ino, original)

    def remembered_peer(self, tid: int, fd: int) -> bytes | None:
        task = self.tasks.by_tid.get(tid)
        hit = self.peers.get((task.pid if task else tid, fd))
        # The fd may have been closed and reused since: the socket must be the same one.
        return hit[1] if hit is not None and hit[0] == self._fd_inode(tid, fd) else None

    def now_ns(self) -> int:
        return self.clock.now(0) if self.clock is not None else time.time_ns()

    def host_resolves_alike(self, stop: Stop, path: bytes, guest: bytes) -> bool:
        if self.view is HOST:
            return True
        try:
            base = b"/" if path.startswith(b"/") else self._dir_of(stop.tid, None)
            if self.view.to_guest(base) != base:
                return False
            r = resolve(self._caller(stop), base, path, follow=True, view=HOST)
        except GuestErrno:
            return False
        return r.path == guest

    def umask(self, tid: int) -> int:
        try:
            with open(f"/proc/{tid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"Umask:"):
                        return int(line.split()[1], 8)
        except (OSError, ValueError):
            pass
        return 0o022

    def umask_changing(self, tid: int, running: bool) -> None:
        (self.umask_calls.add if running else self.umask_calls.discard)(tid)
        self.umask_changes += 1

    def set_clock(self, realtime_ns: int) -> None:
        assert self.clock is not None
        saved = self.clock.set_realtime(realtime_ns)
        if self.store is not None:
            save_clock(self.store, saved)

    def credentials(self, tid: int) -> Credentials:
        assert self.identity is not None
        task = self.tasks.by_tid.get(tid)
        return self.identity.of(tid, task.pid if task else None)

    def set_credentials(self, tid: int, creds: Credentials) -> None:
        assert self.identity is not None
        self.identity.set(tid, creds)

    def capable(self, tid: int, cap: int) -> bool:
        # Without an identity section the policy's allowance alone decides.
        return self.identity is None or self.credentials(tid).capable(cap)

    def open_fd(self, tid: int, fd: int) -> BinaryIO:
        try:
            with open(f"/proc/{tid}/fdinfo/{fd}", "rb") as info:
                for line in info:
                    if line.startswith(b"flags:") and int(line.split()[1], 8) & 3 == 1:
                        raise GuestErrno(errno.EBADF, "fd not open for reading")
            return open(f"/proc/{tid}/fd/{fd}", "rb")
        except (FileNotFoundError, ValueError):
            raise GuestErrno(errno.EBADF, f"fd {fd}") from None
        except OSError as e:
            raise GuestErrno(e.errno or errno.EBADF, f"fd {fd}") from None

    def host_modules(self) -> set[str]:
        from ..virt.modules import host_module_names
        return host_module_names(read_host_proc_modules())

    def power(self, event, detail: str) -> None:
        self.on_power(event, detail)

    def machine_file(self, tid: int, path: bytes) -> bytes | None:
        return None if self.machine is None else self.machine.serve(path)

    def sysctl_file(self, tid: int, r: Resolved) -> bytes:
        if self.sysctl is None:
            raise GuestErrno(errno.EROFS, "sysctls cannot be set without the app's store",
                             rule="builtin:sysctl")
        return self.sysctl.open_for_write(r.path, r.st, self._fs_root(tid))

    def sysctl_abandoned(self, host: bytes) -> None:
        if self.sysctl is not None:
            self.sysctl.abandon(host)

    def _fs_root(self, tid: int) -> bool:
        """Whether tid accesses files as root (its fsuid, virtual or real, is 0)."""
        if self.identity is not None:
            return self.credentials(tid).fsuid == 0
        if self.same_credentials(tid):
            return os.geteuid() == 0
        try:
            with open(f"/proc/{tid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"Uid:"):
                        return int(line.split()[4]) == 0
        except (OSError, ValueError, IndexError):
            pass
        return False

    def pidfd_target(self, tid: int, fd: int) -> int | None:
        try:
            with open(f"/proc/{tid}/fdinfo/{fd}", "rb") as f:
                for line in f:
                    if line.startswith(b"Pid:"):
                        return int(line.split()[1])
            target = os.readlink(f"/proc/{tid}/fd/{fd}".encode())
        except (OSError, ValueError):
            return None
        parts = target.split(b"/")
        if len(parts) == 3 and parts[1] == b"proc" and parts[2].isdigit():
            return int(parts[2])
        return None


_libc = ctypes.CDLL(None, use_errno=True)
SYS_PIDFD_GETFD = 438


def socket_name_of(pid: int, fd: int) -> bytes | None:
    """getsockname of another process's socket, through a copy of its fd (pidfd_getfd; the
    tracer may, being its tracer)."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        ours = _libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if ours < 0:
            return None
        try:
            buf = ctypes.create_string_buffer(128)
            size = ctypes.c_uint(128)
            if _libc.getsockname(ours, buf, ctypes.byref(size)) != 0:
                return None
            return buf.raw[:size.value]
        finally:
            os.close(ours)
    finally:
        os.close(pidfd)


def read_host_proc_modules() -> bytes:
    """The host's /proc/modules (empty on a kernel without module support)."""
    try:
        with open("/proc/modules", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _same(a: bytes, b: bytes) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


_CREDENTIAL_LINES = (b"Uid:", b"Gid:", b"Groups:", b"CapInh:", b"CapPrm:", b"CapEff:",
                     b"CapBnd:", b"CapAmb:")


def _credentials(task: int | str) -> tuple[bytes, ...] | None:
    """A task's ids, groups and capabilities, as /proc/TASK/status shows them (None: gone)."""
    try:
        with open(f"/proc/{task}/status", "rb") as f:
            return tuple(line for line in f if line.startswith(_CREDENTIAL_LINES))
    except OSError:
        return None
