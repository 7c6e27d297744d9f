"""The Python side of the calls the compiled loop makes in owned directories.

In a directory the overlay owns (OverlayFS.owned_dir: an upper directory with nothing of the
host's in it) the engine (_fastpath.c) opens names itself, and has the changing calls there
(unlink, mkdir, chmod, chown, utimensat ...) made by their handlers' own `do` without
deciding their paths again (the directory's decision holds for every name in it). What only
Python has stays here, called by the engine in the middle of the stop: the intercept log's
records (the same records the handlers' decisions would give, before the call resumes) and
the overlay's index (a file the kernel created, a name removed). Each callback catches
everything: an unexpected failure is recorded as the run's first error, and the engine then
hands the stop to the Python loop (nothing was done yet) or fails the call closed.
"""

from __future__ import annotations

import errno
import time
from typing import TYPE_CHECKING

from ..core.action import Action, Decision, Deny, Emulate, Note, Rewrite
from ..core.stop import Stop
from ..errors import GuestErrno

if TYPE_CHECKING:
    from .fastpath import FastPath
    from .loop import Tracer


def _in_stop(method):
    """Mark the engine busy while a callback runs: the tracer's timer then leaves the tasks
    alone (it must never act in the middle of a stop)."""
    def wrapped(self, *args):
        self.fast.busy = True
        try:
            return method(self, *args)
        finally:
            self.fast.busy = False
    wrapped.__name__, wrapped.__doc__ = method.__name__, method.__doc__
    return wrapped


class CompiledCalls:
    """Log records and index changes for the engine's opens and changes."""

    def __init__(self, tracer: "Tracer", fast: "FastPath") -> None:
        self.tracer = tracer
        self.fast = fast
        self.fs = tracer.ctx.fs
        self.mode_for = tracer.policy.files.mode_for

    def _stop(self, tid: int, nr: int, args: tuple[int, ...], paths: tuple):
        """The stop as the Python loop would have made it (its path arguments as read)."""
        task = self.tracer.tasks.by_tid.get(tid)
        entry = self.tracer.table.lookup(nr)
        if task is None or entry is None:
            return None, None
        return task, Stop(tid, task.pid, entry, args, paths, 0)

    def _failed(self, what: str, e: Exception) -> None:
        self.tracer.stats.internal_errors += 1
        if self.tracer.first_error is None:
            self.tracer.first_error = f"compiled {what}: {type(e).__name__}: {e}"

    def _log(self, task, stop: Stop, action: Action, t0: float) -> int:
        if not self.tracer.logs(action):
            return 0
        return self.tracer.log_call(task, stop.entry.name, stop.entry, stop, action, None, t0)

    @_in_stop
    def opening(self, tid: int, nr: int, args: tuple[int, ...], path: bytes, guest: bytes,
                host: bytes) -> int:
        """An open of guest, made as openat2 on host: its record. The record's number (0:
        not logged), or -1: the Python loop must take the stop (nothing was done)."""
        t0 = time.perf_counter()
        try:
            task, stop = self._stop(tid, nr, args, (path,))
            if stop is None:
                return -1
            note = Note(rule=self.mode_for(guest)[1], path=guest, host_path=host)
            return self._log(task, stop, Rewrite((), note=note, decision=Decision.REDIRECTED),
                             t0)
        except Exception as e:  # noqa: BLE001 - the Python loop decides the stop instead
            self._failed("open", e)
            return -1

    @_in_stop
    def opened(self, seq: int, tid: int, created: bytes | None, result: int) -> None:
        """The open's exit: a file the kernel created goes in the index; the result in the
        log."""
        try:
            if created is not None and result >= 0:
                self.fast.made_here(lambda: self.fs.created(created), created)
            task = self.tracer.tasks.by_tid.get(tid)
            if seq and task is not None:
                self.tracer.log_result(task, seq, result)
        except Exception as e:  # noqa: BLE001 - the index is rebuilt by the next load
            self._failed("open's exit", e)

    @_in_stop
    def changing(self, tid: int, nr: int, args: tuple[int, ...], paths: tuple,
                 guests: tuple[bytes, ...]) -> int | None:
        """Make a change to guests (names in owned directories, or the object of an fd
        there) as the call's handler would once it decided the paths: its `do` in the
        overlay, the record. paths: the path arguments as read (None: NULL). The call's
        result, or None when the Python loop must take the stop (nothing was done)."""
        t0 = time.perf_counter()
        try:
            task, stop = self._stop(tid, nr, args, paths)
            do = getattr(stop.entry.handler, "do", None) if stop is not None else None
            if do is None or len(stop.entry.path_args) != len(paths):
                return None
            shown = guests[stop.entry.handler.note_operand]
            rule = self.mode_for(shown)[1]
        except Exception as e:  # noqa: BLE001
            self._failed("change", e)
            return None
        action: Action
        try:
            rv = self.fast.made_here(lambda: do(stop, self.tracer.ctx, list(guests)), *guests)
            action = Emulate(rv, note=Note(rule=rule, path=shown),
                             decision=Decision.REDIRECTED)
        except GuestErrno as e:
            action = Deny(e.errno, Note(rule=rule, path=shown, detail=e.detail), native=True)
        except Exception as e:  # noqa: BLE001 - fail closed, as the Python loop does (#37)
            self._failed("change", e)
            action = Deny(errno.EPERM, Note(rule="builtin:internal-error",
                                            detail=f"internal error: {type(e).__name__}: {e}"))
        try:
            self._log(task, stop, action, t0)
        except Exception as e:  # noqa: BLE001
            self._failed("change's record", e)
        return action.result if isinstance(action, Emulate) else -action.errno
