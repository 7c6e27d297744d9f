"""Exit-qualification, interruption-information and instruction-information layouts.

Each layout is a frozen record with `encode()` and `decode()`, after hvpp's
`ia32/vmx/exit_qualification.h` and the comment tables of Bochs `vmexit.cc`. Layouts: SDM
27.2.1 Tables 27-3 (CR), 27-4 (DR), 27-5 (I/O), 27-7 (EPT violation); 24.9.2 (interruption
information); 27.2.5 (instruction information); spec §4.5 and §5.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from .controls import InterruptionType
from .reasons import ExitReason
from .registers import Gpr, SegReg


class Qualification(Protocol):
    """What every layout offers: an integer encoding and a field view."""

    def encode(self) -> int: ...


def fields_of(record: object) -> dict[str, Any]:
    """Decoded fields of a layout, with enums shown by name (for tables and JSON)."""
    out: dict[str, Any] = {}
    for key, value in asdict(record).items():  # type: ignore[call-overload]
        out[key] = value.name if isinstance(value, enum.Enum) else value
    return out


class CrAccessType(enum.IntEnum):
    """Bits 5:4 of the CR-access qualification."""

    MOV_TO_CR = 0
    MOV_FROM_CR = 1
    CLTS = 2
    LMSW = 3


@dataclass(frozen=True, slots=True)
class CrAccessQual:
    """Reason 28: 3:0 CR number, 5:4 type, 6 LMSW memory operand, 11:8 GPR, 31:16 LMSW data."""

    cr: int
    access: CrAccessType
    gpr: Gpr = Gpr.RAX
    lmsw_memory: bool = False
    lmsw_data: int = 0

    def encode(self) -> int:
        return ((self.cr & 0xF) | int(self.access) << 4 | self.lmsw_memory << 6
                | int(self.gpr) << 8 | (self.lmsw_data & 0xFFFF) << 16)

    @classmethod
    def decode(cls, value: int) -> CrAccessQual:
        return cls(value & 0xF, CrAccessType(value >> 4 & 3), Gpr(value >> 8 & 0xF),
                   bool(value >> 6 & 1), value >> 16 & 0xFFFF)


class DrDirection(enum.IntEnum):
    """Bit 4 of the MOV-DR qualification."""

    MOV_TO_DR = 0
    MOV_FROM_DR = 1


@dataclass(frozen=True, slots=True)
class DrAccessQual:
    """Reason 29: 2:0 DR number, 4 direction, 11:8 GPR (SDM Table 27-4; bit 3 reserved)."""

    dr: int
    direction: DrDirection
    gpr: Gpr

    def encode(self) -> int:
        return (self.dr & 7) | int(self.direction) << 4 | int(self.gpr) << 8

    @classmethod
    def decode(cls, value: int) -> DrAccessQual:
        return cls(value & 7, DrDirection(value >> 4 & 1), Gpr(value >> 8 & 0xF))


class IoDirection(enum.IntEnum):
    """Bit 3 of the I/O qualification."""

    OUT = 0
    IN = 1


@dataclass(frozen=True, slots=True)
class IoQual:
    """Reason 30: 2:0 size-1, 3 direction, 4 string, 5 REP, 6 immediate operand, 31:16 port."""

    size: int
    direction: IoDirection
    port: int
    string: bool = False
    rep: bool = False
    immediate: bool = False

    def encode(self) -> int:
        return ((self.size - 1) & 7 | int(self.direction) << 3 | self.string << 4
                | self.rep << 5 | self.immediate << 6 | (self.port & 0xFFFF) << 16)

    @classmethod
    def decode(cls, value: int) -> IoQual:
        return cls((value & 7) + 1, IoDirection(value >> 3 & 1), value >> 16 & 0xFFFF,
                   bool(value >> 4 & 1), bool(value >> 5 & 1), bool(value >> 6 & 1))


@dataclass(frozen=True, slots=True)
class EptViolationQual:
    """Reason 48 (SDM Table 27-7; Bochs paging.cc `translate_guest_physical`).

    0 read, 1 write, 2 fetch; 3/4/5 readable/writable/executable (AND over the walk); 6 user
    executable; 7 linear address valid; 8 final translation (vs. paging-structure access);
    9/10/11 advanced info (user linear, R/W page, XD page); 12 NMI unblocking; 13/14 CET.
    """

    read: bool = False
    write: bool = False
    fetch: bool = False
    readable: bool = False
    writable: bool = False
    executable: bool = False
    user_executable: bool = False
    linear_valid: bool = False
    final_translation: bool = False
    user_linear: bool = False
    writable_page: bool = False
    xd_page: bool = False
    nmi_unblocking: bool = False
    shadow_stack: bool = False
    supervisor_shadow_stack: bool = False

    _ORDER = ("read", "write", "fetch", "readable", "writable", "executable", "user_executable",
              "linear_valid", "final_translation", "user_linear", "writable_page", "xd_page",
              "nmi_unblocking", "shadow_stack", "supervisor_shadow_stack")

    def encode(self) -> int:
        return sum(int(getattr(self, name)) << bit for bit, name in enumerate(self._ORDER))

    @classmethod
    def decode(cls, value: int) -> EptViolationQual:
        return cls(*(bool(value >> bit & 1) for bit in range(len(cls._ORDER))))


class TaskSwitchSource(enum.IntEnum):
    """Bits 31:30 of the task-switch qualification."""

    CALL = 0
    IRET = 1
    JMP = 2
    IDT_TASK_GATE = 3


@dataclass(frozen=True, slots=True)
class TaskSwitchQual:
    """Reason 9: 15:0 TSS selector, 31:30 source (SDM 27.2.1)."""

    selector: int
    source: TaskSwitchSource

    def encode(self) -> int:
        return (self.selector & 0xFFFF) | int(self.source) << 30

    @classmethod
    def decode(cls, value: int) -> TaskSwitchQual:
        return cls(value & 0xFFFF, TaskSwitchSource(value >> 30 & 3))


@dataclass(frozen=True, slots=True)
class MwaitQual:
    """Reason 36: bit 0 = the address-range monitoring hardware was armed."""

    monitor_armed: bool

    def encode(self) -> int:
        return int(self.monitor_armed)

    @classmethod
    def decode(cls, value: int) -> MwaitQual:
        return cls(bool(value & 1))


@dataclass(frozen=True, slots=True)
class DebugQual:
    """#DB exits: B0-B3 in 3:0, BD in 13, BS in 14 (DR6-like; SDM 27.2.1)."""

    breakpoints: int = 0
    bd: bool = False
    bs: bool = False

    def encode(self) -> int:
        return (self.breakpoints & 0xF) | self.bd << 13 | self.bs << 14

    @classmethod
    def decode(cls, value: int) -> DebugQual:
        return cls(value & 0xF, bool(value >> 13 & 1), bool(value >> 14 & 1))


