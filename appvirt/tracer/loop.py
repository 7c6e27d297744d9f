"""The tracer's wait loop: decode each stop, dispatch to the table, apply the action.

`Tracer.apply` (and the exit-stop counterpart `_finish_call`) are the only code that writes
tracee registers or memory. Every failure inside the handling of a stop ends in a denial or a
kill, never in a call that proceeds unchecked (threat #37).
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable

from ..core.action import (Action, Allow, Decision, Deny, Emulate, ExitResult, ExitVerdict,
                           Note, Rewrite, SlotData, decision_of)
from ..core.stop import Stop
from ..core.table import NEVER_PROCEED, SyscallTable
from ..errors import GuestErrno, TraceeGone
from ..log.records import decode_args, errno_name
from ..log.writer import LogWriter
from ..policy.model import LogLevel, Policy
from ..virt.machinepolicy import PowerEvent
from . import _ptrace as pt
from .context import TracerContext
from .fastpath import FastPath
from .inject import Injection, InjectionFailed
from .memory import TraceeMemory
from .slots import SlotArena
from .tasks import Pending, Task, Tasks

WALL = 0x40000000
NO_AUDIT = Note()
SYSCALL_TRAP = signal.SIGTRAP | 0x80
STOP_SIGNALS = frozenset({signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})
RESTART_CODES = frozenset({512, 513, 514, 516})     # -ERESTART*: the kernel re-runs the call
MAX_RESTARTS = 16
CLONE_THREAD = 0x00010000
# What can fail the slot area's mapping in a new program: the process is killed, with why.
_MAPPING_FAILED = (InjectionFailed, OSError, GuestErrno, pt.PtraceError)
_LOGGED = {
    LogLevel.ALL: frozenset(Decision),
    LogLevel.CHANGES: frozenset({Decision.REDIRECTED, Decision.EMULATED, Decision.DENIED,
                                 Decision.KILLED}),
    LogLevel.DENIALS: frozenset({Decision.DENIED, Decision.KILLED}),
}


class Stats:
    """What a run's stops were (appvirt run --stats)."""

    __slots__ = ("seccomp_stops", "exit_stops", "other_stops", "injections", "compiled",
                 "internal_errors", "by_syscall", "compiled_by_syscall", "compiled_signals",
                 "compiled_stubs", "dirs_compiled", "dirs_python", "trampolines",
                 "fd_paths_known", "notified", "handed_over")

    def __init__(self) -> None:
        self.seccomp_stops = 0
        self.exit_stops = 0
        self.other_stops = 0
        self.injections = 0
        self.compiled = 0        # of the stops: answered by the compiled loop (fastpath.py)
        self.internal_errors = 0
        self.by_syscall: Counter = Counter()
        self.compiled_by_syscall: Counter = Counter()    # its seccomp stops
        self.compiled_signals = 0    # its signal-delivery stops
        self.compiled_stubs = 0      # the slot stubs' seccomp stops it resumed
        self.dirs_compiled = 0       # directories it decided itself
        self.dirs_python = 0         # directories the Python side decided for it
        self.trampolines = 0         # opens resumed through trampolines: no exit stop
        self.fd_paths_known = 0      # fds' paths known without a readlink
        self.notified = 0            # calls answered from seccomp notifications: no stop
        self.handed_over = 0         # notified calls handed to the ptrace handlers

    @property
    def total(self) -> int:
        return self.seccomp_stops + self.exit_stops + self.other_stops


class StaleTasks(Exception):
    """Raised out of a blocked wait when every task left has vanished without a report, or
    when a task held for its creator's event has waited past the watchdog's look."""


