"""Exit handlers, named after KVM's (arch/x86/kvm/vmx/vmx.c), and the dispatch table.

Each handler is a small function of the `VmmContext`; the policy it implements is KVM's unless
a docstring says otherwise. Devices live in `devices`, CPUID in `cpuid`, MSRs in `msrs`.
"""

from __future__ import annotations

import dataclasses

from ..controls import Cr0, Cr4, InterruptionType, Msr, PinCtl, ProcCtl, Proc2Ctl, Vector
from ..faults import DeliveredEvent
from ..guest import MASK64, ActivityState
from ..insn_system import guest_tsc
from ..qualification import CrAccessQual, CrAccessType, IoDirection, IoQual
from ..reasons import ExitReason, VMX_INSTRUCTION_REASONS
from ..registers import Gpr, RegRef
from ..vmcs import EptAccess, EptMemoryType
from .cpuid import emulate_cpuid
from .dispatch import CostClass, ExitOutcome, Handler, HandlerResult, VmmContext
from .msrs import emulate_rdmsr, emulate_wrmsr

KVM_ENOSYS = 1000
_R = ExitOutcome.RESUME
_U = ExitOutcome.TO_USERSPACE


def _inject(vector: int, error_code: int | None = None, *,
            kind: InterruptionType = InterruptionType.HARDWARE_EXCEPTION) -> DeliveredEvent:
    name = f"#{Vector(vector).name}" if vector in Vector._value2member_map_ else f"vector {vector:#x}"
    code = f"({error_code:#x})" if error_code is not None else ""
    return DeliveredEvent(vector, kind, error_code,
                          f"{name}{code} injected at VM entry and delivered through the guest IDT")


# -- events ---------------------------------------------------------------------------------------

def handle_exception_nmi(ctx: VmmContext) -> HandlerResult:
    info = ctx.exit.interruption_info
    if info is not None and info.type is InterruptionType.NMI:
        return HandlerResult(_R, "handle_exception_nmi", "NMI for the host: run the host NMI "
                                                         "handler")
    vector = info.vector if info else 0
    code = ctx.exit.interruption_error_code if info and info.error_code_valid else None
    if vector == Vector.PF:
        ctx.vcpu.state.cr2 = ctx.exit.qualification
        return HandlerResult(_R, "handle_exception_nmi",
                             f"#PF at {ctx.exit.qualification:#x}: no shadow page tables to fix "
                             "(EPT or a guest fault): reflect it, CR2 := faulting address",
                             injection=_inject(Vector.PF, code))
    if vector == Vector.MC:
        return HandlerResult(_R, "handle_exception_nmi", "#MC: the host handles the machine check")
    return HandlerResult(_R, "handle_exception_nmi",
                         f"reflect #{Vector(vector).name if vector in Vector._value2member_map_ else vector} "
                         "into the guest", injection=_inject(vector, code))


def handle_external_interrupt(ctx: VmmContext) -> HandlerResult:
    state = ctx.vcpu.state
    info = ctx.exit.interruption_info
    vector = info.vector if info is not None and info.valid else state.pending.external_vector
    state.pending.external_vector = None
    if vector is None:
        return HandlerResult(_R, "handle_external_interrupt", "host interrupt handled")
    if state.interrupts_enabled:
        return HandlerResult(_R, "handle_external_interrupt",
                             f"host IRQ handler; the device completion is the guest's: inject "
                             f"vector {vector:#x}", CostClass.KERNEL_EMULATION,
                             injection=_inject(vector, kind=InterruptionType.EXTERNAL_INTERRUPT))
    ctx.set_vmcs(dataclasses.replace(ctx.vcpu.vmcs,
                                     proc=ctx.vcpu.vmcs.proc | ProcCtl.INTERRUPT_WINDOW_EXITING))
    ctx.vmm.queued_interrupt = vector
    return HandlerResult(_R, "handle_external_interrupt",
                         f"host IRQ handler; guest RFLAGS.IF = 0, so vector {vector:#x} waits: "
                         "set 'interrupt-window exiting'", CostClass.KERNEL_EMULATION)


