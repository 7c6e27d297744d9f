"""The simulated vCPU: guest state, the current VMCS, memories, EPT structures and the TLB.

Passed explicitly to every check (Bochs keeps these in a hidden global `BX_CPU_THIS_PTR`; the
architecture notes ask us not to).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .guest import GuestState
from .memory import EptTables, PhysicalMemory
from .paging_types import MemoryAccess
from .tlb import Tlb, TlbLookup, TlbTag
from .vmcs import Vmcs


@dataclass(slots=True)
class Vcpu:
    """One logical processor running a guest under a VMCS.

    Attributes:
        flat_paging: no guest page tables were described: every linear address is present and
            maps to guest-physical (linear mod `FLAT_WINDOW`).
        accesses, lookups: what the current instruction did to memory and the TLB.
    """

    state: GuestState
    vmcs: Vmcs
    guest_memory: PhysicalMemory
    ept: EptTables | None
    tlb: Tlb = field(default_factory=Tlb)
    flat_paging: bool = True
    accesses: list[MemoryAccess] = field(default_factory=list)
    lookups: list[TlbLookup] = field(default_factory=list)
    timer: int = 0
    timer_residue: int = 0

    def set_vmcs(self, vmcs: Vmcs) -> None:
        """Install a VMCS the VMM changed; rebuild EPT structures if their description changed."""
        if self.ept is None or vmcs.ept != self.ept.config or vmcs.caps != self.ept.caps:
            self.ept = EptTables(vmcs.ept, vmcs.caps)
        self.vmcs = vmcs

    @property
    def eptrta(self) -> int | None:
        if self.vmcs.ept_enabled() and self.ept is not None:
            return self.ept.pml4
        return None

    def tag(self) -> TlbTag:
        vpid = self.vmcs.vpid if self.vmcs.vpid_enabled() else 0
        return TlbTag(vpid, self.state.pcid(), self.eptrta)

    def begin_instruction(self) -> None:
        self.accesses = []
        self.lookups = []
