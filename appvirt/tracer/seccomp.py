"""The seccomp-bpf filter, generated from the syscall table.

Prologue (threat model, invariant 1): any arch but x86_64 kills the process (so does `int
$0x80`, which reports AUDIT_ARCH_I386), an x32 number kills it, and a negative number is traced
(the tracer answers ENOSYS). Then a binary search over syscall-number ranges returns ALLOW for
calls that run natively, TRACE for table entries (after their register prefilters), and TRACE
for numbers nobody knows, so a syscall newer than the table is refused, never let through.

RET_TRACE data: the entry's table index + 1 in bits 0-14, bit 15 when the entry may need its
exit stop. The tracer cross-checks it against the kernel's syscall info (a tracee filter could
forge it, #4), so it is a hint, never trusted for a decision.

`notified` calls (those the compiled loop answers without touching registers, fastpath.py)
go to the tracer as seccomp user notifications (RET_USER_NOTIF) instead of ptrace stops,
after the same conditions; one whose sixth argument register holds `mark` goes to RET_TRACE:
that is how the tracer hands a notified call to its ptrace handlers (_fastpath_notify.c).
"""

import ctypes
import errno
import os
import struct
import threading
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from ..core import sysnums
from ..core.table import (UNTRACED, ArgBitsAny, ArgBitsClear, ArgHighIn, ArgHighNotIn, ArgIn,
                          ArgNotIn, SyscallEntry, SyscallTable, TraceCondition)
from ..errors import EnvironmentUnsupported

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
RET_KILL_PROCESS = 0x80000000
RET_TRACE = 0x7FF00000
RET_USER_NOTIF = 0x7FC00000
RET_ALLOW = 0x7FFF0000
DATA_NEEDS_EXIT = 0x8000
DATA_INDEX_MASK = 0x7FFF

# classic BPF opcodes
LD_W_ABS = 0x20
JMP_JA, JMP_JEQ, JMP_JGE, JMP_JSET = 0x05, 0x15, 0x35, 0x45
RET_K = 0x06

OFF_NR, OFF_ARCH = 0, 4


def _arg_lo(i: int) -> int:
    return 16 + 8 * i


def _arg_hi(i: int) -> int:
    return 20 + 8 * i


class Insn(NamedTuple):
    """One classic BPF instruction (struct sock_filter). A named tuple: a filter has 1 200 of
    them, built at every start, and a tuple is much cheaper to make than a frozen record."""

    code: int
    jt: int
    jf: int
    k: int


class _Asm:
    """A tiny assembler: conditional jumps go to the next insn or skip one, long jumps use JA."""

    def __init__(self) -> None:
        self.code: list[tuple[int, int, int, int | str]] = []
        self.labels: dict[str, int] = {}
        self._n = 0

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def fresh(self) -> str:
        self._n += 1
        return f"L{self._n}"

    def ld(self, offset: int) -> None:
        self.code.append((LD_W_ABS, 0, 0, offset))

    def ret(self, k: int) -> None:
        self.code.append((RET_K, 0, 0, k))

    def goto_if(self, op: int, k: int, target: str) -> None:
        """if (A op k) goto target."""
        self.code.append((op, 0, 1, k))
        self.code.append((JMP_JA, 0, 0, target))

    def goto(self, target: str) -> None:
        self.code.append((JMP_JA, 0, 0, target))

    def assemble(self) -> list[Insn]:
        out = []
        for pc, (code, jt, jf, k) in enumerate(self.code):
            if isinstance(k, str):
                k = self.labels[k] - pc - 1
            out.append(Insn(code, jt, jf, k))
        return out