def handle_interrupt_window(ctx: VmmContext) -> HandlerResult:
    vmcs = ctx.vcpu.vmcs
    ctx.set_vmcs(dataclasses.replace(vmcs, proc=vmcs.proc & ~ProcCtl.INTERRUPT_WINDOW_EXITING))
    vector, ctx.vmm.queued_interrupt = ctx.vmm.queued_interrupt, None
    if vector is None:
        return HandlerResult(_R, "handle_interrupt_window", "clear 'interrupt-window exiting'")
    return HandlerResult(_R, "handle_interrupt_window",
                         f"clear 'interrupt-window exiting' and inject vector {vector:#x}",
                         injection=_inject(vector, kind=InterruptionType.EXTERNAL_INTERRUPT))


def handle_nmi_window(ctx: VmmContext) -> HandlerResult:
    vmcs = ctx.vcpu.vmcs
    ctx.set_vmcs(dataclasses.replace(vmcs, proc=vmcs.proc & ~ProcCtl.NMI_WINDOW_EXITING))
    return HandlerResult(_R, "handle_nmi_window", "clear 'NMI-window exiting' and inject the NMI",
                         injection=_inject(Vector.NMI, kind=InterruptionType.NMI))


def handle_triple_fault(ctx: VmmContext) -> HandlerResult:
    return HandlerResult(_U, "handle_triple_fault", "KVM_EXIT_SHUTDOWN: the VMM resets the VM",
                         CostClass.USERSPACE, stop="triple fault: VM shut down (reset)")


def handle_init_signal(ctx: VmmContext) -> HandlerResult:
    ctx.vcpu.state.activity = ActivityState.WAIT_FOR_SIPI
    return HandlerResult(_R, "handle_init_signal", "INIT: the vCPU waits for a SIPI")


def handle_preemption_timer(ctx: VmmContext) -> HandlerResult:
    vmcs = ctx.vcpu.vmcs
    ctx.set_vmcs(dataclasses.replace(vmcs, pin=vmcs.pin & ~PinCtl.ACTIVATE_PREEMPTION_TIMER))
    return HandlerResult(_R, "handle_preemption_timer",
                         "LAPIC timer (hv timer) expired: deliver the timer interrupt and stop "
                         "the preemption timer until re-armed", CostClass.KERNEL_EMULATION)


def handle_monitor_trap(ctx: VmmContext) -> HandlerResult:
    return HandlerResult(_R, "handle_monitor_trap", "single step done (MTF)")


def handle_task_switch(ctx: VmmContext) -> HandlerResult:
    return HandlerResult(_R, "handle_task_switch", "emulate the task switch",
                         CostClass.KERNEL_EMULATION, skip_instruction=True)


def handle_apic(ctx: VmmContext) -> HandlerResult:
    if ctx.exit.reason == ExitReason.EOI_INDUCED:
        return HandlerResult(_R, "handle_apic_eoi_induced",
                             f"forward the EOI of vector {ctx.exit.qualification:#x} to the "
                             "virtual IOAPIC (level-triggered line)", CostClass.KERNEL_EMULATION)
    return HandlerResult(_R, f"handle_{ctx.exit.reason.name.lower()}",
                         "virtual APIC access emulated", CostClass.KERNEL_EMULATION)


# -- instructions ---------------------------------------------------------------------------------

def _skip(handler: str, action: str, cost: CostClass = CostClass.MINIMAL,
          outcome: ExitOutcome = _R) -> HandlerResult:
    return HandlerResult(outcome, handler, action, cost, skip_instruction=True)


def kvm_emulate_cpuid(ctx: VmmContext) -> HandlerResult:
    g = ctx.vcpu.state
    leaf, sub = g.reg(Gpr.RAX) & 0xFFFF_FFFF, g.reg(Gpr.RCX) & 0xFFFF_FFFF
    ans = emulate_cpuid(leaf, sub, ctx.vcpu.vmcs.hypervisor_signature)
    for gpr, value in ((Gpr.RAX, ans.eax), (Gpr.RBX, ans.ebx), (Gpr.RCX, ans.ecx),
                       (Gpr.RDX, ans.edx)):
        g.set_reg(gpr, value)
    return _skip("kvm_emulate_cpuid", f"CPUID leaf {leaf:#x}: EAX={ans.eax:#x} EBX={ans.ebx:#x} "
                                      f"ECX={ans.ecx:#x} EDX={ans.edx:#x}"
                 + (f" ({'; '.join(ans.changes)})" if ans.changes else ""))


