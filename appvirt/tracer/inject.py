"""Map the slot area into a freshly exec'd process, before any of its code runs.

At PTRACE_EVENT_EXEC the process has exactly one thread, stopped inside execve. The tracer
puts a `syscall` instruction over the first two bytes of the entry point (PTRACE_POKETEXT
copies the page privately, as debuggers do), lets execve return, and makes the process run
three calls from there: openat(/proc/KEEPER/fd/N, O_RDONLY), mmap(SLOT_BASE, PROT_READ,
MAP_SHARED|MAP_FIXED_NOREPLACE), close. Then it restores the bytes and registers and checks
/proc/PID/maps. Any failure kills the process: it never runs without its slots.
"""

from __future__ import annotations

import ctypes
import enum
import mmap
import os

from ..core import sysnums
from ..core.slotlayout import AREA_SIZE, SLOT_BASE
from . import _ptrace as pt
from .memory import TraceeMemory
from .slots import MAP_FIXED_NOREPLACE, SlotArena

SYSCALL_INSN = 0x050F
AT_FDCWD = 0xFFFFFFFFFFFFFF9C
O_RDONLY_CLOEXEC = 0o2000000


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


class Step(enum.Enum):
    EXECVE_EXIT = "execve-exit"
    OPEN = "open"
    MMAP = "mmap"
    CLOSE = "close"


class InjectionFailed(Exception):
    pass


class Injection:
    """The injection state of one process; driven by its stops."""

    def __init__(self, tid: int, arena: SlotArena, memory: TraceeMemory,
                 hide_vdso: bool = False) -> None:
        self.tid, self.arena, self.memory = tid, arena, memory
        self.regs0 = pt.get_regs(tid)
        self.entry = self.regs0.rip
        if hide_vdso:
            hide_vdso_from(tid, self.regs0.rsp, memory)
        self.saved = pt.peek_text(tid, self.entry)
        pt.poke_text(tid, self.entry, (self.saved & ~0xFFFF) | SYSCALL_INSN)
        self.step = Step.EXECVE_EXIT
        self.fd = -1
        pt.syscall(tid)

    def _run(self, nr: int, *args: int) -> None:
        regs = pt.user_regs_struct()
        ctypes.memmove(ctypes.addressof(regs), ctypes.addressof(self.regs0),
                       ctypes.sizeof(regs))
        regs.rip, regs.rax, regs.orig_rax = self.entry, nr, 0xFFFFFFFFFFFFFFFF
        for name, value in zip(("rdi", "rsi", "rdx", "r10", "r8", "r9"), args):
            setattr(regs, name, value & 0xFFFFFFFFFFFFFFFF)
        pt.set_regs(self.tid, regs)
        pt.syscall(self.tid)

    def on_syscall_stop(self) -> bool:
        """Advance on a syscall stop; True when the mapping is in place and the process runs."""
        info = pt.syscall_info(self.tid)
        if info.op != pt.OP_EXIT:
            pt.syscall(self.tid)       # entry and seccomp stops of our own calls
            return False
        rv = info.rval
        if self.step is Step.EXECVE_EXIT:
            path = self.arena.keeper_path() + b"\0"
            addr = (self.regs0.rsp - 512 - len(path)) & ~0xF
            self.memory.write(self.tid, addr, path)
            self._run(sysnums.nr("openat"), AT_FDCWD, addr, O_RDONLY_CLOEXEC, 0)
            self.step = Step.OPEN
        elif self.step is Step.OPEN:
            if rv < 0:
                raise InjectionFailed(f"open of the slot area failed: {os.strerror(-rv)}")
            self.fd = rv
            self._run(sysnums.nr("mmap"), SLOT_BASE, AREA_SIZE, mmap.PROT_READ,
                      mmap.MAP_SHARED | MAP_FIXED_NOREPLACE, self.fd, 0)
            self.step = Step.MMAP
        elif self.step is Step.MMAP:
            if rv != SLOT_BASE:
                raise InjectionFailed(f"mmap of the slot area failed: {rv}")
            self._run(sysnums.nr("close"), self.fd)
            self.step = Step.CLOSE
        else:
            pt.poke_text(self.tid, self.entry, self.saved)
            self.regs0.rax = 0        # execve's own return value
            pt.set_regs(self.tid, self.regs0)
            if not self.arena.mapped_in(self.tid):
                raise InjectionFailed("the slot area is not mapped as expected")
            return True
        return False
