"""Map the slot area into a freshly exec'd process, before any of its code runs.

At PTRACE_EVENT_EXEC the process has exactly one thread, stopped inside execve, and no code of
its own has run. The tracer writes a short stub over the entry point (TraceeMemory.write_code:
into a private copy of the page, as debuggers' breakpoints are) and points the thread at it;
when execve returns, the stub runs openat(/proc/KEEPER/fd/N, O_RDONLY), mmap(SLOT_BASE,
PROT_READ (and PROT_EXEC for the trampolines), MAP_SHARED|MAP_FIXED_NOREPLACE) and close,
with trampolines an anonymous mmap of the result cells after the area, and ends on int3. The
tracer then puts the bytes and registers back (execve's return value 0 in rax) and checks
the mapping: the compiled loop checks the fd the mmap maps, at its stop, to be the area's file
(fastpath's stub_mapped: 58 µs of /proc/PID/maps a process spared); without it the tracer
reads /proc/PID/maps. Any failure kills the process: it never runs without its slots.

Three stops besides the exec event (the seccomp stops of the openat and of the mmap, which the
filter traces at the slot area's address, and the int3; a fourth for the cells' mmap), where
stepping each call from the tracer took nine (every call's entry and exit, its seccomp stops,
and execve's exit).
"""

from __future__ import annotations

import errno
import functools
import mmap
import signal
import struct
from collections.abc import Callable

from ..core import sysnums
from ..core.slotlayout import AREA_SIZE, CELL_BASE, CELLS_SIZE, SLOT_BASE
from . import _ptrace as pt
from .memory import PAGE, TraceeMemory
from .slots import MAP_FIXED_NOREPLACE, SlotArena

USER64_CS = 0x33                 # the code segment of 64-bit user code (0x23: a 32-bit program)
FAULTS = frozenset({signal.SIGILL, signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE})
O_RDONLY_CLOEXEC = 0o2000000


@functools.lru_cache(maxsize=4)
def _stub_code(prot: int = mmap.PROT_READ, cells: bool = False) -> bytes:
    """The stub's instructions (x86-64); the keeper's path follows them (see stub). prot: the
    area's protection; cells: the result cells are mapped too (trampoline.py).
    Results: the openat's stays in r13, the area mmap's comes back in rax, the cells' in r12."""
    nr = sysnums.nr
    head = b"".join((
        b"\xb8" + struct.pack("<I", nr("openat")),           # mov eax, openat
        b"\x48\xc7\xc7" + struct.pack("<i", -100),            # mov rdi, AT_FDCWD
    ))
    open_rest = b"".join((
        b"\xba" + struct.pack("<I", O_RDONLY_CLOEXEC),        # mov edx, O_RDONLY|O_CLOEXEC
        b"\x0f\x05",                                          # syscall
        b"\x49\x89\xc0",                                      # mov r8, rax
        b"\x49\x89\xc5",                                      # mov r13, rax
        b"\x48\x85\xc0",                                      # test rax, rax
    ))
    maps = b"".join((
        b"\xb8" + struct.pack("<I", nr("mmap")),              # mov eax, mmap
        b"\x48\xbf" + struct.pack("<Q", SLOT_BASE),           # movabs rdi, SLOT_BASE
        b"\x48\xbe" + struct.pack("<Q", AREA_SIZE),           # movabs rsi, AREA_SIZE
        b"\xba" + struct.pack("<I", prot),                    # mov edx, prot
        b"\x41\xba" + struct.pack("<I", mmap.MAP_SHARED | MAP_FIXED_NOREPLACE),  # mov r10d, flags
        b"\x45\x31\xc9",                                      # xor r9d, r9d (offset 0)
        b"\x0f\x05",                                          # syscall
        b"\x48\x89\xc3",                                      # mov rbx, rax
        b"\xb8" + struct.pack("<I", nr("close")),             # mov eax, close
        b"\x4c\x89\xc7",                                      # mov rdi, r8
        b"\x0f\x05",                                          # syscall
    ))
    if cells:
        maps += b"".join((
            b"\xb8" + struct.pack("<I", nr("mmap")),          # mov eax, mmap
            b"\x48\xbf" + struct.pack("<Q", CELL_BASE),       # movabs rdi, CELL_BASE
            b"\xbe" + struct.pack("<I", CELLS_SIZE),          # mov esi, CELLS_SIZE
            b"\xba" + struct.pack("<I", mmap.PROT_READ | mmap.PROT_WRITE),   # mov edx, prot
            b"\x41\xba" + struct.pack("<I", mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
                                      | MAP_FIXED_NOREPLACE),   # mov r10d, flags
            b"\x49\xc7\xc0" + struct.pack("<i", -1),          # mov r8, -1 (no fd)
            b"\x45\x31\xc9",                                  # xor r9d, r9d
            b"\x0f\x05",                                      # syscall
            b"\x49\x89\xc4",                                  # mov r12, rax
        ))
    tail = b"\x48\x89\xd8" + b"\xcc"                          # mov rax, rbx; trap: int3
    assert len(maps) + len(tail) - 1 < 0x80, "js takes a signed 8-bit displacement"
    js = b"\x78" + bytes([len(maps) + len(tail) - 1])         # js trap (a failed open)
    lea_at = len(head)
    rest = open_rest + js + maps + tail
    path = lea_at + 7 + len(rest)                             # right after the int3
    lea = b"\x48\x8d\x35" + struct.pack("<i", path - (lea_at + 7))   # lea rsi, [rip + path]
    return head + lea + rest