def kvm_emulate_halt(ctx: VmmContext) -> HandlerResult:
    pending = ctx.vcpu.state.pending
    if pending.external_vector is not None or pending.nmi:
        return _skip("kvm_emulate_halt", "an event is pending: resume at once")
    return _skip("kvm_emulate_halt", "block the vCPU until an interrupt (halt polling); the "
                                     "simulation resumes as if one arrived")


def handle_invd(ctx: VmmContext) -> HandlerResult:
    return _skip("handle_invd", "INVD emulated as a no-op (KVM treats it like WBINVD)")


def kvm_emulate_wbinvd(ctx: VmmContext) -> HandlerResult:
    return _skip("kvm_emulate_wbinvd", "flush caches only with non-coherent DMA; otherwise a no-op")


def handle_invlpg(ctx: VmmContext) -> HandlerResult:
    n = ctx.vcpu.tlb.invalidate_address(ctx.vcpu.tag().vpid, ctx.exit.qualification)
    return _skip("handle_invlpg", f"kvm_mmu_invlpg({ctx.exit.qualification:#x}): {n} TLB "
                                  "entr" + ("y" if n == 1 else "ies") + " dropped")


def handle_invpcid(ctx: VmmContext) -> HandlerResult:
    n = ctx.vcpu.tlb.invalidate_vpid(ctx.vcpu.tag().vpid)
    return _skip("handle_invpcid", f"INVPCID emulated: {n} TLB entries dropped")


def handle_rdpmc(ctx: VmmContext) -> HandlerResult:
    ctx.vcpu.state.set_edx_eax(0)
    return _skip("kvm_emulate_rdpmc", "virtual PMU counter read: 0")


def handle_rdtsc(ctx: VmmContext) -> HandlerResult:
    g = ctx.vcpu.state
    g.set_edx_eax(guest_tsc(ctx.vcpu.vmcs, g.tsc))
    if ctx.exit.reason == ExitReason.RDTSCP:
        g.set_reg(Gpr.RCX, g.msrs.get(Msr.IA32_TSC_AUX, 0) & 0xFFFF_FFFF)
    return _skip("handle_rdtsc", f"guest TSC {guest_tsc(ctx.vcpu.vmcs, g.tsc):#x} emulated")


def handle_vmcall(ctx: VmmContext) -> HandlerResult:
    g = ctx.vcpu.state
    nr = g.reg(Gpr.RAX)
    g.set_reg(Gpr.RAX, -KVM_ENOSYS & MASK64)
    return _skip("kvm_emulate_hypercall", f"hypercall {nr:#x}: not implemented, RAX := -KVM_ENOSYS")


def handle_vmx_instruction(ctx: VmmContext) -> HandlerResult:
    return HandlerResult(_R, "handle_vmx_instruction", "no nested virtualization: inject #UD",
                         injection=_inject(Vector.UD))


def handle_invalid_op(ctx: VmmContext) -> HandlerResult:
    return HandlerResult(_R, "handle_invalid_op",
                         f"{ctx.exit.reason.name} is not exposed to the guest: inject #UD",
                         injection=_inject(Vector.UD))


def kvm_emulate_xsetbv(ctx: VmmContext) -> HandlerResult:
    g = ctx.vcpu.state
    index, value = g.reg(Gpr.RCX) & 0xFFFF_FFFF, g.edx_eax()
    if index != 0 or not value & 1 or (value & 4 and not value & 2) or g.cpl != 0:
        return HandlerResult(_R, "kvm_emulate_xsetbv", f"XCR{index} := {value:#x} is invalid "
                                                       "(or CPL > 0): inject #GP(0)",
                             injection=_inject(Vector.GP, 0))
    g.xcr0 = value
    return _skip("kvm_emulate_xsetbv", f"XCR0 := {value:#x}")


