"""MSR emulation by the VMM for intercepted RDMSR/WRMSR (KVM `kvm_get_msr_common`/
`kvm_set_msr_common`, arch/x86/kvm/x86.c).

Unknown MSRs get #GP injected, as KVM does with `ignore_msrs=0`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..controls import Efer, Msr, Proc2Ctl
from ..guest import GuestState
from ..insn_system import guest_tsc
from ..vmcs import Vmcs

KVM_PV_MSRS = range(0x4B564D00, 0x4B564D08)


@dataclass(frozen=True, slots=True)
class MsrEmulation:
    """Result of emulating one MSR access.

    Attributes:
        ok: False means inject #GP(0).
        value: value read (RDMSR).
        tsc_offset: a new TSC offset for the VMCS (guest writes to IA32_TSC).
        effect: one sentence for the trace.
        kernel_work: the write arms a timer or sends an IPI (costlier in-kernel emulation).
    """

    ok: bool
    value: int = 0
    tsc_offset: int | None = None
    effect: str = ""
    kernel_work: bool = False


def emulate_rdmsr(vmcs: Vmcs, g: GuestState, index: int) -> MsrEmulation:
    if index == Msr.IA32_TSC:
        return MsrEmulation(True, guest_tsc(vmcs, g.tsc), effect="IA32_TSC: guest TSC")
    if index in KVM_PV_MSRS:
        return MsrEmulation(True, g.msrs.get(index, 0), effect="KVM paravirtual MSR")
    if g.msr_exists(index):
        return MsrEmulation(True, g.read_msr(index), effect=f"MSR {index:#x} read from the vCPU")
    return MsrEmulation(False, effect=f"unknown MSR {index:#x}: inject #GP(0)")


def emulate_wrmsr(vmcs: Vmcs, g: GuestState, index: int, value: int) -> MsrEmulation:
    if index == Msr.IA32_TSC:
        # KVM keeps the guest's view by moving the TSC offset, never the host TSC.
        scaled = g.tsc
        if Proc2Ctl.USE_TSC_SCALING in vmcs.secondary:
            scaled = (g.tsc * vmcs.tsc_multiplier) >> 48
        offset = value - scaled
        return MsrEmulation(True, tsc_offset=offset,
                            effect=f"IA32_TSC := {value:#x} via TSC offset {offset:#x}")
    if index == Msr.IA32_EFER:
        if value & ~int(Efer.SCE | Efer.LME | Efer.LMA | Efer.NXE):
            return MsrEmulation(False, effect=f"EFER reserved bits in {value:#x}: inject #GP(0)")
        g.efer = (value & ~Efer.LMA) | (g.efer & Efer.LMA)
        return MsrEmulation(True, effect=f"IA32_EFER := {g.efer:#x}")
    if index == Msr.IA32_TSC_DEADLINE:
        g.write_msr(index, value)
        return MsrEmulation(True, effect=f"TSC deadline {value:#x}: arm the LAPIC timer",
                            kernel_work=True)
    if index == Msr.X2APIC_ICR:
        return MsrEmulation(True, effect=f"x2APIC ICR {value:#x}: send an IPI", kernel_work=True)
    if index == Msr.X2APIC_EOI:
        return MsrEmulation(True, effect="x2APIC EOI: end of interrupt", kernel_work=True)
    if index in KVM_PV_MSRS:
        g.msrs[index] = value
        return MsrEmulation(True, effect=f"KVM paravirtual MSR {index:#x} := {value:#x}")
    if g.msr_exists(index):
        g.write_msr(index, value)
        return MsrEmulation(True, effect=f"MSR {index:#x} := {value:#x}")
    return MsrEmulation(False, effect=f"unknown MSR {index:#x}: inject #GP(0)")
