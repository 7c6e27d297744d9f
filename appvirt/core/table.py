"""The one syscall table: it drives dispatch, the seccomp filter, `appvirt syscalls` and the
table tests.

The modules of appvirt.syscalls declare the calls, one module per operation class, and
`syscalls.ALL_ENTRIES` merges them: what the filter, `appvirt syscalls` and the dispatcher
need to know of each call, and the handler module whose HANDLERS holds its handler. That
module is imported at the call's first dispatch, so a run imports the handlers of the calls
its program makes, not all of them; an import that fails denies the call (the dispatcher
turns any exception of a handler into EPERM). Every x86_64 syscall is either in the table
(traced), in `UNTRACED` (allowed at native speed), or unknown; the filter traces unknown
numbers, and the dispatcher refuses them with ENOSYS (fail closed).
"""

import enum
import importlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, NamedTuple, Union

from . import sysnums
from .kind import kind_hash, other_kind, same_kind

if TYPE_CHECKING:
    from ..policy.model import Policy
    from .action import Action
    from .stop import Stop
    from .context import Context


class OpClass(enum.Enum):
    """The operation classes the product intercepts (also the log's `class`)."""

    FILE = "file"
    PROCESS = "process"
    TIME = "time"
    NETWORK = "network"
    SYSTEM = "system"
    IDENTITY = "identity"


class Support(enum.Enum):
    FULL = "full"          # handled as the policy says
    PARTIAL = "partial"    # handled, with a documented gap (see the note)
    DENIED = "denied"      # always refused: it would bypass or defeat the sandbox


Handler = Callable[["Stop", "Context"], "Action"]
_RESOLVED: dict[tuple[str, str], Handler] = {}     # (module, name) -> the handler found there


# --- BPF prefilters: trace only when register arguments match (else run natively) --------------
# Named tuples compared by kind (kind.py): an ArgIn is never equal to an ArgNotIn.


class ArgBitsAny(NamedTuple):
    """Trace when (low 32 bits of arg) & mask != 0."""

    arg: int
    mask: int

    __eq__, __ne__, __hash__ = same_kind, other_kind, kind_hash


class ArgIn(NamedTuple):
    """Trace when the low 32 bits of arg are one of `values`."""

    arg: int
    values: frozenset[int]

    __eq__, __ne__, __hash__ = same_kind, other_kind, kind_hash


class ArgNotIn(NamedTuple):
    """Trace when the low 32 bits of arg are none of `values` (an allowlist)."""

    arg: int
    values: frozenset[int]

    __eq__, __ne__, __hash__ = same_kind, other_kind, kind_hash


class ArgHighIn(NamedTuple):
    """Trace when the high 32 bits of arg are one of `values` (an address window)."""

    arg: int
    values: frozenset[int]

    __eq__, __ne__, __hash__ = same_kind, other_kind, kind_hash


class ArgHighNotIn(NamedTuple):
    """Trace when the high 32 bits of arg are none of `values` (e.g. a length >= 4 GiB)."""

    arg: int
    values: frozenset[int]

    __eq__, __ne__, __hash__ = same_kind, other_kind, kind_hash


class ArgBitsClear(NamedTuple):
    """Trace when (low 32 bits of arg) & mask == 0 (e.g. a clone without CLONE_THREAD)."""

    arg: int
    mask: int

    __eq__, __ne__, __hash__ = same_kind, other_kind, kind_hash


TraceCondition = Union[ArgBitsAny, ArgBitsClear, ArgIn, ArgNotIn, ArgHighIn, ArgHighNotIn]


class SyscallEntry(NamedTuple):
    """How appvirt handles one system call (a named tuple: the table makes hundreds at start)."""

    name: str
    op: OpClass
    module: str                            # the module whose HANDLERS[name] is the handler
    support: Support = Support.FULL
    note: str = ""
    path_args: tuple[int, ...] = ()        # arguments the dispatcher reads as C strings
    nullable_paths: tuple[int, ...] = ()   # of those, the ones where NULL is legal
    trace_if: tuple[TraceCondition, ...] = ()   # any matching condition traces; () = always
    needs_exit: bool = False               # the handler may continue the call and see its exit
    enabled: Callable[["Policy"], bool] | None = None   # traced only when the policy needs it
    # Prefilters that depend on the policy; replaces trace_if when given.
    trace_if_for: Callable[["Policy"], tuple[TraceCondition, ...]] | None = None

    @property
    def handler(self) -> Handler:
        """The handler, its module imported at the first use (an import that fails raises
        here, in the dispatcher, which denies the call)."""
        handler = _RESOLVED.get((self.module, self.name))
        if handler is None:
            handler = importlib.import_module(self.module).HANDLERS[self.name]
            _RESOLVED[self.module, self.name] = handler
        return handler

    @property
    def nr(self) -> int:
        return sysnums.nr(self.name)

    def conditions(self, policy: "Policy") -> tuple[TraceCondition, ...] | None:
        """When this call stops under `policy`: None never, () always, else when any of the
        conditions holds."""
        if self.enabled is not None and not self.enabled(policy):
            return None
        return self.trace_if_for(policy) if self.trace_if_for is not None else self.trace_if


