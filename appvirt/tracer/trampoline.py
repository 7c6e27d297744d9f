"""The trampolines that give a thread its registers back after an open rewritten from its
slot, so that the tracer needs no exit stop for it.

At the open's seccomp stop the tracer saves the program's argument registers, its return
address and call number in the slot's trampoline data, points the registers at the checked
path in the slot (openat2) and RIP at the trampoline, and lets the call run. When the kernel
returns to the trampoline, it stores the result with the open's token in the process's result
cell (one 8-byte store: the token in the high half), reloads rdi, rsi, rdx and r10, and jumps
back to the program; on ELOOP (a component became a symlink after the check) it jumps to the
program's own syscall instruction instead, with rax the program's call, which the tracer then
checks afresh. It uses only rcx and r11, which the syscall instruction clobbers anyway, and no
instruction that changes the flags.

The data is in the sealed memfd, read-only to the program: it cannot change what is put back
in other threads' registers, and the path the call opens stays the checked one. The cell is
the program's to write: the tracer trusts it only for the result record of the open, and
checks the upper layer itself before the overlay's index learns a file (note_made).

A syscall instruction precedes each trampoline: when the kernel restarts the rewritten call
without a signal (-ERESTART* with no handler to run), it moves RIP back two bytes, and the
call runs again from the slot, as the tracer checked it. A signal delivered while RIP is in the
trampoline is handled by the tracer, which does the trampoline's work itself (_fastpath.c).

The engine writes a slot's trampoline (code()) the first time it sends a thread there. The
layout constants below are the C engine's too (_fastpath.h); a test compares them.
"""

from __future__ import annotations

import struct

from ..core.slotlayout import CELL_BASE, TRAMP_BASE

ENTRY = 2                   # the first instruction, after the restart's syscall instruction
DATA = 128                  # the data: rdi, rsi, rdx, r10, return address, call number, the
DATA_WORDS = 8              # program's syscall instruction, the token (high half)
ELOOP = 40


def _rip_rel(at: int, length: int, target: int) -> bytes:
    """The disp32 of an instruction of `length` bytes at offset `at` addressing `target`."""
    return struct.pack("<i", target - (at + length))


def code() -> bytes:
    """A trampoline's code, ending before its data (at offset DATA); every slot's is the same,
    its data and its cell being as far from it as any other slot's from theirs."""
    cell = CELL_BASE - TRAMP_BASE                   # relative to the trampoline's start
    out = bytearray(b"\x0f\x05")                    # syscall (the kernel's restart)

    def rip_rel(opcode: bytes, target: int) -> None:
        out.extend(opcode + _rip_rel(len(out), len(opcode) + 4, target))

    def data(i: int) -> int:
        return DATA + 8 * i

    rip_rel(b"\x48\x8b\x0d", data(7))               # mov rcx, [token << 32]
    out += b"\x41\x89\xc3"                          # mov r11d, eax (zero-extended)
    out += b"\x4a\x8d\x0c\x19"                      # lea rcx, [rcx + r11]
    rip_rel(b"\x48\x89\x0d", cell)                  # mov [cell], rcx
    for i, opcode in enumerate((b"\x48\x8b\x3d", b"\x48\x8b\x35",       # rdi, rsi,
                                b"\x48\x8b\x15", b"\x4c\x8b\x15")):     # rdx, r10
        rip_rel(opcode, data(i))
    out += b"\x48\x8d\x48" + bytes([ELOOP])         # lea rcx, [rax + ELOOP]
    out += b"\xe3\x06"                              # jrcxz restart
    rip_rel(b"\xff\x25", data(4))                   # jmp [return address]
    rip_rel(b"\x48\x8b\x05", data(5))               # restart: mov rax, [call number]
    rip_rel(b"\xff\x25", data(6))                   # jmp [syscall instruction]
    assert len(out) == LAST_JUMP + 6 <= DATA
    return bytes(out)


LAST_JUMP = 70              # the restart's jump: rax already holds the program's call
