"""What handlers may use: the policy and read-only views of the sandbox, never the tracer.

The tracer provides the real implementation; unit tests provide a small fake.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, BinaryIO, Protocol

from ..fs.dirents import Dirent
from ..fs.resolver import Resolved, View

from ..policy.model import Policy
from .stop import Stop

if TYPE_CHECKING:
    from ..fs.overlayfs import OverlayFS
    from ..virt.clock import VirtualClock
    from ..virt.credentials import Credentials
    from ..virt.machinepolicy import PowerEvent
    from ..virt.modules import VirtualModules
    from ..virt.uts import VirtualUts


class Context(Protocol):
    policy: Policy
    view: "View"                      # the filesystem as the program sees it (for lookups)
    fs: "OverlayFS"                   # where the kernel acts, and the overlay's changes
    clock: "VirtualClock | None"      # the app's virtual clock when the policy has `time:`
    uts: "VirtualUts | None"          # the app's host name when the policy has `hostname:`
    modules: "VirtualModules | None"  # the app's kernel modules under `modules: virtual`

    def read(self, tid: int, addr: int, size: int) -> bytes:
        """Read tracee memory; GuestErrno(EFAULT) on a bad pointer."""

    def resolve(self, stop: Stop, dirfd: int | None, path: bytes, *, follow: bool,
                no_symlinks: bool = False, no_magiclinks: bool = False,
                in_root: bool = False, beneath: bool = False) -> Resolved:
        """Resolve a path argument for the caller (dirfd None or AT_FDCWD: its cwd)."""

    def fd_object(self, tid: int, fd: int) -> Resolved:
        """What fd `fd` of thread `tid` refers to (path if it has one, else a magic object)."""

    def is_member(self, pid: int) -> bool:
        """Whether pid (a process or thread id) belongs to the sandbox."""

    def members_in_group(self, pgid: int) -> tuple[list[int], bool]:
        """(member tgids in process group pgid, whether the group also holds outsiders)."""

    def member_pids(self) -> list[int]:
        """All live member processes (thread-group ids)."""

    def shares_fd_table(self, tid: int) -> bool:
        """Whether another task can change tid's fd table while tid is stopped."""

    def pidfd_target(self, tid: int, fd: int) -> int | None:
        """The pid a pidfd (or /proc/PID directory fd) of tid refers to, if any."""

    def read_string(self, tid: int, addr: int, limit: int) -> bytes:
        """Read a NUL-terminated string of at most `limit` bytes (EFAULT, ERANGE)."""

    def host_call(self, name: str, args: tuple[int | bytes | None, ...],
                  out: dict[int, int]) -> tuple[int, dict[int, bytes]]:
        """Make syscall `name` in the tracer (see tracer.hostcalls); (result, out buffers)."""

    def same_credentials(self, tid: int) -> bool:
        """Whether tid still has the tracer's credentials (so the tracer may act for it)."""

    def credentials_changed(self, tid: int) -> None:
        """tid's process is changing its ids: from now on the kernel acts for it."""

    def virtual_affinity(self, tid: int) -> frozenset[int] | None:
        """The CPU mask tid should see (None: its real one), whatever appvirt pinned it to."""

    def affinity_chosen(self, tid: int) -> None:
        """tid sets its own CPU affinity: appvirt's placement leaves it alone from now on."""

    def dir_listing(self, tid: int, fd: int) -> "list[Dirent] | None":
        """The listing tid must see through directory fd `fd`; None: the kernel's is right."""

    def fd_position(self, tid: int, fd: int) -> int:
        """The file offset of tid's fd (from /proc/TID/fdinfo)."""

    def cwd_path(self, tid: int) -> bytes:
        """tid's working directory as the program knows it (GuestErrno(ENOENT) if deleted)."""

    def socket_name(self, tid: int, fd: int) -> bytes | None:
        """The local address (raw sockaddr) of tid's socket fd; None if it is not a socket."""

    def remember_peer(self, tid: int, fd: int, original: bytes) -> None:
        """tid's socket fd was redirected: getpeername must answer `original`."""

    def remembered_peer(self, tid: int, fd: int) -> bytes | None:
        """The address a redirected socket must show as its peer, if it was redirected."""

    def set_clock(self, realtime_ns: int) -> None:
        """The program set the time: move the virtual clock and keep it in the app's store."""

    def now_ns(self) -> int:
        """CLOCK_REALTIME as the program sees it (the virtual clock's, if any)."""

    real_root: bool          # appvirt runs as root: it can give upper files any owner

    def credentials(self, tid: int) -> "Credentials":
        """tid's virtual credentials (the policy has an identity section)."""

    def set_credentials(self, tid: int, creds: "Credentials") -> None:
        """A virtualized set*id/setgroups/capset changed tid's credentials."""

    def capable(self, tid: int, cap: int) -> bool:
        """Whether tid holds capability `cap` in its virtual identity. Without an identity
        section appvirt does not second-guess the policy: a virtualized operation the policy
        allows succeeds (True)."""

    def open_fd(self, tid: int, fd: int) -> "BinaryIO":
        """The file behind tid's fd, opened for reading by the tracer (GuestErrno(EBADF) if
        the fd is not open, or not open for reading)."""

    def host_modules(self) -> set[str]:
        """Names of the modules the host kernel has loaded."""

    def power(self, event: "PowerEvent", detail: str) -> None:
        """The program switched its machine off or restarted it: end the whole sandboxed tree
        (the launcher then starts the program again, or exits, as the policy says)."""

    def machine_file(self, tid: int, path: bytes) -> bytes | None:
        """A host path holding what reading the machine file `path` (/proc/modules,
        /proc/sys/kernel/hostname ...) must show, when appvirt virtualizes it; else None."""

    def sysctl_file(self, tid: int, r: Resolved) -> bytes:
        """The host path of a new spool file for an open of sysctl `r` (under /proc/sys) for
        writing, whose content becomes the app's value; GuestErrno where the host would
        refuse the open (or EROFS when sysctls cannot be virtualized)."""

    def sysctl_abandoned(self, host: bytes) -> None:
        """The open of that spool file failed: forget it."""

    def umask(self, tid: int) -> int:
        """tid's file mode creation mask."""

    def umask_changing(self, tid: int, running: bool) -> None:
        """tid's umask call starts (running) or has ended: a umask kept for any process may
        be stale (threads, and processes made with CLONE_FS, share theirs)."""

    def reserve_process(self, tid: int, limit: int) -> bool:
        """Whether tid may create one more process with `limit` processes at most (the
        sandbox's live thread groups plus the creations in flight); if so, count it as in
        flight until its child is followed or the call fails (release_process)."""

    def release_process(self, tid: int) -> None:
        """tid's process creation finished (failed, or its child is now a member)."""

    def host_resolves_alike(self, stop: Stop, path: bytes, guest: bytes) -> bool:
        """Whether the kernel, walking `path` on the host for the caller, reaches `guest`."""
