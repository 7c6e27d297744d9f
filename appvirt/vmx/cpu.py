"""One guest instruction from fetch to retirement, in the SDM's order (spec §1, §11).

decode -> instruction fetch (paging, EPT) -> #UD/privilege faults -> the exit condition ->
memory accesses (#PF through the exception bitmap, EPT) -> commit. Boundary events are
evaluated by the caller (`simulator`) between instructions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .controls import InterruptionType, ProcCtl, Vector
from .decoder import Insn
from .events import tick
from .execctx import ExecContext
from .exits import VmExit, VmExitSignal
from .faults import DeliveredEvent, GuestFault, deliver_exception
from .insn_crio import HANDLERS as CRIO_HANDLERS, control_register_handler
from .insn_system import HANDLERS as SYSTEM_HANDLERS
from .paging import translate_range
from .paging_types import AccessKind, MemoryAccess
from .semantics import GENERAL_DECISION, execute as execute_general
from .tlb import TlbLookup
from .vcpu import Vcpu

_SOFTWARE_KINDS = (InterruptionType.SOFTWARE_EXCEPTION,
                   InterruptionType.PRIVILEGED_SOFTWARE_EXCEPTION,
                   InterruptionType.SOFTWARE_INTERRUPT)


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one execution attempt of an instruction did.

    Attributes:
        exit: the VM exit it caused, if any (fault-like: RIP at the instruction).
        delivered: an exception delivered to the guest through its IDT instead.
        completed: the instruction retired and RIP moved past it.
        decision: why it did not exit, or the exit's deciding condition.
    """

    exit: VmExit | None
    delivered: DeliveredEvent | None
    completed: bool
    decision: str
    notes: tuple[str, ...]
    accesses: tuple[MemoryAccess, ...]
    lookups: tuple[TlbLookup, ...]


_DATA = ("data", "stack", "string")


def _general_decision(accesses: list[MemoryAccess]) -> str:
    data = [a for a in accesses if a.what.startswith(_DATA) and a.linear is not None]
    if not data:
        return "not an exiting instruction, and no memory operand: nothing to fault on"
    where = ", ".join(f"{a.what} at {a.linear:#x}" for a in data[:2])
    return (f"not an exiting instruction; its {where} translated without a #PF or EPT "
            "violation")


def execute_instruction(vcpu: Vcpu, insn: Insn) -> StepResult:
    """Execute `insn` at its address on `vcpu` (no boundary events)."""
    vcpu.begin_instruction()
    state = vcpu.state
    state.rip = insn.address
    ctx = ExecContext(vcpu, insn)
    shadow_before = (state.sti_blocking, state.mov_ss_blocking)
    exit_: VmExit | None = None
    delivered: DeliveredEvent | None = None
    try:
        try:
            translate_range(vcpu, insn.address, insn.length, AccessKind.FETCH,
                            purpose="instruction fetch")
            handler = (control_register_handler(ctx) or SYSTEM_HANDLERS.get(insn.base_mnemonic)
                       or CRIO_HANDLERS.get(insn.base_mnemonic))
            if handler is not None:
                handler(ctx)
            elif not execute_general(ctx):
                ctx.decision = "not an exiting instruction"
                ctx.note(f"'{insn.att}' is not modelled beyond its fetch: registers unchanged")
            ctx.completed = True
        except GuestFault as fault:
            length = insn.length if fault.kind in _SOFTWARE_KINDS else None
            delivered = deliver_exception(vcpu.vmcs, fault, idt_broken=state.idt_broken,
                                          instruction_length=length)
            if fault.vector == Vector.PF and delivered.vector == Vector.PF:
                state.cr2 = fault.address
            ctx.decision = delivered.description
    except VmExitSignal as signal:
        exit_ = signal.exit
        ctx.decision = exit_.decided_by
    if ctx.completed:
        state.rip = ctx.next_rip
        if shadow_before[0]:
            state.sti_blocking = False
        if shadow_before[1]:
            state.mov_ss_blocking = False
        if not ctx.tsc_written:
            tick(vcpu, state.tsc_per_instruction)
    if (ctx.completed or delivered) and exit_ is None \
            and ProcCtl.MONITOR_TRAP_FLAG in vcpu.vmcs.proc:
        state.pending.mtf = True           # MTF: after an instruction or an event delivery
    if exit_ is not None:
        exit_ = dataclasses.replace(exit_, guest_rip=state.rip)
    elif ctx.completed and ctx.decision == GENERAL_DECISION:
        ctx.decision = _general_decision(vcpu.accesses)
    return StepResult(exit_, delivered, ctx.completed, ctx.decision, tuple(ctx.notes),
                      tuple(vcpu.accesses), tuple(vcpu.lookups))
