"""VM entry (checks, guest-state and MSR loading) and the VM-exit sequence, with a trace.

SDM ch. 26 (entry) and 27 (exit); Bochs vmx.cc `VMenterLoadCheckVmControls`,
`VMenterLoadCheckHostState`, `VMenterLoadCheckGuestState`, `LoadMSRs`, `VMexit()` steps 0-4
(`VMexitSaveGuestState`, `StoreMSRs`, `VMexitLoadHostState`); spec §6. A failed entry is a
*result*: VMfailValid with a VM-instruction error number, or an entry-failure exit with bit 31
of the exit reason set.
"""

from __future__ import annotations

from dataclasses import dataclass

from .controls import (
    Cr0, Cr4, Efer, EntryCtl, ExitCtl, Msr, PinCtl, ProcCtl, Proc2Ctl, Rflags,
)
from .exits import VmExit
from .guest import GuestState
from .paging import canonical
from .qualification import EntryFailureQual
from .reasons import ExitReason
from .vcpu import Vcpu
from .vmcs import EptMemoryType, Vmcs

VMFAIL_INVALID_CONTROLS = 7
VMFAIL_INVALID_HOST_STATE = 8

# Host MSR values the exit MSR-load area and a trace refer to (a 64-bit Linux host).
HOST_MSRS: dict[int, int] = {Msr.IA32_EFER: 0xD01, Msr.IA32_PAT: 0x0407050600070106,
                             Msr.IA32_LSTAR: 0xFFFFFFFF81A00080}


@dataclass(frozen=True, slots=True)
class EntryResult:
    """Outcome of a simulated VMLAUNCH/VMRESUME.

    Attributes:
        ok: the guest runs.
        vm_instruction_error: VMfailValid number (7 controls, 8 host state), else None.
        failure_exit: the VM-entry-failure exit (reason 33 or 34 with bit 31), else None.
        problems: every failed check, in SDM order.
        steps: the entry trace.
    """

    ok: bool
    vm_instruction_error: int | None
    failure_exit: VmExit | None
    problems: tuple[str, ...]
    steps: tuple[str, ...]


def check_controls(vmcs: Vmcs) -> list[str]:
    """VM-execution, VM-exit and VM-entry control checks (SDM 26.2.1)."""
    p: list[str] = []
    sec = vmcs.secondary
    if vmcs.cr3_target_count > vmcs.caps.cr3_target_max:
        p.append(f"CR3-target count {vmcs.cr3_target_count} > {vmcs.caps.cr3_target_max} "
                 "(IA32_VMX_MISC[24:16])")
    if PinCtl.VIRTUAL_NMIS in vmcs.pin and PinCtl.NMI_EXITING not in vmcs.pin:
        p.append("'virtual NMIs' = 1 requires 'NMI exiting' = 1")
    if ProcCtl.NMI_WINDOW_EXITING in vmcs.proc and PinCtl.VIRTUAL_NMIS not in vmcs.pin:
        p.append("'NMI-window exiting' = 1 requires 'virtual NMIs' = 1")
    if ProcCtl.ACTIVATE_TERTIARY_CONTROLS in vmcs.proc:
        p.append("'activate tertiary controls' = 1 but the simulated CPU has none")
    tpr = ProcCtl.USE_TPR_SHADOW in vmcs.proc
    if tpr and vmcs.tpr_threshold & ~0xF:
        p.append("TPR threshold bits 31:4 must be 0")
    apicv = Proc2Ctl.VIRTUALIZE_X2APIC_MODE | Proc2Ctl.APIC_REGISTER_VIRTUALIZATION \
        | Proc2Ctl.VIRTUAL_INTERRUPT_DELIVERY
    if not tpr and sec & apicv:
        p.append("x2APIC virtualization, APIC-register virtualization and virtual-interrupt "
                 "delivery require 'use TPR shadow' = 1")
    if Proc2Ctl.VIRTUALIZE_X2APIC_MODE in sec and Proc2Ctl.VIRTUALIZE_APIC_ACCESSES in sec:
        p.append("'virtualize x2APIC mode' and 'virtualize APIC accesses' cannot both be 1")
    if Proc2Ctl.VIRTUAL_INTERRUPT_DELIVERY in sec and PinCtl.EXTERNAL_INTERRUPT_EXITING not in vmcs.pin:
        p.append("'virtual-interrupt delivery' = 1 requires 'external-interrupt exiting' = 1")
    if PinCtl.PROCESS_POSTED_INTERRUPTS in vmcs.pin and (
            Proc2Ctl.VIRTUAL_INTERRUPT_DELIVERY not in sec
            or ExitCtl.ACK_INTERRUPT_ON_EXIT not in vmcs.exit_ctl):
        p.append("'process posted interrupts' requires virtual-interrupt delivery and "
                 "'acknowledge interrupt on exit'")
    if Proc2Ctl.ENABLE_VPID in sec and vmcs.vpid == 0:
        p.append("'enable VPID' = 1 requires a non-zero VPID")
    if Proc2Ctl.ENABLE_EPT in sec:
        if vmcs.ept.memory_type not in (EptMemoryType.UC, EptMemoryType.WB):
            p.append(f"EPTP memory type {vmcs.ept.memory_type} is not UC (0) or WB (6)")
        if vmcs.ept.walk_length != 4:
            p.append(f"EPTP page-walk length {vmcs.ept.walk_length} is not 4")
        if vmcs.ept.accessed_dirty and not vmcs.caps.ept_accessed_dirty:
            p.append("EPTP bit 6 (accessed/dirty) set but the CPU lacks EPT A/D support")
    for flag in (Proc2Ctl.UNRESTRICTED_GUEST, Proc2Ctl.ENABLE_PML):
        if flag in sec and Proc2Ctl.ENABLE_EPT not in sec:
            p.append(f"'{flag.name.lower()}' = 1 requires 'enable EPT' = 1")
    if ExitCtl.SAVE_PREEMPTION_TIMER in vmcs.exit_ctl \
            and PinCtl.ACTIVATE_PREEMPTION_TIMER not in vmcs.pin:
        p.append("'save VMX-preemption timer value' = 1 requires the timer to be activated")
    return p


