"""KVM-style exit dispatch: a table keyed by exit reason, an outcome enum, a VMCS dump.

Mirrors `kvm_vmx_exit_handlers[]` and `__vmx_handle_exit()` in arch/x86/kvm/vmx/vmx.c: a
handler returns RESUME (KVM's 1) or TO_USERSPACE (KVM's 0 after filling kvm_run); a reason with
no handler, or out of range, gives UNEXPECTED plus a VMCS dump (`dump_vmcs()`), never an
exception (architecture notes §5, §6.2).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..controls import VmcsField, flag_names
from ..decoder import Insn
from ..exits import VmExit
from ..faults import DeliveredEvent
from ..reasons import reason_name
from ..vcpu import Vcpu
from ..vmcs import Vmcs
from .devices import PortBus


class ExitOutcome(enum.Enum):
    """What the VMM does after handling an exit."""

    RESUME = "resume"              # handled in the kernel; VM entry follows at once
    TO_USERSPACE = "to_userspace"  # KVM_RUN returns to the user-space VMM (QEMU), then re-enters
    UNEXPECTED = "unexpected"      # no handler: VMCS dump, the vCPU is stopped


class CostClass(enum.Enum):
    """How expensive the handling is, for the cost model (spec §8)."""

    MINIMAL = "minimal in-kernel handler"
    KERNEL_EMULATION = "in-kernel emulation with side effects (timer, APIC, IPI)"
    EPT_FAULT_IN = "EPT violation: map the page on demand"
    USERSPACE = "exit to the user-space VMM (device model)"


@dataclass(frozen=True, slots=True)
class HandlerResult:
    """One handler's verdict.

    Attributes:
        handler: the KVM-style handler name.
        action: what the VMM did, in one sentence.
        skip_instruction: the VMM emulated the instruction and advanced RIP past it.
        stop: the VM stops (reset, shutdown, unexpected exit) and why.
        injection: an event the VMM injects at the next VM entry.
        vmcs_dump: for UNEXPECTED, the dump of the VMCS fields.
    """

    outcome: ExitOutcome
    handler: str
    action: str
    cost: CostClass = CostClass.MINIMAL
    skip_instruction: bool = False
    stop: str | None = None
    injection: DeliveredEvent | None = None
    vmcs_dump: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome.value, "handler": self.handler, "action": self.action,
                "cost_class": self.cost.name, "skip_instruction": self.skip_instruction,
                "stop": self.stop,
                "injection": self.injection.description if self.injection else None,
                "vmcs_dump": dict(self.vmcs_dump) if self.vmcs_dump else None}


@dataclass
class VmmState:
    """What the VMM remembers between exits of one vCPU (KVM's `struct kvm_vcpu_arch` bits)."""

    ports: PortBus = field(default_factory=PortBus)
    queued_interrupt: int | None = None     # a guest interrupt waiting for an interrupt window


@dataclass
class VmmContext:
    """What a handler sees: the vCPU (guest state, VMCS), the exit, the instruction at RIP
    (the emulator's fetch) and the VMM's own state (devices, queued interrupt)."""

    vcpu: Vcpu
    exit: VmExit
    insn: Insn | None
    vmm: VmmState

    @property
    def ports(self) -> PortBus:
        return self.vmm.ports

    def set_vmcs(self, vmcs: Vmcs) -> None:
        self.vcpu.set_vmcs(vmcs)


Handler = Callable[[VmmContext], HandlerResult]


def vmcs_dump(vmcs: Vmcs, exit: VmExit | None = None) -> dict[str, Any]:
    """The fields `dump_vmcs()` would print, keyed by SDM name and encoding."""
    out: dict[str, Any] = {
        f"PIN_BASED_CONTROLS ({VmcsField.PIN_BASED_CONTROLS:#06x})": flag_names(vmcs.pin),
        f"PRIMARY_PROC_CONTROLS ({VmcsField.PRIMARY_PROC_CONTROLS:#06x})": flag_names(vmcs.proc),
        f"SECONDARY_PROC_CONTROLS ({VmcsField.SECONDARY_PROC_CONTROLS:#06x})": flag_names(vmcs.proc2),
        f"EXIT_CONTROLS ({VmcsField.EXIT_CONTROLS:#06x})": flag_names(vmcs.exit_ctl),
        f"ENTRY_CONTROLS ({VmcsField.ENTRY_CONTROLS:#06x})": flag_names(vmcs.entry_ctl),
        f"EXCEPTION_BITMAP ({VmcsField.EXCEPTION_BITMAP:#06x})": hex(vmcs.exception_bitmap),
        f"PAGE_FAULT_ERROR_CODE_MASK/MATCH": f"{vmcs.pfec_mask:#x}/{vmcs.pfec_match:#x}",
        f"CR0_GUEST_HOST_MASK/READ_SHADOW": f"{vmcs.cr0.mask:#x}/{vmcs.cr0.shadow:#x}",
        f"CR4_GUEST_HOST_MASK/READ_SHADOW": f"{vmcs.cr4.mask:#x}/{vmcs.cr4.shadow:#x}",
        f"CR3_TARGET_COUNT ({VmcsField.CR3_TARGET_COUNT:#06x})": vmcs.cr3_target_count,
        f"TSC_OFFSET ({VmcsField.TSC_OFFSET:#06x})": vmcs.tsc_offset,
        f"TSC_MULTIPLIER ({VmcsField.TSC_MULTIPLIER:#06x})": hex(vmcs.tsc_multiplier),
        "VPID": vmcs.vpid,
    }
    if exit is not None:
        out[f"EXIT_REASON ({VmcsField.EXIT_REASON:#06x})"] = hex(exit.reason_field.encode())
        out[f"EXIT_QUALIFICATION ({VmcsField.EXIT_QUALIFICATION:#06x})"] = hex(exit.qualification)
        out["GUEST_RIP"] = hex(exit.guest_rip)
    return out


def dispatch_exit(table: Mapping[int, Handler], ctx: VmmContext) -> HandlerResult:
    """Look the exit reason up in `table` and run its handler (KVM `__vmx_handle_exit`)."""
    reason = int(ctx.exit.reason)
    handler = table.get(reason) if 0 <= reason < 0x10000 else None
    if handler is None:
        return HandlerResult(ExitOutcome.UNEXPECTED, "unexpected_vmexit",
                             f"vmx: unexpected exit reason {reason:#x} ({reason_name(reason)})",
                             CostClass.USERSPACE, stop="unexpected VM exit: vCPU stopped",
                             vmcs_dump=vmcs_dump(ctx.vcpu.vmcs, ctx.exit))
    return handler(ctx)