def _condition(asm: _Asm, cond: TraceCondition, trace: str) -> None:
    """Emit: if cond holds goto trace (else fall through)."""
    if isinstance(cond, ArgBitsAny):
        asm.ld(_arg_lo(cond.arg))
        asm.goto_if(JMP_JSET, cond.mask, trace)
    elif isinstance(cond, ArgBitsClear):
        skip = asm.fresh()
        asm.ld(_arg_lo(cond.arg))
        asm.goto_if(JMP_JSET, cond.mask, skip)
        asm.goto(trace)
        asm.label(skip)
    elif isinstance(cond, (ArgIn, ArgHighIn)):
        asm.ld(_arg_lo(cond.arg) if isinstance(cond, ArgIn) else _arg_hi(cond.arg))
        for v in sorted(cond.values):
            asm.goto_if(JMP_JEQ, v, trace)
    elif isinstance(cond, (ArgNotIn, ArgHighNotIn)):
        skip = asm.fresh()
        asm.ld(_arg_lo(cond.arg) if isinstance(cond, ArgNotIn) else _arg_hi(cond.arg))
        for v in sorted(cond.values):
            asm.goto_if(JMP_JEQ, v, skip)
        asm.goto(trace)
        asm.label(skip)
    else:  # pragma: no cover - the table only holds the types above
        raise TypeError(cond)


def trace_data(table: SyscallTable, entry: SyscallEntry) -> int:
    index = table.position[entry.name] + 1
    return index | (DATA_NEEDS_EXIT if entry.needs_exit else 0)


# This process's filters (a warm server's too), and the same packed for the kernel.
_built: dict[tuple, tuple[Insn, ...]] = {}
_packed: dict[tuple, "PackedFilter"] = {}


class Notified(NamedTuple):
    """The calls sent to the tracer as user notifications, and the sixth-argument value that
    sends one of them to RET_TRACE instead."""

    calls: frozenset[str]
    mark: int


def _filter_key(table: SyscallTable,
                traced: Mapping[str, tuple[TraceCondition, ...]] | None,
                notified: Notified | None) -> tuple:
    return (id(table), None if traced is None else tuple(sorted(traced.items())),
            None if notified is None else (tuple(sorted(notified.calls)), notified.mark))


def build_filter(table: SyscallTable,
                 traced: Mapping[str, tuple[TraceCondition, ...]] | None = None,
                 notified: Notified | None = None) -> list[Insn]:
    """The filter program. `traced`: the entries the policy needs, with the conditions under
    which each stops (SyscallEntry.conditions); default: every entry, as declared. Of those,
    `notified.calls` notify instead (see above). Each one is built once a process (2 ms): a
    warm server builds the default policy's, and its runs find them built."""
    key = _filter_key(table, traced, notified)
    prog = _built.get(key)
    if prog is None:
        prog = _built[key] = tuple(_build(table, traced, notified))
    return list(prog)


def packed_filter(table: SyscallTable,
                  traced: Mapping[str, tuple[TraceCondition, ...]] | None = None,
                  notified: Notified | None = None) -> "PackedFilter":
    """build_filter's program packed (PackedFilter), also once a process (0.6 ms): a run
    forked by a warm server finds the default policy's packed. Shared: nothing writes it."""
    key = _filter_key(table, traced, notified)
    packed = _packed.get(key)
    if packed is None:
        packed = _packed[key] = PackedFilter(build_filter(table, traced, notified),
                                             listener=notified is not None)
    return packed


def _ret_traced(asm: _Asm, data: int, notified: Notified | None, name: str) -> None:
    """Return RET_TRACE with data; for a notified call, RET_USER_NOTIF unless marked."""
    if notified is None or name not in notified.calls:
        asm.ret(RET_TRACE | data)
        return
    high, trace, notify = asm.fresh(), asm.fresh(), asm.fresh()
    asm.ld(_arg_lo(5))
    asm.goto_if(JMP_JEQ, notified.mark & 0xFFFFFFFF, high)
    asm.goto(notify)
    asm.label(high)
    asm.ld(_arg_hi(5))
    asm.goto_if(JMP_JEQ, notified.mark >> 32, trace)
    asm.label(notify)
    asm.ret(RET_USER_NOTIF)
    asm.label(trace)
    asm.ret(RET_TRACE | data)