def check_host_state(vmcs: Vmcs) -> list[str]:
    """Host-state checks (SDM 26.2.2-26.2.4); the simulated VMM is a 64-bit kernel."""
    p: list[str] = []
    h = vmcs.host
    fixed = Cr0.PE | Cr0.NE | Cr0.PG
    if h.cr0 & fixed != fixed:
        p.append(f"host CR0 {h.cr0:#x} lacks fixed-1 bits PE, NE, PG (IA32_VMX_CR0_FIXED0)")
    if not h.cr4 & Cr4.VMXE:
        p.append("host CR4.VMXE must be 1")
    if ExitCtl.HOST_ADDRESS_SPACE_SIZE not in vmcs.exit_ctl:
        p.append("'host address-space size' must be 1: the VMM runs in 64-bit mode")
    if not h.cr4 & Cr4.PAE:
        p.append("host CR4.PAE must be 1 with a 64-bit host")
    if not canonical(h.rip):
        p.append(f"host RIP {h.rip:#x} is not canonical")
    if ExitCtl.LOAD_EFER in vmcs.exit_ctl and bool(h.efer & Efer.LMA) != bool(h.efer & Efer.LME):
        p.append("host EFER.LMA and EFER.LME must both equal 'host address-space size'")
    return p


def check_guest_state(vmcs: Vmcs, g: GuestState) -> list[str]:
    """Guest-state checks (SDM 26.3.1); a failure is exit reason 33 with bit 31 set."""
    p: list[str] = []
    unrestricted = Proc2Ctl.UNRESTRICTED_GUEST in vmcs.secondary
    fixed = Cr0.NE if unrestricted else (Cr0.NE | Cr0.PE | Cr0.PG)
    if g.cr0 & fixed != fixed:
        p.append(f"guest CR0 {g.cr0:#x} lacks fixed-1 bits {int(fixed & ~g.cr0):#x} "
                 "(IA32_VMX_CR0_FIXED0" + (", unrestricted guest" if unrestricted else "") + ")")
    if g.cr0 & Cr0.PG and not g.cr0 & Cr0.PE:
        p.append("guest CR0.PG = 1 requires CR0.PE = 1")
    if not g.cr4 & Cr4.VMXE:
        p.append("guest CR4.VMXE must be 1 (IA32_VMX_CR4_FIXED0)")
    ia32e = EntryCtl.IA32E_MODE_GUEST in vmcs.entry_ctl
    if ia32e and not (g.cr0 & Cr0.PG and g.cr4 & Cr4.PAE):
        p.append("'IA-32e mode guest' = 1 requires guest CR0.PG = 1 and CR4.PAE = 1")
    if ia32e != bool(g.efer & Efer.LMA):
        p.append(f"guest EFER.LMA = {int(bool(g.efer & Efer.LMA))} differs from 'IA-32e mode "
                 f"guest' = {int(ia32e)}")
    if not g.rflags & Rflags.FIXED1 or g.rflags & (0xFFFFFFFFFFC00000 | 1 << 15 | 1 << 5 | 1 << 3):
        p.append(f"guest RFLAGS {g.rflags:#x}: bit 1 must be 1 and reserved bits 0")
    if ia32e and g.rflags & Rflags.VM:
        p.append("guest RFLAGS.VM must be 0 in IA-32e mode")
    if ia32e and not canonical(g.rip):
        p.append(f"guest RIP {g.rip:#x} is not canonical")
    if g.sti_blocking and g.mov_ss_blocking:
        p.append("blocking by STI and by MOV SS cannot both be 1")
    if g.sti_blocking and not g.interrupts_enabled:
        p.append("blocking by STI requires RFLAGS.IF = 1")
    if g.cpl not in (0, 3) and ia32e:
        p.append(f"guest CPL {g.cpl}: only 0 and 3 are modelled in IA-32e mode")
    return p