def handle_mwait_monitor(ctx: VmmContext) -> HandlerResult:
    return _skip("kvm_emulate_mwait", f"{ctx.exit.reason.name} emulated as a no-op")


def handle_pause(ctx: VmmContext) -> HandlerResult:
    return _skip("handle_pause", "kvm_vcpu_on_spin: yield to a vCPU holding the lock")


def handle_desc(ctx: VmmContext) -> HandlerResult:
    return _skip("handle_desc", "descriptor-table instruction emulated (UMIP emulation)",
                 CostClass.KERNEL_EMULATION)


def handle_dr(ctx: VmmContext) -> HandlerResult:
    vmcs = ctx.vcpu.vmcs
    ctx.set_vmcs(dataclasses.replace(vmcs, proc=vmcs.proc & ~ProcCtl.MOV_DR_EXITING))
    return HandlerResult(_R, "handle_dr", "load the guest debug registers and clear 'MOV-DR "
                                          "exiting'; the instruction re-executes without exiting")


def handle_cr(ctx: VmmContext) -> HandlerResult:
    vcpu, g = ctx.vcpu, ctx.vcpu.state
    q = CrAccessQual.decode(ctx.exit.qualification)
    vmcs = vcpu.vmcs
    unrestricted = Proc2Ctl.UNRESTRICTED_GUEST in vmcs.secondary
    if q.access is CrAccessType.MOV_TO_CR:
        value = g.reg(q.gpr)
        if q.cr == 0:
            fixed = Cr0.NE if unrestricted else Cr0.NE | Cr0.PE | Cr0.PG
            if value & Cr0.PG and not value & Cr0.PE or value >> 32:
                return HandlerResult(_R, "handle_cr", f"CR0 := {value:#x} is invalid: inject #GP(0)",
                                     injection=_inject(Vector.GP, 0))
            g.cr0 = value | fixed
            ctx.set_vmcs(dataclasses.replace(vmcs, cr0=dataclasses.replace(vmcs.cr0, shadow=value)))
            vcpu.tlb.invalidate_vpid(vcpu.tag().vpid)
            return _skip("handle_cr", f"kvm_set_cr0({value:#x}): read shadow := {value:#x}, "
                                      f"CR0 := {g.cr0:#x}")
        if q.cr == 4:
            g.cr4 = value | Cr4.VMXE
            ctx.set_vmcs(dataclasses.replace(vmcs, cr4=dataclasses.replace(vmcs.cr4, shadow=value)))
            vcpu.tlb.invalidate_vpid(vcpu.tag().vpid)
            return _skip("handle_cr", f"kvm_set_cr4({value:#x}): read shadow := {value:#x}")
        if q.cr == 3:
            g.cr3 = value & ~(1 << 63)
            vcpu.tlb.invalidate_non_global(vcpu.tag().vpid, g.pcid())
            return _skip("handle_cr", f"kvm_set_cr3({value:#x}): switch the guest's page tables "
                                      "(shadow paging would rebuild its shadow here)")
        g.cr8 = value & 0xF
        return _skip("handle_cr", f"kvm_set_cr8({value & 0xF:#x}): update the virtual TPR")
    if q.access is CrAccessType.MOV_FROM_CR:
        g.set_reg(q.gpr, g.cr3 if q.cr == 3 else g.cr8)
        return _skip("handle_cr", f"MOV from CR{q.cr} emulated")
    if q.access is CrAccessType.CLTS:
        g.cr0 &= ~Cr0.TS
        ctx.set_vmcs(dataclasses.replace(vmcs, cr0=dataclasses.replace(
            vmcs.cr0, shadow=vmcs.cr0.shadow & ~Cr0.TS)))
        return _skip("handle_cr", "CLTS emulated: TS cleared in CR0 and its read shadow")
    new = (g.cr0 & ~0xE) | (q.lmsw_data & 0xF) | (g.cr0 & 1)
    g.cr0 = new
    ctx.set_vmcs(dataclasses.replace(vmcs, cr0=dataclasses.replace(
        vmcs.cr0, shadow=(vmcs.cr0.shadow & ~0xF) | (q.lmsw_data & 0xF))))
    return _skip("handle_cr", f"LMSW {q.lmsw_data:#x} emulated")


