"""Events at instruction boundaries, in priority order (SDM 25.2, 26.7; Bochs event.cc
`handleAsyncEvent`; spec §1 step 4): INIT, SIPI, MTF, VMX-preemption timer, NMI window, NMI,
interrupt window, external interrupt.
"""

from __future__ import annotations

from .controls import ExitCtl, InterruptionType, PinCtl, ProcCtl, Vector
from .exits import vm_exit
from .faults import DeliveredEvent
from .guest import ActivityState
from .qualification import InterruptionInfo
from .reasons import ExitReason
from .vcpu import Vcpu


def check_boundary(vcpu: Vcpu) -> DeliveredEvent | None:
    """Evaluate the pending events at one instruction boundary.

    Returns an event delivered through the guest IDT, or None when nothing happens.

    Raises:
        VmExitSignal: the highest-priority event causes a VM exit.
    """
    state, vmcs = vcpu.state, vcpu.vmcs
    pending = state.pending
    if pending.init:
        pending.init = False
        vm_exit(ExitReason.INIT_SIGNAL, decided_by="INIT always exits in VMX non-root operation")
    if state.activity is ActivityState.WAIT_FOR_SIPI and pending.sipi_vector is not None:
        vector, pending.sipi_vector = pending.sipi_vector, None
        vm_exit(ExitReason.SIPI_SIGNAL, vector, decided_by="SIPI in the wait-for-SIPI state")
    if pending.mtf:
        pending.mtf = False
        vm_exit(ExitReason.MONITOR_TRAP_FLAG,
                decided_by="primary control MONITOR_TRAP_FLAG = 1 (after the previous instruction)")
    if PinCtl.ACTIVATE_PREEMPTION_TIMER in vmcs.pin and vcpu.timer == 0:
        vm_exit(ExitReason.PREEMPTION_TIMER,
                decided_by="pin control ACTIVATE_PREEMPTION_TIMER = 1 and the timer reached 0")
    blocked_by_shadow = state.sti_blocking or state.mov_ss_blocking
    if ProcCtl.NMI_WINDOW_EXITING in vmcs.proc and not state.nmi_blocking \
            and not state.mov_ss_blocking:
        vm_exit(ExitReason.NMI_WINDOW,
                decided_by="NMI_WINDOW_EXITING = 1 and there is no virtual-NMI blocking")
    if pending.nmi and not state.nmi_blocking and not state.mov_ss_blocking:
        if PinCtl.NMI_EXITING in vmcs.pin:
            pending.nmi = False
            vm_exit(ExitReason.EXCEPTION_NMI, decided_by="pin control NMI_EXITING = 1",
                    interruption_info=InterruptionInfo(Vector.NMI, InterruptionType.NMI),
                    interruption_error_code=0)
        pending.nmi = False
        state.nmi_blocking = True
        state.activity = ActivityState.ACTIVE
        return DeliveredEvent(Vector.NMI, InterruptionType.NMI, None,
                              "NMI delivered through the guest IDT (NMI_EXITING = 0)")
    if ProcCtl.INTERRUPT_WINDOW_EXITING in vmcs.proc and state.interrupts_enabled \
            and not blocked_by_shadow:
        vm_exit(ExitReason.PENDING_INTERRUPT,
                decided_by="INTERRUPT_WINDOW_EXITING = 1, RFLAGS.IF = 1 and no STI/MOV-SS blocking")
    if pending.external_vector is not None:
        vector = pending.external_vector
        if PinCtl.EXTERNAL_INTERRUPT_EXITING in vmcs.pin:
            # Exits whatever RFLAGS.IF says (SDM 25.2); Bochs VMexit_ExtInterrupt.
            if ExitCtl.ACK_INTERRUPT_ON_EXIT in vmcs.exit_ctl:
                pending.external_vector = None
                vm_exit(ExitReason.EXTERNAL_INTERRUPT,
                        decided_by="pin control EXTERNAL_INTERRUPT_EXITING = 1; acknowledged on exit",
                        interruption_info=InterruptionInfo(vector, InterruptionType.EXTERNAL_INTERRUPT),
                        interruption_error_code=0)
            vm_exit(ExitReason.EXTERNAL_INTERRUPT,
                    decided_by="pin control EXTERNAL_INTERRUPT_EXITING = 1; not acknowledged "
                               "(interruption info invalid, the interrupt stays pending)",
                    interruption_info=InterruptionInfo(0, InterruptionType.EXTERNAL_INTERRUPT,
                                                       valid=False),
                    interruption_error_code=0)
        if state.interrupts_enabled and not blocked_by_shadow:
            pending.external_vector = None
            state.activity = ActivityState.ACTIVE
            state.in_service.append(vector)
            return DeliveredEvent(vector, InterruptionType.EXTERNAL_INTERRUPT, None,
                                  f"external interrupt {vector:#x} delivered through the guest "
                                  "IDT (EXTERNAL_INTERRUPT_EXITING = 0)")
    return None


def tick(vcpu: Vcpu, cycles: int) -> None:
    """Advance the physical TSC and the VMX-preemption timer (TSC rate >> IA32_VMX_MISC[4:0])."""
    vcpu.state.tsc += cycles
    if PinCtl.ACTIVATE_PREEMPTION_TIMER in vcpu.vmcs.pin and vcpu.timer > 0:
        rate = vcpu.vmcs.caps.preemption_timer_rate
        vcpu.timer_residue += cycles
        ticks = vcpu.timer_residue >> rate
        vcpu.timer_residue &= (1 << rate) - 1
        vcpu.timer = max(0, vcpu.timer - ticks)
