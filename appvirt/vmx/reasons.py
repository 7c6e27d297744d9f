"""Basic VM-exit reasons and the 32-bit exit-reason field.

Numbers are the SDM's (Vol. 3D App. C; spec §3), named after KVM's `EXIT_REASON_*` macros
(arch/x86/include/uapi/asm/vmx.h); Bochs uses the same numbering (`VMX_vmexit_reason`, vmx.h).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ExitReason(enum.IntEnum):
    """Basic exit reason, bits 15:0 of the exit-reason field (SDM App. C)."""

    EXCEPTION_NMI = 0
    EXTERNAL_INTERRUPT = 1
    TRIPLE_FAULT = 2
    INIT_SIGNAL = 3
    SIPI_SIGNAL = 4
    IO_SMI = 5
    OTHER_SMI = 6
    PENDING_INTERRUPT = 7          # interrupt window
    NMI_WINDOW = 8
    TASK_SWITCH = 9
    CPUID = 10
    GETSEC = 11
    HLT = 12
    INVD = 13
    INVLPG = 14
    RDPMC = 15
    RDTSC = 16
    RSM = 17
    VMCALL = 18
    VMCLEAR = 19
    VMLAUNCH = 20
    VMPTRLD = 21
    VMPTRST = 22
    VMREAD = 23
    VMRESUME = 24
    VMWRITE = 25
    VMXOFF = 26
    VMXON = 27
    CR_ACCESS = 28
    DR_ACCESS = 29
    IO_INSTRUCTION = 30
    MSR_READ = 31
    MSR_WRITE = 32
    INVALID_STATE = 33
    MSR_LOAD_FAIL = 34
    MWAIT_INSTRUCTION = 36
    MONITOR_TRAP_FLAG = 37
    MONITOR_INSTRUCTION = 39
    PAUSE_INSTRUCTION = 40
    MCE_DURING_VMENTRY = 41
    TPR_BELOW_THRESHOLD = 43
    APIC_ACCESS = 44
    EOI_INDUCED = 45
    GDTR_IDTR = 46
    LDTR_TR = 47
    EPT_VIOLATION = 48
    EPT_MISCONFIG = 49
    INVEPT = 50
    RDTSCP = 51
    PREEMPTION_TIMER = 52
    INVVPID = 53
    WBINVD = 54
    XSETBV = 55
    APIC_WRITE = 56
    RDRAND = 57
    INVPCID = 58
    VMFUNC = 59
    ENCLS = 60
    RDSEED = 61
    PML_FULL = 62
    XSAVES = 63
    XRSTORS = 64
    UMWAIT = 67
    TPAUSE = 68
    BUS_LOCK = 74
    NOTIFY = 75
    MSR_READ_IMM = 84
    MSR_WRITE_IMM = 85


VMX_INSTRUCTION_REASONS: frozenset[ExitReason] = frozenset({
    ExitReason.VMCLEAR, ExitReason.VMLAUNCH, ExitReason.VMPTRLD, ExitReason.VMPTRST,
    ExitReason.VMREAD, ExitReason.VMRESUME, ExitReason.VMWRITE, ExitReason.VMXOFF,
    ExitReason.VMXON, ExitReason.INVEPT, ExitReason.INVVPID,
})

# Exits no control can prevent once the priority faults of spec §1 are checked (spec §3 "Uncond.").
UNCONDITIONAL_REASONS: frozenset[ExitReason] = frozenset({
    ExitReason.TRIPLE_FAULT, ExitReason.INIT_SIGNAL, ExitReason.TASK_SWITCH, ExitReason.CPUID,
    ExitReason.GETSEC, ExitReason.INVD, ExitReason.VMCALL, ExitReason.XSETBV,
}) | VMX_INSTRUCTION_REASONS

# Taken after the instruction completes (Bochs vmx.h IS_TRAP_LIKE_VMEXIT; spec §1).
TRAP_LIKE_REASONS: frozenset[ExitReason] = frozenset({
    ExitReason.TPR_BELOW_THRESHOLD, ExitReason.EOI_INDUCED, ExitReason.APIC_WRITE,
    ExitReason.BUS_LOCK,
})

# Fault-like exits due to instruction execution, for which the VM-exit instruction length is
# defined (SDM 27.2.4 / mirror p. 1131; spec §5).
LENGTH_DEFINED_REASONS: frozenset[ExitReason] = frozenset({
    ExitReason.CPUID, ExitReason.GETSEC, ExitReason.HLT, ExitReason.INVD, ExitReason.INVLPG,
    ExitReason.RDPMC, ExitReason.RDTSC, ExitReason.VMCALL, ExitReason.CR_ACCESS,
    ExitReason.DR_ACCESS, ExitReason.IO_INSTRUCTION, ExitReason.MSR_READ, ExitReason.MSR_WRITE,
    ExitReason.MWAIT_INSTRUCTION, ExitReason.MONITOR_INSTRUCTION, ExitReason.PAUSE_INSTRUCTION,
    ExitReason.GDTR_IDTR, ExitReason.LDTR_TR, ExitReason.RDTSCP, ExitReason.WBINVD,
    ExitReason.XSETBV, ExitReason.RDRAND, ExitReason.INVPCID, ExitReason.VMFUNC,
    ExitReason.RDSEED, ExitReason.XSAVES, ExitReason.XRSTORS,
}) | VMX_INSTRUCTION_REASONS

ENTRY_FAILURE_REASONS: frozenset[ExitReason] = frozenset({
    ExitReason.INVALID_STATE, ExitReason.MSR_LOAD_FAIL, ExitReason.MCE_DURING_VMENTRY,
})


@dataclass(frozen=True, slots=True)
class ExitReasonField:
    """The 32-bit exit-reason field (VMCS 0x4402; SDM 24.9.1, spec §5).

    Layout: 15:0 basic reason, 25 shadow-stack busy, 26 bus lock, 27 enclave, 28 pending MTF,
    29 exit from VMX root, 31 VM-entry failure.
    """

    basic: int
    shadow_stack_busy: bool = False
    bus_lock: bool = False
    enclave: bool = False
    pending_mtf: bool = False
    from_vmx_root: bool = False
    entry_failure: bool = False

    def encode(self) -> int:
        return ((self.basic & 0xFFFF) | self.shadow_stack_busy << 25 | self.bus_lock << 26
                | self.enclave << 27 | self.pending_mtf << 28 | self.from_vmx_root << 29
                | self.entry_failure << 31)

    @classmethod
    def decode(cls, value: int) -> ExitReasonField:
        return cls(value & 0xFFFF, bool(value >> 25 & 1), bool(value >> 26 & 1),
                   bool(value >> 27 & 1), bool(value >> 28 & 1), bool(value >> 29 & 1),
                   bool(value >> 31 & 1))


def reason_name(value: int) -> str:
    """The KVM-style name of a basic reason, or `UNKNOWN_<n>` for a reserved number."""
    try:
        return ExitReason(value).name
    except ValueError:
        return f"UNKNOWN_{value}"
