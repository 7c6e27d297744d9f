"""Who is in the sandbox: every traced thread, grouped into processes."""

import ctypes
import errno
import os
from typing import NamedTuple

from ..core.action import ExitHook

SYS_KCMP = 312
KCMP_FILES = 2
_libc = ctypes.CDLL(None, use_errno=True)


class Pending(NamedTuple):
    """A call the tracer let run and must see again at its exit stop."""

    seq: int                                  # log sequence of its record (0: not logged)
    nr: int                                   # the call's own number
    regs: object                              # its registers at entry (None: untouched)
    on_exit: ExitHook | None
    stop: object                              # the Stop (for the hook)
    log_result: bool


class Task:
    """One traced thread."""

    __slots__ = ("tid", "pid", "started", "pending", "restarts", "injection", "held_signals")

    def __init__(self, tid: int, pid: int) -> None:
        self.tid = tid
        self.pid = pid                            # thread-group id
        self.started = False                      # its first stop has been seen and resumed
        self.pending: Pending | None = None
        self.restarts = 0
        self.injection: object | None = None      # an Injection while the slot area is mapped in
        self.held_signals: list[int] = []

    def __repr__(self) -> str:
        return f"Task(tid={self.tid}, pid={self.pid})"


class Tasks:
    """The registry of traced threads and processes."""

    def __init__(self) -> None:
        self.by_tid: dict[int, Task] = {}
        self.threads: dict[int, set[int]] = {}      # tgid -> tids
        self.slot_ready: dict[int, bool] = {}       # tgid -> its address space has the slots
        self.program: dict[int, str] = {}           # tgid -> executable (for the log)
        self.foreign_creds: set[int] = set()        # tgids whose ids may differ from ours
        self.forking: set[int] = set()              # tids in fork/clone, child not yet seen
        self._kcmp_ok = True

    def add(self, tid: int, pid: int) -> Task:
        task = self.by_tid.get(tid)
        if task is None:
            task = self.by_tid[tid] = Task(tid, pid)
            self.threads.setdefault(pid, set()).add(tid)
        return task

    def remove(self, tid: int) -> Task | None:
        task = self.by_tid.pop(tid, None)
        self.forking.discard(tid)
        if task is not None:
            tids = self.threads.get(task.pid)
            if tids is not None:
                tids.discard(tid)
                if not tids:
                    del self.threads[task.pid]
                    self.slot_ready.pop(task.pid, None)
                    self.program.pop(task.pid, None)
                    self.foreign_creds.discard(task.pid)
        return task

    def is_member(self, pid: int) -> bool:
        return pid in self.by_tid or pid in self.threads

    def member_pids(self) -> list[int]:
        return list(self.threads)

    def live_processes(self) -> int:
        """Thread groups of the sandbox, counting each process creation in flight as one."""
        return len(self.threads) + len(self.forking)

    def __len__(self) -> int:
        return len(self.by_tid)

    def shares_fd_table(self, tid: int) -> bool:
        """Whether another traced task shares tid's fd table (kcmp KCMP_FILES)."""
        others = [t for t in self.by_tid if t != tid]
        if not others:
            return False
        if self._kcmp_ok:
            for other in others:
                rv = _libc.syscall(SYS_KCMP, tid, other, KCMP_FILES, 0, 0)
                if rv == 0:
                    return True
                if rv < 0 and ctypes.get_errno() in (errno.ENOSYS, errno.EPERM):
                    self._kcmp_ok = False
                    break
            else:
                return False
        # Without kcmp, assume threads share their fd table.
        return len(self.threads.get(self.by_tid[tid].pid, ())) > 1

    def members_in_group(self, pgid: int) -> tuple[list[int], bool]:
        members, outsiders = [], False
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            pid = int(name)
            try:
                if os.getpgid(pid) != pgid:
                    continue
            except OSError:
                continue
            if pid in self.threads:
                members.append(pid)
            else:
                outsiders = True
        return members, outsiders