@dataclass(frozen=True, slots=True)
class AddressQual:
    """INVLPG and #PF: the linear address; VMX and descriptor-table instructions: displacement."""

    address: int

    def encode(self) -> int:
        return self.address & 0xFFFF_FFFF_FFFF_FFFF

    @classmethod
    def decode(cls, value: int) -> AddressQual:
        return cls(value & 0xFFFF_FFFF_FFFF_FFFF)


@dataclass(frozen=True, slots=True)
class EntryFailureQual:
    """Reason 34 (MSR load failure): the 1-based index of the failing entry (SDM 26.4)."""

    entry: int

    def encode(self) -> int:
        return self.entry

    @classmethod
    def decode(cls, value: int) -> EntryFailureQual:
        return cls(value)


@dataclass(frozen=True, slots=True)
class InterruptionInfo:
    """Interruption-information format (VMCS 0x4404/0x4408; SDM 24.9.2; Bochs `VMexit_Event`).

    7:0 vector, 10:8 type, 11 error code valid, 12 NMI unblocking due to IRET, 31 valid.
    """

    vector: int
    type: InterruptionType
    error_code_valid: bool = False
    nmi_unblocking: bool = False
    valid: bool = True

    def encode(self) -> int:
        return ((self.vector & 0xFF) | int(self.type) << 8 | self.error_code_valid << 11
                | self.nmi_unblocking << 12 | self.valid << 31)

    @classmethod
    def decode(cls, value: int) -> InterruptionInfo:
        return cls(value & 0xFF, InterruptionType(value >> 8 & 7), bool(value >> 11 & 1),
                   bool(value >> 12 & 1), bool(value >> 31 & 1))


