"""Guest exceptions: the exception bitmap, the #PF PFEC rule, delivery and escalation.

SDM 24.6.3 and 25.2 (mirror pp. 1058, 1079), Bochs `VMexit_Event` (vmexit.cc); spec §4.5. An
exception that does not exit is delivered through the guest IDT; if delivery itself faults the
SDM's double-fault rules apply (Vol. 3A Table 6-5) and a fault while delivering #DF is a triple
fault, which always exits (reason 2).
"""

from __future__ import annotations

from dataclasses import dataclass

from .controls import InterruptionType, Vector
from .exits import vm_exit
from .qualification import DebugQual, InterruptionInfo
from .reasons import ExitReason
from .vmcs import Vmcs

ERROR_CODE_VECTORS = frozenset({Vector.DF, Vector.TS, Vector.NP, Vector.SS, Vector.GP,
                                Vector.PF, Vector.AC, Vector.CP})
CONTRIBUTORY = frozenset({Vector.DE, Vector.TS, Vector.NP, Vector.SS, Vector.GP})
# Events whose exits (or faults during whose delivery) define the instruction length (SDM 27.2.4).
_SOFTWARE = frozenset({InterruptionType.SOFTWARE_EXCEPTION,
                       InterruptionType.PRIVILEGED_SOFTWARE_EXCEPTION,
                       InterruptionType.SOFTWARE_INTERRUPT})


class GuestFault(Exception):
    """An exception raised by a guest instruction (or its memory access).

    Attributes:
        vector: the exception vector.
        error_code: pushed error code, None for vectors without one.
        address: faulting linear address for #PF (becomes CR2, or the exit qualification).
        kind: hardware exception, or a software exception for INT3/INTO/INT1.
        debug: DR6-like bits for #DB.
    """

    def __init__(self, vector: int, error_code: int | None = None, *, address: int = 0,
                 kind: InterruptionType = InterruptionType.HARDWARE_EXCEPTION,
                 why: str = "", debug: DebugQual | None = None) -> None:
        self.vector = vector
        self.error_code = error_code if vector in ERROR_CODE_VECTORS else None
        self.address = address
        self.kind = kind
        self.why = why
        self.debug = debug
        super().__init__(self.describe())

    def describe(self) -> str:
        code = f"({self.error_code:#x})" if self.error_code is not None else ""
        if self.kind is InterruptionType.SOFTWARE_INTERRUPT:
            name = f"INT {self.vector:#x}"
        else:
            name = f"#{Vector(self.vector).name}" if self.vector in Vector._value2member_map_ \
                else f"vector {self.vector:#x}"
        return f"{name}{code}" + (f": {self.why}" if self.why else "")


def pf_exits(vmcs: Vmcs, pfec: int) -> tuple[bool, str]:
    """#PF exits iff ((PFEC & mask) == match) == exception_bitmap[14] (SDM 25.2; spec §4.5)."""
    match = (pfec & vmcs.pfec_mask) == vmcs.pfec_match
    bit = vmcs.exception_intercepted(Vector.PF)
    why = (f"exception bitmap bit 14 = {int(bit)}, PFEC {pfec:#x} & mask {vmcs.pfec_mask:#x} "
           f"{'==' if match else '!='} match {vmcs.pfec_match:#x}"
           f"{'' if match else ' (mismatch inverts bit 14)'}")
    return match == bit, why


def exception_exits(vmcs: Vmcs, vector: int, error_code: int | None) -> tuple[bool, str]:
    """Whether a guest exception causes a VM exit, and the sentence that says why."""
    if vector == Vector.PF:
        return pf_exits(vmcs, error_code or 0)
    bit = vmcs.exception_intercepted(vector)
    return bit, f"exception bitmap bit {vector} (#{Vector(vector).name}) = {int(bit)}"


@dataclass(frozen=True, slots=True)
class DeliveredEvent:
    """An event delivered to the guest through its IDT instead of causing an exit."""

    vector: int
    type: InterruptionType
    error_code: int | None
    description: str


def _info(fault: GuestFault) -> InterruptionInfo:
    return InterruptionInfo(fault.vector, fault.kind, fault.error_code is not None)


def _escalate(first: GuestFault, second: GuestFault) -> GuestFault:
    """SDM Vol. 3A Table 6-5: which exception follows a fault during delivery of `first`."""
    if first.vector == Vector.DF:
        return second                     # the caller turns this into a triple fault
    first_pf = first.vector == Vector.PF
    first_contrib = first.vector in CONTRIBUTORY
    second_serious = second.vector in CONTRIBUTORY or second.vector == Vector.PF
    if (first_contrib and second.vector in CONTRIBUTORY) or (first_pf and second_serious):
        return GuestFault(Vector.DF, 0, why=f"{second.describe()} while delivering "
                                            f"{first.describe()}")
    return second


def deliver_exception(vmcs: Vmcs, fault: GuestFault, *, idt_broken: bool,
                      instruction_length: int | None = None) -> DeliveredEvent:
    """Check the exception bitmap, then deliver through the IDT, escalating on failure.

    Raises:
        VmExitSignal: reason 0 for an intercepted exception (CR2 untouched, qualification =
            faulting address for #PF), or reason 2 for a triple fault.
    """
    previous: GuestFault | None = None
    current = fault
    for _ in range(4):
        if current.kind is InterruptionType.SOFTWARE_INTERRUPT:
            exits, why = False, "software INT n never exits (SDM 25.2)"
        else:
            exits, why = exception_exits(vmcs, current.vector, current.error_code)
        if exits:
            qual = 0
            if current.vector == Vector.PF:
                qual = current.address
            elif current.vector == Vector.DB and current.debug is not None:
                qual = current.debug.encode()
            software = current.kind in _SOFTWARE or (previous is not None
                                                     and previous.kind in _SOFTWARE)
            # An exit for #DF is not "during event delivery" (Bochs clears in_event on #DF).
            vectoring = previous if previous is not None and current.vector != Vector.DF else None
            vm_exit(ExitReason.EXCEPTION_NMI, qual, decided_by=why,
                    interruption_info=_info(current),
                    interruption_error_code=current.error_code or 0,
                    idt_vectoring_info=_info(vectoring) if vectoring else None,
                    idt_vectoring_error_code=(vectoring.error_code or 0) if vectoring else None,
                    instruction_length=instruction_length if software else None)
        if not idt_broken:
            desc = f"{current.describe()} delivered through the guest IDT (vector {current.vector:#x})"
            if previous is not None:
                desc += f", raised while delivering {previous.describe()}"
            return DeliveredEvent(int(current.vector), current.kind, current.error_code, desc)
        failure = GuestFault(Vector.GP, int(current.vector) << 3 | 3,
                             why=f"IDT gate for vector {int(current.vector)} is unusable")
        if current.vector == Vector.DF:
            vm_exit(ExitReason.TRIPLE_FAULT, 0,
                    decided_by=f"{failure.describe()} while delivering #DF: a triple fault "
                               "always exits")
        previous, current = current, _escalate(current, failure)
    raise AssertionError("exception escalation did not terminate")  # pragma: no cover
