"""Helpers shared by the VM-exit simulator tests (imported by module name, like store_helpers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from appvirt.vmx.controls import Cr4, EntryCtl, ExitCtl, PinCtl, ProcCtl, Proc2Ctl
from appvirt.vmx.cpu import StepResult, execute_instruction
from appvirt.vmx.decoder import Insn, decode_bytes
from appvirt.vmx.guest import GuestState
from appvirt.vmx.memory import EptTables, PhysicalMemory
from appvirt.vmx.registers import Gpr
from appvirt.vmx.state_file import setup_from_data
from appvirt.vmx.vcpu import Vcpu
from appvirt.vmx.vmcs import Vmcs

REPO = Path(__file__).resolve().parents[3]
REFERENCE = REPO / ".." / "shared" / "reference"
POLICIES = REPO / "policies" / "vmcs"
EXAMPLES = POLICIES / "examples"

PROFILE_FILES = ("kvm-default.yaml", "all-exiting.yaml", "minimal-hypervisor.yaml")


def vmcs(*, pin: PinCtl = PinCtl(0), proc: ProcCtl = ProcCtl(0),
         sec: Proc2Ctl = Proc2Ctl(0), **fields: Any) -> Vmcs:
    """A VMCS with every control 0 unless given; `sec` also sets primary bit 31 (spec §10)."""
    if sec:
        proc |= ProcCtl.ACTIVATE_SECONDARY_CONTROLS
    return Vmcs(pin=pin, proc=proc, proc2=sec, exit_ctl=fields.pop("exit_ctl", ExitCtl.HOST_ADDRESS_SPACE_SIZE),
                entry_ctl=fields.pop("entry_ctl", EntryCtl.IA32E_MODE_GUEST), **fields)


def guest(**regs: int) -> GuestState:
    """The spec's common setup: 64-bit, CPL 0, CR4.OSXSAVE = 1; registers by lower-case name."""
    g = GuestState()
    g.cr4 |= Cr4.OSXSAVE
    g.set_reg(Gpr.RSP, 0x8000)
    for name, value in regs.items():
        if name in ("cpl", "rflags", "tsc", "cr0", "cr3", "cr4", "efer", "rip"):
            setattr(g, name, value)
        else:
            g.set_reg(Gpr[name.upper()], value)
    return g


def vcpu(v: Vmcs, g: GuestState | None = None, memory: PhysicalMemory | None = None,
         *, flat: bool = True) -> Vcpu:
    return Vcpu(g or guest(), v, memory or PhysicalMemory(), EptTables(v.ept, v.caps),
                flat_paging=flat)


def insn(hex_bytes: str, address: int = 0x1000) -> Insn:
    (one,) = decode_bytes(bytes.fromhex(hex_bytes.replace(" ", "")), address)
    return one


def step(hex_bytes: str, v: Vmcs, g: GuestState | None = None, *,
         address: int = 0x1000) -> tuple[StepResult, Vcpu]:
    """Execute one instruction at `address` on a fresh vCPU; return the result and the vCPU."""
    cpu = vcpu(v, g)
    return execute_instruction(cpu, insn(hex_bytes, address)), cpu


def paged_vcpu(v: Vmcs, data: dict[str, Any]) -> Vcpu:
    """A vCPU whose guest state, page tables and memory come from state-file data."""
    setup = setup_from_data(data)
    setup.state.cr4 |= Cr4.OSXSAVE
    return Vcpu(setup.state, v, setup.memory, EptTables(v.ept, v.caps),
                flat_paging=setup.flat_paging)
