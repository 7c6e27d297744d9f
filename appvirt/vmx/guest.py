"""The guest vCPU's architectural state.

This is the live, mutable state of one simulated logical processor in VMX non-root operation
(the guest-state area plus what the processor holds in registers). Frozen records are used for
everything that crosses module boundaries as a *result*; the vCPU itself changes every step.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .controls import Cr0, Cr4, Efer, Msr, Rflags
from .registers import Gpr, RegRef

MASK64 = 0xFFFF_FFFF_FFFF_FFFF


class ActivityState(enum.IntEnum):
    """Guest activity state (VMCS 0x4826; SDM 24.4.2)."""

    ACTIVE = 0
    HLT = 1
    SHUTDOWN = 2
    WAIT_FOR_SIPI = 3


DEFAULT_CR0 = int(Cr0.PE | Cr0.MP | Cr0.ET | Cr0.NE | Cr0.WP | Cr0.AM | Cr0.PG)
DEFAULT_CR4 = int(Cr4.PAE | Cr4.PGE | Cr4.OSFXSR | Cr4.OSXMMEXCPT | Cr4.VMXE | Cr4.FSGSBASE
                  | Cr4.OSXSAVE)
DEFAULT_EFER = int(Efer.SCE | Efer.LME | Efer.LMA | Efer.NXE)

# MSRs the simulated processor implements, with reset values; RDMSR/WRMSR of anything else
# (outside the x2APIC range when x2APIC is on) raises #GP(0) when it does not exit (SDM 1076).
ARCH_MSR_DEFAULTS: dict[int, int] = {
    Msr.IA32_P5_MC_ADDR: 0,
    Msr.IA32_APIC_BASE: 0xFEE00D00,          # enabled, x2APIC mode, BSP
    Msr.IA32_TSC_ADJUST: 0,
    Msr.IA32_BIOS_SIGN_ID: 0,
    Msr.IA32_SYSENTER_CS: 0,
    Msr.IA32_SYSENTER_ESP: 0,
    Msr.IA32_SYSENTER_EIP: 0,
    Msr.IA32_MISC_ENABLE: 1,
    Msr.IA32_PAT: 0x0007040600070406,
    Msr.IA32_TSC_DEADLINE: 0,
    Msr.IA32_XSS: 0,
    Msr.IA32_TSC_AUX: 0,
    Msr.IA32_STAR: 0,
    Msr.IA32_LSTAR: 0,
    Msr.IA32_CSTAR: 0,
    Msr.IA32_FMASK: 0,
}
X2APIC_RANGE = range(0x800, 0x900)


@dataclass(slots=True)
class PendingEvents:
    """Events waiting at the next instruction boundary (SDM 6.9, 25.2)."""

    external_vector: int | None = None
    nmi: bool = False
    init: bool = False
    sipi_vector: int | None = None
    mtf: bool = False


@dataclass(slots=True)
class GuestState:
    """Registers, control registers, MSRs and event state of the guest vCPU.

    `tsc` is the *physical* time-stamp counter; what the guest reads goes through the TSC
    offset and multiplier (spec §4.4).
    """

    gpr: list[int] = field(default_factory=lambda: [0] * 16)
    rip: int = 0
    rflags: int = int(Rflags.FIXED1)
    cpl: int = 0
    cr0: int = DEFAULT_CR0
    cr2: int = 0
    cr3: int = 0x1000
    cr4: int = DEFAULT_CR4
    cr8: int = 0
    efer: int = DEFAULT_EFER
    dr: list[int] = field(default_factory=lambda: [0, 0, 0, 0, 0, 0, 0xFFFF0FF0, 0x400])
    fs_base: int = 0
    gs_base: int = 0
    kernel_gs_base: int = 0
    gdtr_base: int = 0
    idtr_base: int = 0
    ldtr: int = 0
    tr: int = 0x40
    tsc: int = 0
    xcr0: int = 0x7
    msrs: dict[int, int] = field(default_factory=lambda: dict(ARCH_MSR_DEFAULTS))
    activity: ActivityState = ActivityState.ACTIVE
    sti_blocking: bool = False
    mov_ss_blocking: bool = False
    nmi_blocking: bool = False
    pending: PendingEvents = field(default_factory=PendingEvents)
    monitor_armed: bool = False
    in_service: list[int] = field(default_factory=list)   # virtual APIC ISR (vectors)
    tss_io_allowed: frozenset[int] = frozenset()
    idt_broken: bool = False
    tsc_per_instruction: int = 1
    first_pause_tsc: int = 0
    last_pause_tsc: int = -(1 << 62)

    # -- registers -------------------------------------------------------------------------
    def reg(self, gpr: Gpr) -> int:
        return self.gpr[gpr]

    def set_reg(self, gpr: Gpr, value: int) -> None:
        self.gpr[gpr] = value & MASK64

    def read(self, ref: RegRef) -> int:
        """Read a register operand of any size (AH-style high bytes included)."""
        full = self.gpr[ref.gpr]
        if ref.high8:
            return full >> 8 & 0xFF
        return full & ((1 << (8 * ref.size)) - 1)

    def write(self, ref: RegRef, value: int) -> None:
        """Write a register operand: 32-bit writes zero-extend, 8/16-bit writes merge."""
        old = self.gpr[ref.gpr]
        if ref.high8:
            self.gpr[ref.gpr] = (old & ~0xFF00) | (value & 0xFF) << 8
        elif ref.size == 8:
            self.gpr[ref.gpr] = value & MASK64
        elif ref.size == 4:
            self.gpr[ref.gpr] = value & 0xFFFF_FFFF
        else:
            mask = (1 << (8 * ref.size)) - 1
            self.gpr[ref.gpr] = (old & ~mask & MASK64) | (value & mask)

    def edx_eax(self) -> int:
        return (self.gpr[Gpr.RDX] & 0xFFFF_FFFF) << 32 | (self.gpr[Gpr.RAX] & 0xFFFF_FFFF)

    def set_edx_eax(self, value: int) -> None:
        self.gpr[Gpr.RAX] = value & 0xFFFF_FFFF
        self.gpr[Gpr.RDX] = value >> 32 & 0xFFFF_FFFF

    # -- modes -----------------------------------------------------------------------------
    @property
    def iopl(self) -> int:
        return self.rflags >> 12 & 3

    @property
    def interrupts_enabled(self) -> bool:
        return bool(self.rflags & Rflags.IF)

    def long_mode(self) -> bool:
        return bool(self.efer & Efer.LMA)

    def paging(self) -> bool:
        return bool(self.cr0 & Cr0.PG)

    def pcid(self) -> int:
        return self.cr3 & 0xFFF if self.cr4 & Cr4.PCIDE else 0

    # -- MSRs the processor itself holds ----------------------------------------------------
    def msr_exists(self, index: int) -> bool:
        if index in (Msr.IA32_TSC, Msr.IA32_EFER, Msr.IA32_FS_BASE, Msr.IA32_GS_BASE,
                     Msr.IA32_KERNEL_GS_BASE):
            return True
        if index in X2APIC_RANGE:
            return bool(self.msrs.get(Msr.IA32_APIC_BASE, 0) >> 10 & 1)
        return index in self.msrs

    def read_msr(self, index: int) -> int:
        special = {Msr.IA32_EFER: self.efer, Msr.IA32_FS_BASE: self.fs_base,
                   Msr.IA32_GS_BASE: self.gs_base, Msr.IA32_KERNEL_GS_BASE: self.kernel_gs_base}
        if index in special:
            return special[index]
        return self.msrs.get(index, 0)

    def write_msr(self, index: int, value: int) -> None:
        value &= MASK64
        if index == Msr.IA32_EFER:
            self.efer = value
        elif index == Msr.IA32_FS_BASE:
            self.fs_base = value
        elif index == Msr.IA32_GS_BASE:
            self.gs_base = value
        elif index == Msr.IA32_KERNEL_GS_BASE:
            self.kernel_gs_base = value
        else:
            self.msrs[index] = value

    def summary(self) -> dict[str, int]:
        """The registers a trace shows when the guest state is saved (SDM 27.3)."""
        return {"rip": self.rip, "rsp": self.gpr[Gpr.RSP], "rflags": self.rflags,
                "cr0": self.cr0, "cr3": self.cr3, "cr4": self.cr4, "efer": self.efer,
                "dr7": self.dr[7]}