# Syscalls that run natively: they cannot name a path, another process, the clock, the network
# or machine state, or their effect is confined to the caller (memory, its own fds, signals to
# itself). Anything not listed here and not in the table is traced and refused.
UNTRACED: frozenset[str] = frozenset("""
read write close lseek brk rt_sigaction rt_sigprocmask rt_sigreturn
pread64 pwrite64 readv writev pipe sched_yield msync mincore mprotect
pkey_mprotect pkey_alloc pkey_free mlock munlock mlockall munlockall mlock2 mbind set_mempolicy
get_mempolicy set_mempolicy_home_node membarrier mseal map_shadow_stack
dup dup2 dup3 pipe2 fstatfs fgetxattr flistxattr ustat sysfs ftruncate fallocate fsync fdatasync sync syncfs sync_file_range
readahead fadvise64 flock fchdir close_range
sendfile splice tee vmsplice copy_file_range preadv pwritev preadv2 pwritev2
socketpair setsockopt getsockopt getsockname shutdown recvfrom recvmsg recvmmsg
accept accept4
pause getitimer setitimer alarm timer_create timer_settime
timer_gettime timer_getoverrun timer_delete timerfd_create timerfd_settime timerfd_gettime
clock_getres times
getpid getppid gettid getpgrp getpgid getsid setpgid setsid set_tid_address
exit exit_group wait4 waitid restart_syscall
sysinfo getrusage getrlimit getcpu getrandom getpriority ioprio_get get_robust_list
set_robust_list rseq futex_waitv futex_wake futex_wait futex_requeue
rt_sigpending rt_sigtimedwait rt_sigsuspend sigaltstack
sched_getparam sched_getscheduler sched_get_priority_max sched_get_priority_min
sched_rr_get_interval sched_getattr
modify_ldt set_thread_area get_thread_area
shmget shmctl shmdt semget semop semctl semtimedop msgget msgsnd msgrcv msgctl
mq_timedsend mq_timedreceive mq_notify mq_getsetattr
io_destroy io_getevents io_cancel io_pgetevents
epoll_create epoll_create1 epoll_ctl epoll_pwait2 epoll_ctl_old
epoll_wait_old signalfd signalfd4 eventfd eventfd2
inotify_init inotify_init1 inotify_rm_watch memfd_create
process_madvise process_mrelease cachestat statmount listmount
landlock_create_ruleset landlock_add_rule landlock_restrict_self
lsm_get_self_attr lsm_set_self_attr lsm_list_modules uprobe uretprobe
""".split())


# Calls that must never reach the kernel, whatever a handler decides: the single place that
# applies actions turns an Allow or Rewrite of these into EPERM (fail closed, even on a bug).
NEVER_PROCEED: frozenset[str] = frozenset("""
reboot kexec_load kexec_file_load init_module finit_module delete_module
mount umount2 pivot_root chroot open_tree open_tree_attr move_mount fsopen fsconfig fsmount
fspick mount_setattr swapon swapoff settimeofday clock_settime adjtimex clock_adjtime
sethostname setdomainname iopl ioperm bpf ptrace process_vm_writev unshare setns
io_uring_setup userfaultfd acct
""".split())


class SyscallTable:
    """The merged table, indexed by syscall number."""

    def __init__(self, entries: Iterable[SyscallEntry]) -> None:
        self.entries: tuple[SyscallEntry, ...] = tuple(entries)
        self.by_name: dict[str, SyscallEntry] = {}
        self.position: dict[str, int] = {}     # name -> index in `entries`
        self.by_nr: list[SyscallEntry | None] = [None] * (sysnums.MAX_NR + 1)
        for i, e in enumerate(self.entries):
            if e.name not in sysnums.NR_BY_NAME:
                raise ValueError(f"table entry {e.name!r} is not an x86_64 syscall")
            if e.name in self.by_name:
                raise ValueError(f"duplicate table entry {e.name!r}")
            if e.name in UNTRACED:
                raise ValueError(f"{e.name!r} is both traced and untraced")
            self.by_name[e.name] = e
            self.position[e.name] = i
            self.by_nr[e.nr] = e

    def traced_for(self, policy: "Policy") -> dict[str, tuple[TraceCondition, ...]]:
        """The entries that stop under `policy`, with their conditions (for the filter)."""
        return {e.name: c for e in self.entries if (c := e.conditions(policy)) is not None}

    def lookup(self, nr: int) -> SyscallEntry | None:
        return self.by_nr[nr] if 0 <= nr < len(self.by_nr) else None

    def unclassified(self) -> list[str]:
        """Known syscalls that are neither traced nor deliberately untraced."""
        return sorted(n for n in sysnums.NR_BY_NAME if n not in self.by_name and n not in UNTRACED)
