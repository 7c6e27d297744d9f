"""General-purpose registers: numbering (ModRM/REX order) and x86-64 register names.

The numbering is the one exit qualifications use for "GPR" fields (SDM Tables 27-3/27-4).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Gpr(enum.IntEnum):
    """General-purpose register number as encoded in ModRM + REX (SDM Vol. 2 2.1.5)."""

    RAX = 0
    RCX = 1
    RDX = 2
    RBX = 3
    RSP = 4
    RBP = 5
    RSI = 6
    RDI = 7
    R8 = 8
    R9 = 9
    R10 = 10
    R11 = 11
    R12 = 12
    R13 = 13
    R14 = 14
    R15 = 15


class SegReg(enum.IntEnum):
    """Segment-register numbering of the instruction-information field (SDM 27.2.5)."""

    ES = 0
    CS = 1
    SS = 2
    DS = 3
    FS = 4
    GS = 5


@dataclass(frozen=True, slots=True)
class RegRef:
    """A register operand: which GPR, how many bytes, and whether it is AH/CH/DH/BH."""

    gpr: Gpr
    size: int
    high8: bool = False


_NAMES64 = ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi"] + [f"r{n}" for n in range(8, 16)]
_NAMES32 = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"] + [f"r{n}d" for n in range(8, 16)]
_NAMES16 = ["ax", "cx", "dx", "bx", "sp", "bp", "si", "di"] + [f"r{n}w" for n in range(8, 16)]
_NAMES8 = ["al", "cl", "dl", "bl", "spl", "bpl", "sil", "dil"] + [f"r{n}b" for n in range(8, 16)]

REGISTER_NAMES: dict[str, RegRef] = {}
for _i in range(16):
    REGISTER_NAMES[_NAMES64[_i]] = RegRef(Gpr(_i), 8)
    REGISTER_NAMES[_NAMES32[_i]] = RegRef(Gpr(_i), 4)
    REGISTER_NAMES[_NAMES16[_i]] = RegRef(Gpr(_i), 2)
    REGISTER_NAMES[_NAMES8[_i]] = RegRef(Gpr(_i), 1)
for _i, _name in enumerate(["ah", "ch", "dh", "bh"]):
    REGISTER_NAMES[_name] = RegRef(Gpr(_i), 1, high8=True)


def gpr_name(gpr: Gpr, size: int = 8) -> str:
    """The conventional name of a register at a size (`gpr_name(Gpr.R13, 4) == 'r13d'`)."""
    table = {8: _NAMES64, 4: _NAMES32, 2: _NAMES16, 1: _NAMES8}[size]
    return table[int(gpr)]