def _build(table: SyscallTable,
           traced: Mapping[str, tuple[TraceCondition, ...]] | None,
           notified: Notified | None = None) -> list[Insn]:
    if traced is None:
        traced = {e.name: e.trace_if for e in table.entries}
    # action per number: ("allow",) | ("trace", data, name) | ("cond", nr, data)
    def action(nr: int) -> tuple:
        name = sysnums.NAME_BY_NR.get(nr)
        if name is None:
            return ("trace", 0, "")
        if name in UNTRACED:
            return ("allow",)
        entry = table.by_name.get(name)
        if entry is None:
            return ("trace", 0, "")
        if name not in traced:
            return ("allow",)
        data = trace_data(table, entry)
        return ("cond", nr, data) if traced[name] else ("trace", data, name)

    ranges: list[list] = []        # [lo, hi, action]
    for nr in range(sysnums.MAX_NR + 1):
        a = action(nr)
        if ranges and ranges[-1][2] == a and a[0] != "cond":
            ranges[-1][1] = nr
        else:
            ranges.append([nr, nr, a])
    if ranges[-1][2] == ("trace", 0, ""):
        ranges[-1][1] = X32_SYSCALL_BIT - 1
    else:
        ranges.append([sysnums.MAX_NR + 1, X32_SYSCALL_BIT - 1, ("trace", 0, "")])

    asm = _Asm()
    asm.ld(OFF_ARCH)
    asm.goto_if(JMP_JEQ, AUDIT_ARCH_X86_64, "native")
    asm.ret(RET_KILL_PROCESS)
    asm.label("native")
    asm.ld(OFF_NR)
    asm.goto_if(JMP_JGE, 0x80000000, "unknown")      # negative numbers: ENOSYS from the tracer
    asm.goto_if(JMP_JSET, X32_SYSCALL_BIT, "kill")
    leaves: list[tuple[str, tuple]] = []

    def tree(lo: int, hi: int) -> None:
        if lo == hi:
            lbl = asm.fresh()
            leaves.append((lbl, ranges[lo][2]))
            asm.goto(lbl)
            return
        mid = (lo + hi + 1) // 2
        right = asm.fresh()
        asm.goto_if(JMP_JGE, ranges[mid][0], right)
        tree(lo, mid - 1)
        asm.label(right)
        tree(mid, hi)

    tree(0, len(ranges) - 1)
    asm.label("kill")
    asm.ret(RET_KILL_PROCESS)
    asm.label("unknown")
    asm.ret(RET_TRACE)
    for lbl, act in leaves:
        asm.label(lbl)
        if act[0] == "allow":
            asm.ret(RET_ALLOW)
        elif act[0] == "trace":
            _ret_traced(asm, act[1], notified, act[2])
        else:
            _, nr, data = act
            trace = asm.fresh()
            for cond in traced[sysnums.NAME_BY_NR[nr]]:
                _condition(asm, cond, trace)
            asm.ret(RET_ALLOW)
            asm.label(trace)
            _ret_traced(asm, data, notified, sysnums.NAME_BY_NR[nr])
    return asm.assemble()


