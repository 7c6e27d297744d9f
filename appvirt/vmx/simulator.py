"""The machine: VM entry, then each instruction with its boundary events, every exit handled
by the VMM's dispatch table and followed by VM entry again (spec §6, §9).

Rows come back one per instruction (plus a row for the initial VM entry and one for events at
the final boundary) with the exits, the deciding condition, the VMM's action, the memory and TLB
traffic and, when asked, the exit/entry trace.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .controls import InterruptionType
from .cost import CostModel
from .cpu import execute_instruction
from .decoder import Insn
from .events import check_boundary, tick
from .exits import VmExit, VmExitSignal
from .guest import ActivityState, GuestState
from .memory import EptTables, PhysicalMemory
from .paging_types import MemoryAccess
from .possible import PossibleExits, possible_exits
from .program import EventKind, GuestEvent
from .reasons import TRAP_LIKE_REASONS
from .tlb import TlbLookup
from .transitions import EntryResult, vm_entry, vm_exit_steps
from .vcpu import Vcpu
from .vmcs import Vmcs
from .vmm.dispatch import (
    CostClass, ExitOutcome, HandlerResult, VmmContext, VmmState, dispatch_exit,
)
from .vmm.handlers import EXIT_HANDLERS

MAX_EXITS_PER_STEP = 8


@dataclass(frozen=True, slots=True)
class HandledExit:
    """An exit, what the VMM did with it, its estimated cost and (optionally) its trace."""

    exit: VmExit
    handler: HandlerResult
    cycles: int
    trace: tuple[str, ...] = ()


class RowKind(enum.Enum):
    """What a result row describes."""

    ENTRY = "entry"
    INSTRUCTION = "instruction"
    BOUNDARY = "boundary"


@dataclass(frozen=True, slots=True)
class Row:
    """One row of the result: the initial entry, an instruction, or a boundary."""

    kind: RowKind
    insn: Insn | None
    exits: tuple[HandledExit, ...]
    delivered: tuple[str, ...]
    decision: str
    notes: tuple[str, ...]
    accesses: tuple[MemoryAccess, ...]
    lookups: tuple[TlbLookup, ...]
    possible: PossibleExits | None
    executed: bool
    entry: EntryResult | None = None


@dataclass(frozen=True, slots=True)
class RunResult:
    """Everything a run produced."""

    vmcs_name: str
    rows: tuple[Row, ...]
    stopped: str | None
    tlb_after: tuple[str, ...]
    final_state: dict[str, int]

    @property
    def exits(self) -> list[HandledExit]:
        return [h for row in self.rows for h in row.exits]


@dataclass
class Machine:
    """A vCPU under a VMCS, with a VMM that handles its exits."""

    vcpu: Vcpu
    trace: bool = False
    cost: CostModel = field(default_factory=CostModel)
    vmm: VmmState = field(default_factory=VmmState)
    stopped: str | None = None

    @classmethod
    def build(cls, vmcs: Vmcs, state: GuestState, memory: PhysicalMemory | None = None, *,
              flat_paging: bool = True, trace: bool = False,
              cost: CostModel | None = None) -> Machine:
        ept = EptTables(vmcs.ept, vmcs.caps)
        vcpu = Vcpu(state, vmcs, memory or PhysicalMemory(), ept, flat_paging=flat_paging)
        return cls(vcpu, trace=trace, cost=cost or CostModel())

    # -- exits --------------------------------------------------------------------------------
    def _handle(self, exit: VmExit, insn: Insn | None) -> tuple[HandledExit, list[str]]:
        """Run the exit sequence, the handler and, unless the VM stops, VM entry again."""
        steps = vm_exit_steps(self.vcpu, exit)
        result = dispatch_exit(EXIT_HANDLERS, VmmContext(self.vcpu, exit, insn, self.vmm))
        steps.append(f"VMM {result.handler}: {result.action} -> {result.outcome.value}")
        delivered: list[str] = []
        if result.skip_instruction and insn is not None:
            self.vcpu.state.rip = insn.next_rip
        if result.stop:
            self.stopped = result.stop
            steps.append(f"VM stopped: {result.stop}")
        else:
            entry = vm_entry(self.vcpu, launch=False)
            steps.extend(entry.steps)
            if not entry.ok:
                self.stopped = "VM entry failed after the exit: " + entry.problems[0]
            elif result.injection is not None:
                if result.injection.type is InterruptionType.EXTERNAL_INTERRUPT:
                    self.vcpu.state.in_service.append(result.injection.vector)
                steps.append(f"inject event: {result.injection.description}")
                delivered.append(result.injection.description)
        cycles = self.cost.cycles(result.cost)
        return HandledExit(exit, result, cycles, tuple(steps) if self.trace else ()), delivered

    def _boundary(self, row_kind: RowKind, insn: Insn | None) -> Row | None:
        exits: list[HandledExit] = []
        delivered: list[str] = []
        decision = ""
        for _ in range(MAX_EXITS_PER_STEP):
            try:
                event = check_boundary(self.vcpu)
            except VmExitSignal as signal:
                handled, more = self._handle(signal.exit, None)
                exits.append(handled)
                delivered += more
                decision = signal.exit.decided_by
                if self.stopped:
                    break
                continue
            if event is not None:
                delivered.append(event.description)
                continue
            break
        if not exits and not delivered:
            return None
        return Row(row_kind, insn, tuple(exits), tuple(delivered), decision, (), (), (), None,
                   True)

    # -- the run ------------------------------------------------------------------------------
    def launch(self) -> Row:
        entry = vm_entry(self.vcpu, launch=True)
        exits: tuple[HandledExit, ...] = ()
        if not entry.ok:
            self.stopped = "VM entry failed: " + (entry.problems[0] if entry.problems else "?")
            if entry.failure_exit is not None:
                # KVM reports a VM-entry failure to user space (KVM_EXIT_FAIL_ENTRY).
                verdict = HandlerResult(ExitOutcome.TO_USERSPACE, "vmx_handle_exit",
                                        "VM-entry failure: KVM_EXIT_FAIL_ENTRY to user space",
                                        CostClass.USERSPACE, stop=self.stopped)
                exits = (HandledExit(entry.failure_exit, verdict,
                                     self.cost.cycles(CostClass.USERSPACE),
                                     entry.steps if self.trace else ()),)
        decision = "VM entry succeeded" if entry.ok else self.stopped or ""
        return Row(RowKind.ENTRY, None, exits, (), decision, (), (), (), None, entry.ok, entry)

    def _schedule(self, events: list[GuestEvent], index: int) -> None:
        pending = self.vcpu.state.pending
        for ev in events:
            if ev.before != index:
                continue
            if ev.kind is EventKind.EXTERNAL_INTERRUPT:
                pending.external_vector = ev.vector
            elif ev.kind is EventKind.NMI:
                pending.nmi = True
            elif ev.kind is EventKind.INIT:
                pending.init = True
            else:
                pending.sipi_vector = ev.vector

    def run(self, insns: list[Insn], events: list[GuestEvent] | None = None) -> RunResult:
        events = list(events or [])
        if insns:
            self.vcpu.state.rip = insns[0].address       # the guest-state RIP VM entry loads
        rows = [self.launch()]
        for index, insn in enumerate(insns):
            if self.stopped:
                rows.append(self._not_run(insn, self.stopped))
                continue
            self._schedule(events, index)
            boundary = self._boundary(RowKind.BOUNDARY, insn)
            if boundary is not None:
                rows.append(boundary)
            if self.stopped:
                rows.append(self._not_run(insn, self.stopped))
                continue
            if self.vcpu.state.activity is not ActivityState.ACTIVE:
                self.stopped = (f"guest in the {self.vcpu.state.activity.name} activity state "
                                "with no pending event to wake it")
                rows.append(self._not_run(insn, self.stopped))
                continue
            rows.append(self._instruction(insn))
        if not self.stopped:
            self._schedule(events, len(insns))
            tail = self._boundary(RowKind.BOUNDARY, None)
            if tail is not None:
                rows.append(tail)
        return RunResult(self.vcpu.vmcs.name, tuple(rows), self.stopped,
                         tuple(self.vcpu.tlb.describe()), self.vcpu.state.summary())

    def _not_run(self, insn: Insn, why: str) -> Row:
        return Row(RowKind.INSTRUCTION, insn, (), (), f"not executed: {why}", (), (), (),
                   possible_exits(insn), False)

    def _instruction(self, insn: Insn) -> Row:
        exits: list[HandledExit] = []
        delivered: list[str] = []
        notes: list[str] = []
        accesses: list[MemoryAccess] = []
        lookups: list[TlbLookup] = []
        decision = ""
        for attempt in range(MAX_EXITS_PER_STEP):
            step = execute_instruction(self.vcpu, insn)
            accesses += step.accesses
            lookups += step.lookups
            notes += [n for n in step.notes if n not in notes]
            if step.delivered is not None:
                delivered.append(step.delivered.description)
            if attempt == 0 or step.exit is not None:
                decision = step.decision
            if step.exit is None:
                if attempt:
                    notes.append(f"re-executed after the VMM's handling: {step.decision}")
                break
            handled, more = self._handle(step.exit, insn)
            exits.append(handled)
            delivered += more
            result = handled.handler
            if self.stopped or step.exit.reason in TRAP_LIKE_REASONS:
                break
            if result.skip_instruction:
                tick(self.vcpu, self.vcpu.state.tsc_per_instruction)
                break
            if result.injection is not None:
                break
        else:
            notes.append(f"gave up after {MAX_EXITS_PER_STEP} exits on one instruction")
        return Row(RowKind.INSTRUCTION, insn, tuple(exits), tuple(delivered), decision, tuple(notes),
                   tuple(accesses), tuple(lookups), possible_exits(insn), True)
