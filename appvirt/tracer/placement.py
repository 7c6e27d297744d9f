"""Where tracer and tracees run (issue 4's first lever).

A ptrace stop costs several times more when tracer and tracee sit on different CPUs (the
wake-ups become cross-CPU IPIs; see measurements.md: 52 us against 8.5 us per stop). So while at
most one traced task is runnable, the tracer and every tracee share one CPU. Twice in a row two
or more runnable tracees (a parallel build, a multi-threaded program) spread them back over the
original CPU set, so parallel programs keep every core; when the parallelism is over they
are gathered again. The program still sees its original CPU mask (sched_getaffinity is
answered from it), and a task that sets its own affinity is left alone from then on.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable

SAMPLE_SECONDS = 0.05
SPREAD_AFTER = 2          # samples with >= 2 runnable tracees before spreading
GATHER_AFTER = 6          # samples with <= 1 runnable tracee before gathering again


def _runnable(tid: int) -> tuple[bool, int] | None:
    """(is running or runnable, last CPU) of a task, from /proc/TID/stat."""
    try:
        with open(f"/proc/{tid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    return fields[0] == b"R", int(fields[36])


class Placement:
    """Gathers tracer and tracees on one CPU, or spreads them, as the workload asks."""

    def __init__(self, tasks: Callable[[], Iterable[int]],
                 watchdog: Callable[[], None] | None = None) -> None:
        self.original = frozenset(os.sched_getaffinity(0))
        self.enabled = len(self.original) > 1
        self.cpu = min(self.original)
        self.gathered = False
        self.unmanaged: set[int] = set()     # tids that chose their own affinity
        self._tasks = tasks
        self._watchdog = watchdog
        self._ticks = 0
        self._busy = self._idle = 0

    def gather_self(self) -> None:
        """Pin the tracer (and so the child it is about to fork) to one CPU."""
        if self.enabled:
            os.sched_setaffinity(0, {self.cpu})
            self.gathered = True

    def start_sampling(self) -> None:
        signal.signal(signal.SIGALRM, self._tick)
        signal.setitimer(signal.ITIMER_REAL, SAMPLE_SECONDS, SAMPLE_SECONDS)

    def stop(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        if self.enabled:
            os.sched_setaffinity(0, self.original)

    def _tick(self, signum: int, frame: object) -> None:
        self._ticks += 1
        if self._watchdog is not None and self._ticks % 20 == 0:    # every second
            self._watchdog()
        if self.enabled:
            self._sample(signum, frame)

    def _set(self, tids: Iterable[int], cpus: Iterable[int]) -> None:
        for tid in tids:
            if tid in self.unmanaged:
                continue
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                pass            # gone, or a mask the task may not use: leave it

    def _sample(self, _signum: int, _frame: object) -> None:
        tids = list(self._tasks())
        if len(tids) < 2 and self.gathered:
            self._busy = 0
            return
        running = [r for r in map(_runnable, tids) if r is not None and r[0]]
        if len(running) >= 2:
            self._busy, self._idle = self._busy + 1, 0
        else:
            self._busy, self._idle = 0, self._idle + 1
        if self.gathered and self._busy >= SPREAD_AFTER:
            self._set(tids, self.original)
            os.sched_setaffinity(0, self.original)
            self.gathered = False
        elif not self.gathered and self._idle >= GATHER_AFTER:
            self.cpu = running[0][1] if running and running[0][1] in self.original else self.cpu
            os.sched_setaffinity(0, {self.cpu})
            self._set(tids, {self.cpu})
            self.gathered = True

    def virtual_mask(self, tid: int) -> frozenset[int] | None:
        """The mask the program should see (None: its own choice, ask the kernel)."""
        return None if tid in self.unmanaged or not self.enabled else self.original