def _msr_load_problem(g: GuestState, index: int, value: int) -> str | None:
    """Why an entry of the VM-entry MSR-load area fails (SDM 26.4)."""
    if index in (Msr.IA32_FS_BASE, Msr.IA32_GS_BASE):
        return f"MSR {index:#x} cannot be loaded through the MSR-load area"
    if 0x800 <= index <= 0x8FF:
        return f"x2APIC MSR {index:#x} cannot be loaded through the MSR-load area"
    if index in (Msr.IA32_SMBASE, Msr.IA32_SMM_MONITOR_CTL):
        return f"MSR {index:#x} may not be loaded at VM entry"
    if not g.msr_exists(index):
        return f"MSR {index:#x} does not exist (WRMSR would #GP)"
    if index == Msr.IA32_EFER and value & ~int(Efer.SCE | Efer.LME | Efer.LMA | Efer.NXE):
        return f"EFER value {value:#x} sets reserved bits"
    return None


def vm_entry(vcpu: Vcpu, *, launch: bool = True) -> EntryResult:
    """Simulate VMLAUNCH/VMRESUME under `vcpu.vmcs` with `vcpu.state` as the guest state."""
    vmcs, g = vcpu.vmcs, vcpu.state
    name = "VMLAUNCH" if launch else "VMRESUME"
    steps = [f"{name}: check VM-execution, VM-exit and VM-entry controls"]
    problems = check_controls(vmcs)
    if problems:
        steps.append(f"VMfailValid({VMFAIL_INVALID_CONTROLS}): {problems[0]}")
        return EntryResult(False, VMFAIL_INVALID_CONTROLS, None, tuple(problems), tuple(steps))
    steps.append("check the host-state area")
    problems = check_host_state(vmcs)
    if problems:
        steps.append(f"VMfailValid({VMFAIL_INVALID_HOST_STATE}): {problems[0]}")
        return EntryResult(False, VMFAIL_INVALID_HOST_STATE, None, tuple(problems), tuple(steps))
    steps.append("check and load the guest state: " + _regs(g.summary()))
    problems = check_guest_state(vmcs, g)
    if problems:
        fail = VmExit(ExitReason.INVALID_STATE, 0, decided_by=problems[0], entry_failure=True,
                      guest_rip=g.rip)
        steps.append("VM-entry failure: exit reason 33 | 0x80000000, host state loaded")
        return EntryResult(False, None, fail, tuple(problems), tuple(steps))
    for i, entry in enumerate(vmcs.msr_areas.entry_load, start=1):
        problem = _msr_load_problem(g, entry.index, entry.value)
        if problem:
            fail = VmExit(ExitReason.MSR_LOAD_FAIL, EntryFailureQual(i).encode(),
                          decided_by=f"VM-entry MSR-load entry {i}: {problem}",
                          entry_failure=True, guest_rip=g.rip)
            steps.append(f"VM-entry failure: exit reason 34 | 0x80000000, qualification {i}")
            return EntryResult(False, None, fail, (problem,), tuple(steps))
        g.write_msr(entry.index, entry.value)
    if vmcs.msr_areas.entry_load:
        steps.append(f"load {len(vmcs.msr_areas.entry_load)} MSR(s) from the VM-entry MSR-load "
                     "area: " + ", ".join(f"{e.index:#x}={e.value:#x}" for e in vmcs.msr_areas.entry_load))
    if PinCtl.ACTIVATE_PREEMPTION_TIMER in vmcs.pin:
        if ExitCtl.SAVE_PREEMPTION_TIMER not in vmcs.exit_ctl or launch:
            vcpu.timer = vmcs.preemption_timer
        vcpu.timer_residue = 0
        steps.append(f"arm the VMX-preemption timer with {vcpu.timer}"
                     + (" (0: exit before the first instruction)" if vcpu.timer == 0 else ""))
    if not vmcs.vpid_enabled():
        dropped = vcpu.tlb.invalidate_vpid(0)
        steps.append(f"VPIDs off: invalidate VPID 0's linear/combined TLB entries ({dropped})")
    # The next PAUSE starts a new PAUSE loop (Bochs resets its PLE timestamps at VM entry).
    g.first_pause_tsc, g.last_pause_tsc = 0, -(1 << 62)
    steps.append(f"enter VMX non-root operation at RIP {g.rip:#x}")
    return EntryResult(True, None, None, (), tuple(steps))


