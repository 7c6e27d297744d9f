"""What a handler decides for one syscall stop. Only `tracer.apply` turns these into register and
memory writes, so every change to a tracee goes through one audited place.

The records are named tuples compared by kind (kind.py): made at every stop, and defined at
every start, where frozen dataclasses cost a millisecond each."""

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, Union

from .kind import kind_hash, other_kind, same_kind

if TYPE_CHECKING:
    from .stop import Stop


class Decision(enum.Enum):
    """The log's name for what happened to a call."""

    ALLOWED = "allowed"
    REDIRECTED = "redirected"
    EMULATED = "emulated"
    DENIED = "denied"
    KILLED = "killed"


class Note(NamedTuple):
    """Why a decision was taken, for the intercept log."""

    rule: str = ""                  # the policy rule that decided, e.g. "files.rules[2]"
    path: bytes | None = None       # the path as the program gave it (absolute, resolved)
    host_path: bytes | None = None  # what the kernel was given instead, when different
    hint: str = ""                  # for denials: the policy change that would allow the call
    detail: str = ""                # anything else worth a word (e.g. "unknown syscall")
    address: str = ""               # a socket address the call names
    target: str = ""                # where a redirect sent it instead
    audit: bool = False             # logged even when allowed (every connection attempt)

    __eq__, __ne__, __hash__ = same_kind, other_kind, kind_hash


NO_NOTE = Note()


class SlotData(NamedTuple):
    """Bytes the tracer places in the thread's read-only slot; the argument points at them.

    `refs` patches pointers into the bytes: (offset, i) stores there the slot address of the
    action's i-th blob (its argument blobs in order, then its `extra` ones): a msghdr whose
    msg_name points at the sockaddr copied next to it.
    """

    data: bytes
    refs: tuple[tuple[int, int], ...] = ()

    __eq__, __ne__, __hash__ = same_kind, other_kind, kind_hash


ArgValue = Union[int, SlotData]


class ExitVerdict(enum.Enum):
    KEEP = "keep"        # return the kernel's result unchanged
    RESTART = "restart"  # re-run the original call from scratch (e.g. a lost resolution race)
    KILL = "kill"        # a containment check failed after the fact: kill the process


class ExitResult(NamedTuple):
    """What an exit hook decides: keep the result, replace it, restart the call, or kill."""

    verdict: ExitVerdict = ExitVerdict.KEEP
    result: int | None = None       # replacement return value (with KEEP), None = kernel's
    detail: str = ""
    writes: tuple[tuple[int, bytes], ...] = ()   # (tracee address, bytes) to store

    __eq__, __ne__, __hash__ = same_kind, other_kind, kind_hash


# An exit hook sees the stop and the kernel's raw result (negative errno on failure).
ExitHook = Callable[["Stop", int], ExitResult]


class Allow(NamedTuple):
    """Let the call proceed unchanged (optionally observing its result)."""

    note: Note = NO_NOTE
    on_exit: ExitHook | None = None
    decision: Decision = Decision.ALLOWED

    __eq__, __ne__, __hash__ = same_kind, other_kind, kind_hash


class Rewrite(NamedTuple):
    """Change the call's number and/or arguments, then let the kernel run it.

    The original argument registers are restored at the exit stop (the syscall ABI preserves
    them), and `on_exit` may adjust the result.
    """

    args: tuple[tuple[int, ArgValue], ...]
    nr: int | None = None
    note: Note = NO_NOTE
    on_exit: ExitHook | None = None
    decision: Decision = Decision.REDIRECTED
    writes: tuple[tuple[int, bytes], ...] = ()   # (tracee address, bytes) to store first
    extra: tuple[SlotData, ...] = ()             # slot blobs no register points at directly

    __eq__, __ne__, __hash__ = same_kind, other_kind, kind_hash


class Emulate(NamedTuple):
    """Skip the call; the tracer did its work and this is the result (>= 0).

    `decision` is ALLOWED when the tracer only made the very call the program asked for, on
    the path it checked (a mirrored stat): nothing changed but who made it.
    """

    result: int
    writes: tuple[tuple[int, bytes], ...] = ()   # (tracee address, bytes) to store first
    note: Note = NO_NOTE
    decision: Decision = Decision.EMULATED

    __eq__, __ne__, __hash__ = same_kind, other_kind, kind_hash


class Deny(NamedTuple):
    """Skip the call and fail it with `errno`.

    `native` marks the failure the kernel itself would have returned (a missing path, a bad
    pointer): the tracer answers it so that nothing unchecked reaches the kernel, but the log
    records the call as allowed, not denied by the policy.
    """

    errno: int
    note: Note = NO_NOTE
    native: bool = False

    __eq__, __ne__, __hash__ = same_kind, other_kind, kind_hash


class Kill(NamedTuple):
    """Kill the calling process (SIGKILL) before the call runs."""

    reason: str
    note: Note = NO_NOTE

    __eq__, __ne__, __hash__ = same_kind, other_kind, kind_hash


Action = Union[Allow, Rewrite, Emulate, Deny, Kill]

ALLOW = Allow()


def decision_of(action: Action) -> Decision:
    if isinstance(action, (Allow, Rewrite)):
        return action.decision
    if isinstance(action, Emulate):
        return action.decision
    if isinstance(action, Deny):
        return Decision.ALLOWED if action.native else Decision.DENIED
    return Decision.KILLED