def run_filter(prog: list[Insn], nr: int, args: tuple[int, ...] = (0,) * 6,
               arch: int = AUDIT_ARCH_X86_64) -> int:
    """Interpret the program on one seccomp_data, as the kernel would (for tests and docs)."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, *[a & 0xFFFFFFFFFFFFFFFF for a in args])
    acc, pc = 0, 0
    while True:
        i = prog[pc]
        if i.code == LD_W_ABS:
            acc = struct.unpack_from("<I", data, i.k)[0]
        elif i.code == RET_K:
            return i.k
        elif i.code == JMP_JA:
            pc += i.k
        else:
            hit = {JMP_JEQ: acc == i.k, JMP_JGE: acc >= i.k, JMP_JSET: bool(acc & i.k)}[i.code]
            pc += i.jt if hit else i.jf
        pc += 1


# --- installing it ---------------------------------------------------------------------------
class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint)]


_SOCK_FILTER = struct.Struct("=HBBI")       # the same layout, packed in one go


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


PR_SET_NO_NEW_PRIVS = 38
SYS_SECCOMP = 317
SECCOMP_SET_MODE_FILTER = 1
# Without SPEC_ALLOW the kernel also turns on the Spectre v4 (SSBD) mitigation for the task,
# which slows every syscall and the program's own code; the filter needs no such protection.
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 1 << 2
FILTER_FLAGS = SECCOMP_FILTER_FLAG_SPEC_ALLOW
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5       # Linux 5.19
NOTIFY_FLAGS = SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
_libc = ctypes.CDLL(None, use_errno=True)


class PackedFilter:
    """A filter program in the kernel's struct sock_fprog form, ready to install: packed by
    the tracer before it forks, so that its child, between fork and exec, only installs."""

    def __init__(self, prog: Sequence[Insn], listener: bool = False) -> None:
        # packing in one go beats 1 200 ctypes objects
        raw = b"".join([_SOCK_FILTER.pack(i.code, i.jt, i.jf, i.k) for i in prog])
        self._array = (_SockFilter * len(prog)).from_buffer_copy(raw)   # what fprog points to
        self.fprog = _SockFprog(len(prog), self._array)
        self.raw = raw                    # the same, for a warm run's client (clientspawn.py)
        self.listener = listener          # it notifies: installed with a listener


def install_flags(packed: PackedFilter) -> int:
    """seccomp(2)'s flags for installing this filter."""
    return FILTER_FLAGS | (NOTIFY_FLAGS if packed.listener else 0)


def install(prog: Sequence[Insn] | PackedFilter) -> int:
    """Set no_new_privs and install the filter on the calling thread (raises OSError); the
    listener's fd (close-on-exec) for a filter that notifies, else -1. Its notifications
    wait killably once received: a call the tracer is making for the program is not
    restarted by a signal after the tracer made it."""
    packed = prog if isinstance(prog, PackedFilter) else PackedFilter(prog)
    flags = install_flags(packed)
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {errno.errorcode.get(err)}")
    fd = _libc.syscall(SYS_SECCOMP, SECCOMP_SET_MODE_FILTER, flags, ctypes.byref(packed.fprog))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp(SET_MODE_FILTER): {errno.errorcode.get(err)}")
    return fd if packed.listener else -1


_available = False      # a trial succeeded in this process (or the warm server it forked from)
_notify_available = False   # ... and one with a listener (Linux 5.19)


def notify_available() -> bool:
    """Whether filters that notify can be installed here (after check_available)."""
    return _notify_available


def check_available() -> None:
    """Raise EnvironmentUnsupported if seccomp filters cannot be installed here.

    The trial (an allow-everything filter) runs on a short-lived thread: no_new_privs and a
    filter installed without SECCOMP_FILTER_FLAG_TSYNC belong to the calling thread alone, so
    the tracer is left as it was, without the cost of forking a copy of it for the test. Once
    it succeeded, the answer stands for the process and its forks (the warm server's runs have
    its seccomp, no_new_privs and namespaces: warm/peer.py).
    """
    global _available
    if _available:
        return
    failures: list[OSError] = []

    def trial() -> None:
        global _notify_available
        try:
            install([Insn(RET_K, 0, 0, RET_ALLOW)])
        except OSError as e:
            failures.append(e)
            return
        try:                    # and one with a listener that waits killably
            os.close(install(PackedFilter([Insn(RET_K, 0, 0, RET_ALLOW)], listener=True)))
            _notify_available = True
        except OSError:
            pass

    thread = threading.Thread(target=trial, name="appvirt-seccomp-check")
    thread.start()
    thread.join()
    if failures:
        code = failures[0].errno or 1
        raise EnvironmentUnsupported(
            f"seccomp filters are not available here ({errno.errorcode.get(code, code)}): "
            "appvirt needs Linux seccomp-bpf (a container may block it)")
    _available = True