class Tracer:
    """Follows one sandboxed tree from its first process to its last."""

    def __init__(self, table: SyscallTable, policy: Policy, arena: SlotArena,
                 log: LogWriter | None) -> None:
        self.table, self.policy, self.arena, self.log = table, policy, arena, log
        self.tasks = Tasks()
        self.memory = TraceeMemory()
        self.ctx = TracerContext(policy, self.tasks, self.memory)
        self.logged = _LOGGED[policy.log.level]
        self.log_events = policy.log.level is not LogLevel.DENIALS
        self.stats = Stats()
        self._seq = 0
        self.main_pid = 0
        self.main_status: int | None = None
        # Exits seen for tasks not known yet: a new task can die (killed in its first stop)
        # before its parent's clone event arrives; that late event must not bring it back.
        self._gone_unknown: set[int] = set()
        # Tasks adopted at their first stop whose parent's clone event has not come yet, with
        # the process that made them: if they die first, that event must not bring them back
        # either.
        self._adopted: dict[int, int] = {}
        # Adopted tasks kept in their first stop until that event: it says what they inherit
        # (ids, slot area, program), which nothing they do first may come before.
        self._held: set[int] = set()
        self._held_before: set[int] = set()     # those held at the watchdog's last look
        self._overdue: set[int] = set()         # held since before it: to run now
        self._missing: set[int] = set()
        self._waiting = False
        self.first_error: str | None = None
        self.first_kill: str | None = None      # a process killed to keep it sandboxed, why
        # Called when the program's group stopped for the terminal (Ctrl-Z): appvirt then
        # stops too, so the user's shell gets the terminal back, as for a native program.
        self.on_terminal_stop: Callable[[], None] | None = None
        # Set when the program powered its machine off or restarted it (reboot(2)).
        self.power_event: PowerEvent | None = None
        self.ctx.on_power = self.end_machine
        # The compiled fast path (fastpath.py), when the launcher sets one up.
        self.fast: FastPath | None = None

    @property
    def seq(self) -> int:
        """The number of the intercept log's last record (the compiled loop numbers its own
        records from the same count)."""
        return self.fast.engine.seq if self.fast is not None else self._seq

    @seq.setter
    def seq(self, value: int) -> None:
        if self.fast is not None:
            self.fast.engine.seq = value
        else:
            self._seq = value

    # -- the loop ---------------------------------------------------------------------------
    def run(self, main_pid: int) -> int:
        """Trace until every tracee is gone; return the main program's wait status."""
        self.main_pid = main_pid
        task = self.tasks.add(main_pid, main_pid)
        task.started = True            # PTRACE_SEIZE: no initial stop
        self.tasks.slot_ready[main_pid] = True
        self.tasks.program[main_pid] = sys.executable
        fast = self.fast
        if fast is not None:            # its own execve, the first stop, as its later ones
            self._serve_fast(fast, main_pid)
        while self.tasks:
            try:
                self._waiting = True
                pid, status = fast.wait() if fast is not None else os.waitpid(-1, WALL)
            except ChildProcessError:
                break
            except StaleTasks:
                for tid in self._overdue & self._held:
                    self._release(tid)
                self._overdue = set()
                continue
            finally:
                self._waiting = False
            t0 = time.perf_counter()
            try:
                if os.WIFSTOPPED(status):
                    self._on_stop(pid, status, t0)
                else:
                    self._on_gone(pid, status)
            except TraceeGone:
                pass    # it died mid-stop; its exit notification follows
            if fast is not None:
                self._serve_fast(fast, pid)
        if fast is not None:
            done = fast.counts()
            self.stats.seccomp_stops += done.seccomp
            self.stats.exit_stops += done.exits
            self.stats.other_stops += done.signals + done.stubs + done.handover_stops
            self.stats.compiled = (done.seccomp + done.exits + done.signals + done.stubs
                                   + done.handover_stops)   # (Python counts stubs' so)
            self.stats.compiled_signals = done.signals
            self.stats.compiled_stubs = done.stubs
            self.stats.by_syscall.update(done.by_syscall)
            self.stats.compiled_by_syscall.update(done.by_syscall)
            self.stats.dirs_compiled, self.stats.dirs_python = done.dirs_compiled, done.dirs_python
            self.stats.trampolines = done.trampolines
            self.stats.fd_paths_known = done.fd_paths_known
            self.stats.notified, self.stats.handed_over = done.notified, done.handed_over
            if fast.error is not None and self.first_error is None:
                self.first_error = f"fast path: {fast.error}"
            failure = fast.log_failure()
            if failure is not None and self.log is not None and self.log.failed is None:
                self.log.failed = f"intercept log {self.log.path}: {failure}"
        return self.main_status if self.main_status is not None else 0

    def _serve_fast(self, fast: FastPath, tid: int) -> None:
        """After Python handled a stop of tid: whether the compiled loop may answer its next
        reads. Only while Python has nothing in flight for it (an exec's slot mapping, a
        call's exit) and it acts with our ids."""
        fast.fresh()
        task = self.tasks.by_tid.get(tid)
        if task is None:
            fast.forget(tid)
            return
        if task.pid in self.tasks.foreign_creds:
            for t in self.tasks.threads.get(task.pid, ()):
                fast.serve(t, None)
            return
        slot = None
        if task.injection is None and task.pending is None \
                and self.tasks.slot_ready.get(task.pid):
            try:
                slot = self.arena.slot_of(tid)
            except IndexError:
                pass
        fast.serve(tid, slot, task.pid, self._own_ids(tid))
        if task.injection is not None:
            fast.stub(tid)          # its stub's calls are resumed there, as _inject_stop does

    def _own_ids(self, tid: int) -> bool:
        """Whether what tid makes gets the owner it would get natively: without an identity,
        or while its virtual filesystem ids are appvirt's own (a virtual root run by root)."""
        if self.ctx.identity is None:
            return True
        creds = self.ctx.credentials(tid)
        return creds.fsuid == os.geteuid() and creds.fsgid == os.getegid()

    def end_machine(self, event: PowerEvent, detail: str) -> None:
        """The program switched its machine off or restarted it: every process of the tree
        ends at once, as on a machine that stops (the first event counts)."""
        if self.power_event is None:
            self.power_event = event
            if self.log_events:
                self._emit({"kind": "power", "event": event.value, "detail": detail})
        for pid in {t.pid for t in self.tasks.by_tid.values()}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def check_stale(self) -> None:
        """Drop tasks gone from /proc (fully reaped: no report will ever come for them), so
        that a missed report can never leave the tracer waiting for ever, and lets a task
        held for its creator's event run when that event has not come in a second or two.
        Called from a timer; raises StaleTasks to wake a blocked wait when nothing live is
        left or a held task is to run."""
        if not self._waiting or (self.fast is not None and self.fast.busy):
            return                  # only between stops: never in the middle of handling one
        overdue = self._held & self._held_before
        self._held_before = set(self._held)
        if overdue:
            self._overdue = overdue     # a creator's event lost (a creator not its parent died)
            raise StaleTasks()          # they run from the loop, not from this signal handler
        gone = [t for t in self.tasks.by_tid if not os.path.exists(f"/proc/{t}")]
        if not gone:
            return
        for tid in gone:
            if tid in self._missing:
                self.tasks.remove(tid)
                self.arena.release(tid)
                self.memory.forget(tid)
                if self.fast is not None:
                    self.fast.forget(tid)
        self._missing = set(gone)
        if not self.tasks:
            raise StaleTasks()

    def _on_gone(self, pid: int, status: int) -> None:
        task = self.tasks.remove(pid)
        if self.ctx.identity is not None:
            self.ctx.identity.gone(pid)
        if pid in self.ctx.umask_calls:         # killed in its umask call: no exit stop
            self.ctx.umask_changing(pid, False)
        if self.ctx.writebacks:         # what it wrote to store files is complete now
            self.ctx.writebacks.sync()
        if (task is None or pid in self._adopted) and pid != self.main_pid:
            self._gone_unknown.add(pid)
        self._adopted.pop(pid, None)
        self._held.discard(pid)
        if task is not None and task.pid not in self.tasks.threads:
            self._release_orphans()
        self.arena.release(pid)
        self.memory.forget(pid)
        if pid == self.main_pid:
            self.main_status = status
        if task is not None and task.tid == task.pid and self.log_events:
            rec = {"kind": "exit", "pid": pid}
            if os.WIFEXITED(status):
                rec["status"] = os.WEXITSTATUS(status)
            else:
                rec["signal"] = signal.Signals(os.WTERMSIG(status)).name
            self._emit(rec)

    def _on_stop(self, pid: int, status: int, t0: float) -> None:
        sig, event = os.WSTOPSIG(status), status >> 16
        task = self.tasks.by_tid.get(pid) or self._adopt(pid)
        if task.injection is not None:
            self.stats.other_stops += 1
            self._inject_stop(task, sig, event)
        elif event == pt.PTRACE_EVENT_SECCOMP:
            self.stats.seccomp_stops += 1
            self._on_seccomp(task, t0)
        elif sig == SYSCALL_TRAP:
            self.stats.exit_stops += 1
            self._finish_call(task)
        else:
            self.stats.other_stops += 1
            if event in (pt.PTRACE_EVENT_FORK, pt.PTRACE_EVENT_VFORK, pt.PTRACE_EVENT_CLONE):
                self._on_clone(task, event)
            elif event == pt.PTRACE_EVENT_EXEC:
                self._on_exec(task)
            elif event == pt.PTRACE_EVENT_STOP:
                if not task.started:
                    if self._adopted.get(pid) in self.tasks.threads:
                        self._held.add(pid)     # until its creator's event (_on_clone)
                        return
                    task.started = True
                    pt.cont(pid)
                elif sig in STOP_SIGNALS:
                    pt.listen(pid)          # a group stop: stay stopped, as natively
                    if pid == self.main_pid and sig != signal.SIGSTOP and self.on_terminal_stop:
                        self.on_terminal_stop()
                else:
                    pt.cont(pid)
            else:
                pt.cont(pid, sig)           # signal-delivery stop: deliver it

    def _adopt(self, pid: int) -> Task:
        """A new thread or process whose first stop came before its parent's event. Its
        creator (for a thread its own process, else its parent) is taken from /proc; when
        that is a process of the sandbox, the task waits in its first stop for the event."""
        tgid = creator = pid
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"Tgid:"):
                        tgid = int(line.split()[1])
                    elif line.startswith(b"PPid:"):
                        creator = int(line.split()[1])
                        break
        except OSError:
            pass
        if pid != self.main_pid:
            self._adopted[pid] = tgid if tgid != pid else creator
        if tgid not in self.tasks.program:      # its parent's event, which tells it, comes later
            try:
                self.tasks.program[tgid] = os.fsdecode(os.readlink(f"/proc/{tgid}/exe"))
            except OSError:
                pass
        return self.tasks.add(pid, tgid)

    def _on_clone(self, task: Task, event: int) -> None:
        child = pt.geteventmsg(task.tid)
        if event == pt.PTRACE_EVENT_CLONE:
            flags = pt.get_regs(task.tid).rdi
            tgid = task.pid if flags & CLONE_THREAD else child
            kind = "thread" if flags & CLONE_THREAD else "clone"
        else:
            tgid, kind = child, ("fork" if event == pt.PTRACE_EVENT_FORK else "vfork")
        if tgid != task.pid:
            self.tasks.forking.discard(task.tid)    # its child is counted as a member now
        self._adopted.pop(child, None)
        if child in self._gone_unknown:
            self._gone_unknown.discard(child)      # it already died: nothing to follow
            pt.cont(task.tid)
            return
        known = self.tasks.by_tid.get(child)
        if known is not None and known.pid != tgid:
            self.tasks.remove(child)
            known = None
        self.tasks.add(child, tgid)
        if self.ctx.identity is not None:
            self.ctx.identity.cloned(task.tid, child)
        if tgid != task.pid:
            # fork copies the shared slot mapping; a CLONE_VM child shares it.
            self.tasks.slot_ready[tgid] = self.tasks.slot_ready.get(task.pid, False)
            self.tasks.program[tgid] = self.tasks.program.get(task.pid, "")
            if task.pid in self.tasks.foreign_creds:
                self.tasks.foreign_creds.add(tgid)
        if self.log_events:
            self._emit({"kind": "spawn", "pid": task.pid, "tid": task.tid, "child": child,
                        "how": kind, "program": self.tasks.program.get(task.pid, "")})
        if child in self._held:
            self._release(child)
        pt.cont(task.tid)

    def _release(self, tid: int) -> None:
        """A task held in its first stop (_adopt) runs: what it inherits is set."""
        self._held.discard(tid)
        task = self.tasks.by_tid.get(tid)
        if task is None:
            return
        task.started = True
        if self.fast is not None:
            self._serve_fast(self.fast, tid)
        try:
            pt.cont(tid)
        except TraceeGone:
            pass            # killed meanwhile: its exit report follows

    def _release_orphans(self) -> None:
        """Held tasks whose creator has no task left, killed before its clone event could
        stop it (a fatal signal skips that stop): they run with what they have."""
        for tid in [t for t in self._held if self._adopted.get(t) not in self.tasks.threads]:
            self._release(tid)

    def _on_exec(self, task: Task) -> None:
        former = pt.geteventmsg(task.tid)
        if former != task.tid:     # a non-leader thread exec'd and took the leader's tid
            self.tasks.remove(former)
            self.arena.release(former)
            if self.fast is not None:
                self.fast.forget(former)
        task.pending = None
        task.restarts = 0
        self.memory.forget(task.tid)
        self.tasks.slot_ready[task.pid] = False
        try:
            exe = os.fsdecode(os.readlink(f"/proc/{task.pid}/exe"))
            with open(f"/proc/{task.pid}/cmdline", "rb") as f:
                argv = [os.fsdecode(a) for a in f.read().split(b"\0")[:-1]]
        except OSError:
            exe, argv = "", []
        self.tasks.program[task.pid] = exe
        if self.ctx.writebacks:         # exec closed its close-on-exec store files
            self.ctx.writebacks.sync()
        if self.ctx.identity is not None:
            self.ctx.identity.execed(task.tid, former, self._exe_stat(task.pid))
        if self.log_events:
            self._emit({"kind": "exec", "pid": task.pid, "tid": task.tid, "program": exe,
                        "argv": argv})
        self.stats.injections += 1
        try:
            checked = None if self.fast is None else self.fast.stub_mapped
            task.injection = Injection(task.tid, self.arena, self.memory,
                                       hide_vdso=self.policy.time.virtual, checked=checked)
        except _MAPPING_FAILED as e:
            self._kill_process(task, f"cannot map the slot area: {e}")

    @staticmethod
    def _exe_stat(pid: int) -> os.stat_result | None:
        try:
            return os.stat(f"/proc/{pid}/exe")
        except OSError:
            return None

    def _inject_stop(self, task: Task, sig: int, event: int) -> None:
        """A stop while the stub maps the slot area in (inject.py): the seccomp stops of its
        openat and mmap, its int3, or a signal held until the program's own code runs. Any
        failure kills the process."""
        try:
            if event != 0 or not task.injection.on_signal(sig):   # type: ignore[union-attr]
                if event == 0:
                    task.held_signals.append(sig)
                pt.cont(task.tid)
                return
        except _MAPPING_FAILED as e:
            task.injection = None
            self._kill_process(task, str(e))
            return
        task.injection = None
        self.tasks.slot_ready[task.pid] = True
        held, task.held_signals = task.held_signals, []
        for extra in held[1:]:
            os.kill(task.pid, extra)
        pt.cont(task.tid, held[0] if held else 0)

    def _kill_process(self, task: Task, reason: str) -> None:
        program = self.tasks.program.get(task.pid, "")
        if self.first_kill is None:
            self.first_kill = f"{program or task.pid}: {reason}"
        self._emit({"kind": "syscall", "pid": task.pid, "tid": task.tid,
                    "program": program, "syscall": "execve",
                    "class": "process", "decision": Decision.KILLED.value, "detail": reason})
        os.kill(task.pid, signal.SIGKILL)
        try:
            pt.cont(task.tid)
        except TraceeGone:
            pass

    # -- one intercepted call ---------------------------------------------------------------
    def _on_seccomp(self, task: Task, t0: float) -> None:
        info = pt.syscall_info(task.tid)
        if info.op != pt.OP_SECCOMP or info.arch != pt.AUDIT_ARCH_X86_64:
            self._deny_now(task.tid, errno.ENOSYS)
            return
        # Dispatch on the kernel's own syscall number, never on RET_DATA (a tracee's filter
        # can forge it, #4).
        entry = self.table.lookup(info.nr)
        if entry is None:
            stop = None
            action: Action = Deny(errno.ENOSYS, Note(rule="builtin:unknown-syscall",
                                                      detail=f"syscall {info.nr}"))
        else:
            stop, action = self._decide(task, entry, info)
        name = entry.name if entry else f"syscall_{info.nr}"
        self.stats.by_syscall[name] += 1
        if entry is not None and entry.name in NEVER_PROCEED and isinstance(
                action, (Allow, Rewrite)):
            self.stats.internal_errors += 1
            action = Deny(errno.EPERM, Note(rule="builtin:never-proceed",
                                            detail="a handler let a forbidden call through"))
        seq = self.log_call(task, name, entry, stop, action, info, t0) \
            if self.logs(action) else 0
        self.apply(task, stop, info, action, seq)

    def logs(self, action: Action) -> bool:
        """Whether the policy's log level records this decision."""
        return decision_of(action) in self.logged or (
            self.log_events and getattr(action, "note", NO_AUDIT).audit)

    def _decide(self, task: Task, entry, info) -> tuple[Stop | None, Action]:
        try:
            paths = []
            for i in entry.path_args:
                addr = info.args[i]
                if addr == 0 and i in entry.nullable_paths:
                    paths.append(None)
                else:
                    paths.append(self.memory.read_cstring(task.tid, addr))
            stop = Stop(task.tid, task.pid, entry, info.args, tuple(paths), info.ip)
        except GuestErrno as e:
            return None, Deny(e.errno, native=True)
        try:
            return stop, entry.handler(stop, self.ctx)
        except GuestErrno as e:
            return stop, Deny(e.errno, Note(rule=e.rule, detail=e.detail), native=not e.rule)
        except TraceeGone:
            raise
        except Exception as e:  # noqa: BLE001 - fail closed on our own bugs (#37)
            self.stats.internal_errors += 1
            detail = f"internal error: {type(e).__name__}: {e}"
            if self.first_error is None:
                self.first_error = f"{entry.name}: {detail}"
            return stop, Deny(errno.EPERM, Note(rule="builtin:internal-error", detail=detail))

    def _deny_now(self, tid: int, err: int) -> None:
        pt.poke_user(tid, pt.OFF_ORIG_RAX, -1)
        pt.poke_user(tid, pt.OFF_RAX, -err)
        pt.cont(tid)

    def apply(self, task: Task, stop: Stop | None, info: pt.SyscallInfo, action: Action,
              seq: int) -> None:
        """Carry out an action at a seccomp stop: the single writer of tracee state."""
        tid = task.tid
        if isinstance(action, Allow):
            if action.on_exit is None:
                if self._rechecked(tid, False):
                    pt.syscall(tid)
                else:
                    pt.cont(tid)
                return
            task.pending = Pending(seq, info.nr, None, action.on_exit, stop,
                                   bool(seq))
            self._rechecked(tid, True)
            pt.syscall(tid)
        elif isinstance(action, Rewrite):
            if not self._slot_ready(task):
                self._kill_process(task, "no slot area in this process")
                return
            try:
                for addr, data in action.writes:
                    self.memory.write(tid, addr, data)
            except GuestErrno as e:
                self._deny_now(tid, e.errno)
                return
            blobs = [v for _, v in action.args if isinstance(v, SlotData)] + list(action.extra)
            try:
                where = self.arena.layout(tid, [len(b.data) for b in blobs])
            except (IndexError, ValueError) as e:
                self._deny_now(tid, errno.EAGAIN if isinstance(e, IndexError) else
                               errno.ENAMETOOLONG)
                return
            for blob, addr in zip(blobs, where):
                data = blob.data
                if blob.refs:
                    data = bytearray(data)
                    for off, i in blob.refs:
                        data[off:off + 8] = where[i].to_bytes(8, "little")
                self.arena.store(addr, bytes(data))
            # One GETREGS and one SETREGS, whatever the number of arguments; the entry
            # registers come back at the exit stop in one SETREGS too.
            regs = pt.get_regs(tid)
            entry_regs = pt.copy_regs(regs)
            addrs = iter(where)
            for i, v in action.args:
                value = next(addrs) if isinstance(v, SlotData) else v
                setattr(regs, pt.ARG_REGS[i], value & 0xFFFFFFFFFFFFFFFF)
            if action.nr is not None:
                regs.orig_rax = action.nr
            pt.set_regs(tid, regs)
            task.pending = Pending(seq, info.nr, entry_regs, action.on_exit, stop, bool(seq))
            self._rechecked(tid, True)
            pt.syscall(tid)
        elif isinstance(action, Emulate):
            try:
                for addr, data in action.writes:
                    self.memory.write(tid, addr, data)
                result = action.result
            except GuestErrno as e:
                result = -e.errno
            pt.poke_user(tid, pt.OFF_ORIG_RAX, -1)
            pt.poke_user(tid, pt.OFF_RAX, result)
            pt.cont(tid)
        elif isinstance(action, Deny):
            self._deny_now(tid, action.errno)
        else:
            pt.poke_user(tid, pt.OFF_ORIG_RAX, -1)
            os.kill(task.pid, signal.SIGKILL)
            pt.cont(tid)

    def _rechecked(self, tid: int, exit_stop: bool) -> bool:
        """A call let run: when it came as a seccomp notification (fastpath), it runs marked
        for the kernel's check after the tracer, and must be resumed with PTRACE_SYSCALL
        (the engine gives the program its r9 back at the exit stop; exit_stop: that stop is
        ours too)."""
        return self.fast is not None and self.fast.engine.recheck(tid, exit_stop)

    def _slot_ready(self, task: Task) -> bool:
        ready = self.tasks.slot_ready.get(task.pid)
        if not ready:
            ready = self.tasks.slot_ready[task.pid] = self.arena.mapped_in(task.tid)
        return ready

    def _finish_call(self, task: Task) -> None:
        """The exit stop of a call that proceeded: restore registers, run the exit hook."""
        p = task.pending
        tid = task.tid
        if p is None:
            pt.cont(tid)
            return
        info = pt.syscall_info(tid)
        if info.op != pt.OP_EXIT:
            pt.cont(tid)
            return
        task.pending = None
        result = info.rval
        verdict = p.on_exit(p.stop, result) if p.on_exit else None
        regs = p.regs
        if verdict is not None and verdict.verdict is ExitVerdict.RESTART \
                and -result not in RESTART_CODES and task.restarts < MAX_RESTARTS:
            task.restarts += 1
            if regs is not None:
                regs.rip, regs.rax = info.ip - 2, p.nr
                pt.set_regs(tid, regs)
            else:
                pt.poke_user(tid, pt.OFF_RIP, info.ip - 2)
                pt.poke_user(tid, pt.OFF_RAX, p.nr)
            pt.cont(tid)
            return
        task.restarts = 0
        if verdict is not None and verdict.verdict is ExitVerdict.KILL:
            self._kill_process(task, verdict.detail)
            return
        if verdict is not None and verdict.writes:
            try:
                for addr, data in verdict.writes:
                    self.memory.write(tid, addr, data)
            except GuestErrno as e:
                verdict = ExitResult(result=-e.errno)
        if verdict is not None and verdict.result is not None:
            result = verdict.result
        if regs is not None:
            # The syscall ABI preserves every register but rax (rcx and r11 were set before
            # the entry stop): the program gets its own back, with the result; orig_rax too,
            # so that a -ERESTART* re-runs the original call.
            regs.rax = result & 0xFFFFFFFFFFFFFFFF
            pt.set_regs(tid, regs)
        elif verdict is not None and verdict.result is not None:
            pt.poke_user(tid, pt.OFF_RAX, result)
        if p.log_result:
            self.log_result(task, p.seq, result)
        pt.cont(tid)

    # -- the log ----------------------------------------------------------------------------
    def _emit(self, rec: dict) -> int:
        if self.log is None:
            return 0
        self.seq += 1
        rec = {"seq": self.seq, "time": round(time.time(), 6), **rec}
        self.log.write(rec)
        return self.seq

    def log_result(self, task: Task, seq: int, result: int) -> None:
        """The record of a logged call's result (at its exit stop)."""
        if self.log is None:
            return
        rec = {"kind": "result", "call": seq, "pid": task.pid, "tid": task.tid,
               "result": result}
        if (name := errno_name(result)) is not None:
            rec["errno"] = name
        self._emit(rec)

    def log_call(self, task: Task, name: str, entry, stop: Stop | None, action: Action,
                 info: pt.SyscallInfo | None, t0: float) -> int:
        """Write a call's record (before the call resumes); its number, 0 without a log."""
        if self.log is None:
            return 0
        note = getattr(action, "note", None) or Note()
        self.seq += 1
        rec: dict = {"seq": self.seq, "time": round(time.time(), 6),
                     "kind": "syscall", "pid": task.pid, "tid": task.tid,
                     "program": self.tasks.program.get(task.pid, ""), "syscall": name,
                     "class": entry.op.value if entry else "system"}
        if stop is not None:
            rec["args"] = decode_args(stop)
        elif info is not None:
            rec["args"] = {f"arg{i}": hex(a) for i, a in enumerate(info.args)}
        rec["decision"] = decision_of(action).value
        if note.rule:
            rec["rule"] = note.rule
        if note.path is not None:
            rec["path"] = os.fsdecode(note.path)
        if note.host_path is not None:
            rec["host_path"] = os.fsdecode(note.host_path)
        if note.address:
            rec["address"] = note.address
        if note.target:
            rec["redirected_to"] = note.target
        if isinstance(action, Deny):
            rec["result"] = -action.errno
            rec["errno"] = errno.errorcode.get(action.errno, str(action.errno))
        elif isinstance(action, Emulate):
            rec["result"] = action.result
        if note.hint:
            rec["hint"] = note.hint
        if note.detail:
            rec["detail"] = note.detail
        rec["tracer_us"] = round((time.perf_counter() - t0) * 1e6, 1)
        self.log.write(rec)
        return self.seq