def vm_exit_steps(vcpu: Vcpu, exit: VmExit) -> list[str]:
    """The VM-exit sequence (SDM 27.2-27.6, Bochs `VMexit()` steps 0-4), as trace lines.

    Also performs the architectural side effects the simulator models: the exit MSR-load area
    and the VPID-0 TLB flush.
    """
    vmcs, g = vcpu.vmcs, vcpu.state
    length = "undefined" if exit.instruction_length is None else str(exit.instruction_length)
    steps = [f"record exit information: exit reason {exit.reason_field.encode():#x} "
             f"({exit.reason.name}), qualification {exit.qualification:#x}, instruction length "
             f"{length}" + (f", guest-physical {exit.guest_physical_address:#x}"
                            if exit.guest_physical_address is not None else "")]
    saved = dict(g.summary())
    extras = []
    if ExitCtl.SAVE_DEBUG_CONTROLS in vmcs.exit_ctl:
        extras.append("DR7 and IA32_DEBUGCTL")
    if ExitCtl.SAVE_EFER in vmcs.exit_ctl:
        extras.append("IA32_EFER")
    if ExitCtl.SAVE_PAT in vmcs.exit_ctl:
        extras.append("IA32_PAT")
    if ExitCtl.SAVE_PREEMPTION_TIMER in vmcs.exit_ctl:
        extras.append(f"preemption-timer value {vcpu.timer}")
    steps.append("save guest state to the guest-state area: " + _regs(saved)
                 + ", segment registers, GDTR/IDTR, activity and interruptibility state"
                 + (", " + ", ".join(extras) if extras else ""))
    if vmcs.msr_areas.exit_store:
        stored = ", ".join(f"{i:#x}={g.read_msr(i) if i != Msr.IA32_TSC else g.tsc:#x}"
                           for i in vmcs.msr_areas.exit_store)
        steps.append(f"store {len(vmcs.msr_areas.exit_store)} MSR(s) to the VM-exit MSR-store "
                     f"area: {stored}")
    h = vmcs.host
    host = (f"CR0={h.cr0:#x}, CR3={h.cr3:#x}, CR4={h.cr4:#x}, RSP={h.rsp:#x}, RIP={h.rip:#x}, "
            "RFLAGS=0x2, DR7=0x400, IA32_DEBUGCTL=0, LDTR unusable")
    if ExitCtl.LOAD_EFER in vmcs.exit_ctl:
        host += f", IA32_EFER={h.efer:#x}"
    steps.append("load host state: " + host)
    if vmcs.msr_areas.exit_load:
        steps.append(f"load {len(vmcs.msr_areas.exit_load)} MSR(s) from the VM-exit MSR-load "
                     "area: " + ", ".join(f"{e.index:#x}={e.value:#x}" for e in vmcs.msr_areas.exit_load))
    if not vmcs.vpid_enabled():
        dropped = vcpu.tlb.invalidate_vpid(0)
        steps.append(f"VPIDs off: invalidate VPID 0's linear/combined TLB entries ({dropped})")
    steps.append(f"continue in VMX root operation at HOST_RIP {h.rip:#x}")
    return steps


def _regs(values: dict[str, int]) -> str:
    return ", ".join(f"{k.upper()}={v:#x}" for k, v in values.items())