def handle_io(ctx: VmmContext) -> HandlerResult:
    g = ctx.vcpu.state
    q = IoQual.decode(ctx.exit.qualification)
    if q.string:
        count = g.reg(Gpr.RCX) if q.rep else 1
        if q.rep:
            g.set_reg(Gpr.RCX, 0)
        return _skip("handle_io", f"string I/O to port {q.port:#x}: the emulator moves {count} "
                                  f"element(s) of {q.size} byte(s) through the device model",
                     CostClass.USERSPACE, _U)
    ref = RegRef(Gpr.RAX, q.size)
    if q.direction is IoDirection.IN:
        res = ctx.ports.access(q.port, q.size, write=False)
        g.write(ref, res.value)
        text = f"kvm_fast_pio IN port {q.port:#x} -> {res.device}: {res.effect}"
    else:
        res = ctx.ports.access(q.port, q.size, write=True, value=g.read(ref))
        text = f"kvm_fast_pio OUT port {q.port:#x} -> {res.device}: {res.effect}"
    if res.reset:
        return HandlerResult(_U, "handle_io", text, CostClass.USERSPACE, skip_instruction=True,
                             stop=f"reset requested through port {q.port:#x}")
    return _skip("handle_io", text + " (KVM_EXIT_IO to the user-space device model)",
                 CostClass.USERSPACE, _U)


def handle_msr(ctx: VmmContext) -> HandlerResult:
    vcpu, g = ctx.vcpu, ctx.vcpu.state
    index = g.reg(Gpr.RCX) & 0xFFFF_FFFF
    if ctx.exit.reason == ExitReason.MSR_READ:
        res = emulate_rdmsr(vcpu.vmcs, g, index)
        name = "kvm_emulate_rdmsr"
        if res.ok:
            g.set_edx_eax(res.value)
    else:
        res = emulate_wrmsr(vcpu.vmcs, g, index, g.edx_eax())
        name = "kvm_emulate_wrmsr"
        if res.ok and res.tsc_offset is not None:
            ctx.set_vmcs(dataclasses.replace(vcpu.vmcs, tsc_offset=res.tsc_offset,
                                             proc=vcpu.vmcs.proc | ProcCtl.USE_TSC_OFFSETTING))
    if not res.ok:
        return HandlerResult(_R, name, res.effect, injection=_inject(Vector.GP, 0))
    return _skip(name, res.effect,
                 CostClass.KERNEL_EMULATION if res.kernel_work else CostClass.MINIMAL)


def handle_ept_violation(ctx: VmmContext) -> HandlerResult:
    vcpu = ctx.vcpu
    gpa = ctx.exit.guest_physical_address or 0
    ept = vcpu.ept
    assert ept is not None
    region = ept.mmio_for(gpa)
    if region is not None:
        ept.map_mmio(region)
        return _skip("handle_ept_violation", f"first access to MMIO {region.name} at {gpa:#x}: "
                                             "install a misconfigured (MMIO) entry and emulate "
                                             "the access (KVM_EXIT_MMIO)", CostClass.USERSPACE, _U)
    slot = ept.memslot_for(gpa)
    if slot is not None and vcpu.vmcs.ept.map_on_demand:
        page = gpa & ~0xFFF
        hpa = slot.host_physical + (page - slot.guest_physical)
        ept.set_raw_leaf(page, int(EptAccess.R | EptAccess.W | EptAccess.X)
                         | int(EptMemoryType.WB) << 3, hpa)
        vcpu.tlb.invalidate_gpa(ept.pml4, page)
        return HandlerResult(_R, "handle_ept_violation",
                             f"kvm_mmu_page_fault: map guest-physical {page:#x} -> host-physical "
                             f"{hpa:#x} (RWX, 4 KiB) and re-execute", CostClass.EPT_FAULT_IN)
    return _skip("handle_ept_violation", f"no memslot covers {gpa:#x}: emulated as unassigned "
                                         "MMIO (KVM_EXIT_MMIO; reads all ones, writes dropped)",
                 CostClass.USERSPACE, _U)


