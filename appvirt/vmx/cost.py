"""Cost model: estimated cycles for an exit -> handler -> re-entry round trip (spec §8).

Every figure carries its source. Measured figures are cycles timed from inside the guest; the
per-class additions are estimates derived from them, labelled as such. All are configurable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .vmm.dispatch import CostClass


@dataclass(frozen=True, slots=True)
class CostFigure:
    """One number of the model and where it comes from."""

    cycles: int
    source: str
    measured: bool


BASE_ROUNDTRIP = CostFigure(
    1_000,
    "CPUID exit handled in-kernel by KVM, kvm-unit-tests vmexit.flat cpuid: 1,018-1,027 cycles "
    "(Sean Christopherson, kvm@vger, 2024-12-12, Message-ID Z1r-Nh0JAQdL_L8n@google.com); "
    "1,087-1,110 on another machine (Bernhard Kauer, same thread)", True)
KERNEL_EMULATION = CostFigure(
    2_500,
    "WRMSR TSC_DEADLINE exit + timer interrupt injection, vmexit.flat tscdeadline_immed: "
    "3,153-4,011 cycles on a Xeon Gold 6442Y (Jon Kohler via Pawan Gupta, kvm@vger, "
    "2024-09-13), minus the base round trip; an estimate", False)
USERSPACE_EXIT = CostFigure(
    7_000,
    "estimate, spec §8: 4,000-10,000 extra cycles for KVM_EXIT_IO/MMIO to a user-space device "
    "model, from the nested ratio inl_from_qemu 46,747 / inl_from_kernel 15,218 = 3.1x (Paolo "
    "Bonzini, '[PATCH 00/43] VMX optimizations', kvm@vger, 2019) and the AMD KVM_RUN round trip "
    "with a return to user space, 2,528-2,576 vs 1,344-1,376 (Michael Roth, kvm@vger "
    "2020-12-16)", False)
EPT_FAULT_IN = CostFigure(
    2_000,
    "estimate: the page-fault work of kvm_mmu_page_fault (find the memslot, pin the page, "
    "install the EPT entry) on top of the base round trip; not measured by the spec's sources",
    False)
NESTED_MULTIPLIER = CostFigure(
    13,
    "nested (L2 under an L1 KVM): cpuid 14,886 -> 13,142 cycles vs ~1,000 single level (Paolo "
    "Bonzini, kvm@vger, 2019)", True)
CPU_GHZ = 3.0


@dataclass(frozen=True, slots=True)
class CostModel:
    """Cycles per exit by the handler's cost class; `ghz` converts cycles to microseconds."""

    base: CostFigure = BASE_ROUNDTRIP
    kernel_emulation: CostFigure = KERNEL_EMULATION
    userspace_exit: CostFigure = USERSPACE_EXIT
    ept_fault_in: CostFigure = EPT_FAULT_IN
    nested_multiplier: CostFigure = NESTED_MULTIPLIER
    ghz: float = CPU_GHZ
    nested: bool = False
    extra: dict[CostClass, int] = field(default_factory=dict)

    def cycles(self, cost: CostClass) -> int:
        """Estimated round-trip cycles for one exit handled at `cost`."""
        add = {CostClass.MINIMAL: 0,
               CostClass.KERNEL_EMULATION: self.kernel_emulation.cycles,
               CostClass.EPT_FAULT_IN: self.ept_fault_in.cycles,
               CostClass.USERSPACE: self.userspace_exit.cycles}[cost]
        total = self.base.cycles + add + self.extra.get(cost, 0)
        return total * self.nested_multiplier.cycles if self.nested else total

    def microseconds(self, cycles: int) -> float:
        return cycles / (self.ghz * 1000.0)

    def citations(self) -> list[tuple[str, CostFigure]]:
        return [("base round trip", self.base),
                ("in-kernel emulation (added)", self.kernel_emulation),
                ("exit to user space (added)", self.userspace_exit),
                ("EPT fault-in (added)", self.ept_fault_in),
                ("nested multiplier", self.nested_multiplier)]