class AddressSize(enum.IntEnum):
    """Bits 9:7 of the instruction information."""

    BITS16 = 0
    BITS32 = 1
    BITS64 = 2


@dataclass(frozen=True, slots=True)
class InstructionInfo:
    """VM-exit instruction information (VMCS 0x440E; SDM 27.2.5; Bochs `gen_instruction_info`).

    1:0 scale, 6:3 reg1, 9:7 address size, 10 register operand, 12:11 operand size (RDRAND/
    RDSEED; bit 11 for LGDT-class), 17:15 segment, 21:18 index, 22 index invalid, 26:23 base,
    27 base invalid, 31:28 reg2 (for LGDT…STR its low two bits are the instruction identity).
    """

    scale: int = 0
    reg1: int = 0
    address_size: AddressSize = AddressSize.BITS64
    register_operand: bool = False
    operand_size: int = 0
    segment: SegReg = SegReg.ES
    index: int = 0
    index_invalid: bool = True
    base: int = 0
    base_invalid: bool = True
    reg2: int = 0

    def encode(self) -> int:
        return ((self.scale & 3) | (self.reg1 & 0xF) << 3 | int(self.address_size) << 7
                | self.register_operand << 10 | (self.operand_size & 3) << 11
                | int(self.segment) << 15 | (self.index & 0xF) << 18 | self.index_invalid << 22
                | (self.base & 0xF) << 23 | self.base_invalid << 27 | (self.reg2 & 0xF) << 28)

    @classmethod
    def decode(cls, value: int) -> InstructionInfo:
        return cls(value & 3, value >> 3 & 0xF, AddressSize(value >> 7 & 7),
                   bool(value >> 10 & 1), value >> 11 & 3, SegReg(value >> 15 & 7),
                   value >> 18 & 0xF, bool(value >> 22 & 1), value >> 23 & 0xF,
                   bool(value >> 27 & 1), value >> 28 & 0xF)


_LAYOUTS: dict[ExitReason, type] = {
    ExitReason.CR_ACCESS: CrAccessQual,
    ExitReason.DR_ACCESS: DrAccessQual,
    ExitReason.IO_INSTRUCTION: IoQual,
    ExitReason.EPT_VIOLATION: EptViolationQual,
    ExitReason.TASK_SWITCH: TaskSwitchQual,
    ExitReason.MWAIT_INSTRUCTION: MwaitQual,
    ExitReason.INVLPG: AddressQual,
    ExitReason.MSR_LOAD_FAIL: EntryFailureQual,
}

# Reasons whose qualification is the instruction's displacement (spec §5 "Other qualifications").
DISPLACEMENT_REASONS = frozenset({
    ExitReason.VMCLEAR, ExitReason.VMPTRLD, ExitReason.VMPTRST, ExitReason.VMREAD,
    ExitReason.VMWRITE, ExitReason.VMXON, ExitReason.INVEPT, ExitReason.INVVPID,
    ExitReason.INVPCID, ExitReason.GDTR_IDTR, ExitReason.LDTR_TR, ExitReason.XSAVES,
    ExitReason.XRSTORS,
})


def decode_qualification(reason: ExitReason, value: int, *,
                         interruption: InterruptionInfo | None = None) -> dict[str, Any]:
    """The qualification of an exit decoded into named fields (empty when it is just 0).

    Reason 0 is decoded by the exception vector: #PF gives the faulting linear address, #DB the
    DR6-like bits; others have no qualification.
    """
    if reason == ExitReason.EXCEPTION_NMI and interruption is not None:
        if interruption.vector == 14:
            return {"linear_address": value}
        if interruption.vector == 1:
            return fields_of(DebugQual.decode(value))
        return {}
    layout = _LAYOUTS.get(reason)
    if layout is not None:
        return fields_of(layout.decode(value))
    if reason in DISPLACEMENT_REASONS:
        return {"displacement": value}
    if reason == ExitReason.EOI_INDUCED:
        return {"vector": value & 0xFF}
    return {}