def handle_ept_misconfig(ctx: VmmContext) -> HandlerResult:
    gpa = ctx.exit.guest_physical_address or 0
    region = ctx.vcpu.ept.mmio_for(gpa) if ctx.vcpu.ept else None
    if region is not None and region.fast:
        return _skip("handle_ept_misconfig", f"fast MMIO bus: ioeventfd for {region.name} at "
                                             f"{gpa:#x} signalled in the kernel",
                     CostClass.KERNEL_EMULATION)
    if region is not None:
        return _skip("handle_ept_misconfig", f"MMIO to {region.name} at {gpa:#x}: emulate the "
                                             "instruction, KVM_EXIT_MMIO to the device model",
                     CostClass.USERSPACE, _U)
    return HandlerResult(_U, "handle_ept_misconfig",
                         f"misconfigured EPT entry for {gpa:#x} outside any MMIO range: "
                         "KVM_EXIT_INTERNAL_ERROR", CostClass.USERSPACE,
                         stop="EPT misconfiguration on ordinary memory: VM stopped")


EXIT_HANDLERS: dict[int, Handler] = {
    ExitReason.EXCEPTION_NMI: handle_exception_nmi,
    ExitReason.EXTERNAL_INTERRUPT: handle_external_interrupt,
    ExitReason.TRIPLE_FAULT: handle_triple_fault,
    ExitReason.INIT_SIGNAL: handle_init_signal,
    ExitReason.PENDING_INTERRUPT: handle_interrupt_window,
    ExitReason.NMI_WINDOW: handle_nmi_window,
    ExitReason.TASK_SWITCH: handle_task_switch,
    ExitReason.CPUID: kvm_emulate_cpuid,
    ExitReason.HLT: kvm_emulate_halt,
    ExitReason.INVD: handle_invd,
    ExitReason.INVLPG: handle_invlpg,
    ExitReason.RDPMC: handle_rdpmc,
    ExitReason.RDTSC: handle_rdtsc,
    ExitReason.RDTSCP: handle_rdtsc,
    ExitReason.VMCALL: handle_vmcall,
    ExitReason.CR_ACCESS: handle_cr,
    ExitReason.DR_ACCESS: handle_dr,
    ExitReason.IO_INSTRUCTION: handle_io,
    ExitReason.MSR_READ: handle_msr,
    ExitReason.MSR_WRITE: handle_msr,
    ExitReason.MWAIT_INSTRUCTION: handle_mwait_monitor,
    ExitReason.MONITOR_TRAP_FLAG: handle_monitor_trap,
    ExitReason.MONITOR_INSTRUCTION: handle_mwait_monitor,
    ExitReason.PAUSE_INSTRUCTION: handle_pause,
    ExitReason.TPR_BELOW_THRESHOLD: handle_apic,
    ExitReason.APIC_ACCESS: handle_apic,
    ExitReason.EOI_INDUCED: handle_apic,
    ExitReason.APIC_WRITE: handle_apic,
    ExitReason.GDTR_IDTR: handle_desc,
    ExitReason.LDTR_TR: handle_desc,
    ExitReason.EPT_VIOLATION: handle_ept_violation,
    ExitReason.EPT_MISCONFIG: handle_ept_misconfig,
    ExitReason.PREEMPTION_TIMER: handle_preemption_timer,
    ExitReason.WBINVD: kvm_emulate_wbinvd,
    ExitReason.XSETBV: kvm_emulate_xsetbv,
    ExitReason.RDRAND: handle_invalid_op,
    ExitReason.RDSEED: handle_invalid_op,
    ExitReason.INVPCID: handle_invpcid,
    ExitReason.VMFUNC: handle_invalid_op,
    **{reason: handle_vmx_instruction for reason in VMX_INSTRUCTION_REASONS},
}