def stub(keeper_path: bytes, prot: int = mmap.PROT_READ, cells: bool = False) -> bytes:
    """The stub for this keeper path (NUL-terminated right after the int3)."""
    return _stub_code(prot, cells) + keeper_path + b"\0"


def stub_address(entry: int, size: int) -> int:
    """Where a stub of `size` bytes goes: at the entry point, or as much before it as keeps
    it within the entry's page (which is mapped and executable as a whole)."""
    return min(entry, (entry | (PAGE - 1)) + 1 - size)


AT_NULL, AT_IGNORE, AT_SYSINFO_EHDR = 0, 1, 33


def hide_vdso_from(tid: int, sp: int, memory: TraceeMemory) -> bool:
    """Turn the auxiliary vector's AT_SYSINFO_EHDR entry into AT_IGNORE, so the C library
    finds no vDSO and makes real clock syscalls (measurements.md; PRoot's kompat does it too).

    The initial stack: argc, argv[argc] + NULL, envp... + NULL, then (type, value) pairs up to
    AT_NULL. Returns whether an entry was changed."""
    argc = int.from_bytes(memory.read(tid, sp, 8), "little")
    p = sp + 8 * (argc + 2)                      # past argc, argv and its NULL
    while int.from_bytes(memory.read(tid, p, 8), "little"):
        p += 8                                   # envp
    p += 8
    for _ in range(64):                          # auxv is short; bound the walk
        a_type = int.from_bytes(memory.read(tid, p, 8), "little")
        if a_type == AT_NULL:
            return False
        if a_type == AT_SYSINFO_EHDR:
            memory.write(tid, p, AT_IGNORE.to_bytes(8, "little"))
            return True
        p += 16
    return False


class InjectionFailed(Exception):
    pass


def _errno_text(value: int) -> str:
    """A raw syscall result as the stub left it: -errno as its name."""
    value = value - (1 << 64) if value >= 1 << 63 else value
    return errno.errorcode.get(-value, str(-value)) if -4096 < value < 0 else hex(value)


class Injection:
    """The injection state of one process, from its exec event to the stub's int3."""

    def __init__(self, tid: int, arena: SlotArena, memory: TraceeMemory,
                 hide_vdso: bool = False,
                 checked: Callable[[int], bool] | None = None) -> None:
        """checked(tid): whether the stub's mmap was found to map the area's file when it
        was made (fastpath's stub_mapped), so that /proc/PID/maps need not be read."""
        self.tid, self.arena, self.memory, self.checked = tid, arena, memory, checked
        self.regs0 = pt.get_regs(tid)
        if self.regs0.cs != USER64_CS:        # the stub, and the filter, are x86-64 only
            raise InjectionFailed("not an x86-64 program: appvirt runs x86-64 programs only")
        if hide_vdso:
            hide_vdso_from(tid, self.regs0.rsp, memory)
        code = stub(arena.keeper_path(), arena.prot, arena.trampolines)
        self.trap = len(_stub_code(arena.prot, arena.trampolines)) - 1   # the int3's offset
        self.addr = stub_address(self.regs0.rip, len(code))
        self.saved = memory.read(tid, self.addr, len(code))
        memory.write_code(tid, self.addr, code)
        regs = pt.copy_regs(self.regs0)
        regs.rip = self.addr                  # where execve returns to
        pt.set_regs(tid, regs)
        pt.cont(tid)

    def on_signal(self, sig: int) -> bool:
        """A signal-delivery stop: True when it is the stub's int3 and the mapping is in place
        (the process may run its own code: the caller resumes it); False for any other
        signal, which the caller holds until then. A fault is the stub's own: resumed, it
        would fault again for ever."""
        if sig in FAULTS:
            raise InjectionFailed(f"the slot area's mapping faulted ({signal.Signals(sig).name})")
        if sig != signal.SIGTRAP:
            return False
        regs = pt.get_regs(self.tid)
        if regs.rip != self.addr + self.trap + 1:
            return False                      # a SIGTRAP sent by someone
        if regs.r13 >= 1 << 63:
            raise InjectionFailed(f"open of the slot area failed: {_errno_text(regs.r13)}")
        if regs.rax != SLOT_BASE:
            raise InjectionFailed(f"mmap of the slot area failed: {_errno_text(regs.rax)}")
        if self.arena.trampolines and regs.r12 != CELL_BASE:
            raise InjectionFailed(f"mmap of the result cells failed: {_errno_text(regs.r12)}")
        self.memory.write_code(self.tid, self.addr, self.saved)
        self.regs0.rax = 0                    # execve's own return value
        pt.set_regs(self.tid, self.regs0)
        if not ((self.checked is not None and self.checked(self.tid))
                or self.arena.mapped_in(self.tid)):
            raise InjectionFailed("the slot area is not mapped as expected")
        return True
