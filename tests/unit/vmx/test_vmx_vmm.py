"""The VMM side: dispatch table, outcomes, VMCS dump, handlers, devices, trace steps."""

from __future__ import annotations

from vmx_helpers import POLICIES, guest, insn, vcpu, vmcs

from appvirt.vmx.bitmaps import MsrBitmap
from appvirt.vmx.controls import (
    ExitCtl, InterruptionType, PinCtl, ProcCtl, Proc2Ctl, Rflags, Vector,
)
from appvirt.vmx.decoder import decode_bytes
from appvirt.vmx.exits import VmExit
from appvirt.vmx.qualification import InterruptionInfo
from appvirt.vmx.reasons import ExitReason
from appvirt.vmx.registers import Gpr
from appvirt.vmx.simulator import Machine
from appvirt.vmx.vmcs import CrShadowing, EptConfig, EptRange, Memslot, MsrAreas, MsrEntry
from appvirt.vmx.vmcs_file import load_vmcs
from appvirt.vmx.vmm.cpuid import ECX1_HYPERVISOR, ECX1_VMX, emulate_cpuid
from appvirt.vmx.vmm.devices import PortBus
from appvirt.vmx.vmm.dispatch import ExitOutcome, VmmContext, VmmState, dispatch_exit
from appvirt.vmx.vmm.handlers import EXIT_HANDLERS


def run(hex_bytes: str, v, g=None, *, trace: bool = False):
    machine = Machine.build(v, g or guest(), trace=trace)
    return machine.run(decode_bytes(bytes.fromhex(hex_bytes.replace(" ", "")), 0x1000))


def test_every_handled_reason_is_an_exit_reason_and_the_rest_are_unexpected() -> None:
    assert all(isinstance(reason, ExitReason) for reason in EXIT_HANDLERS)
    ctx = VmmContext(vcpu(vmcs()), VmExit(ExitReason.GETSEC), None, VmmState())
    result = dispatch_exit(EXIT_HANDLERS, ctx)
    assert ExitReason.GETSEC not in EXIT_HANDLERS
    assert result.outcome is ExitOutcome.UNEXPECTED
    assert result.vmcs_dump["EXIT_REASON (0x4402)"] == hex(11)
    assert result.stop


def test_an_empty_table_makes_every_exit_unexpected() -> None:
    for reason in ExitReason:
        ctx = VmmContext(vcpu(vmcs()), VmExit(reason), None, VmmState())
        assert dispatch_exit({}, ctx).outcome is ExitOutcome.UNEXPECTED


def test_getsec_exit_stops_the_vm_with_a_vmcs_dump() -> None:
    g = guest()
    g.cr4 |= 1 << 14                                   # CR4.SMXE
    result = run("0f 37", vmcs(), g)
    (handled,) = result.rows[1].exits
    assert handled.exit.reason == ExitReason.GETSEC
    assert handled.handler.outcome is ExitOutcome.UNEXPECTED and result.stopped


def test_cpuid_filtering() -> None:
    leaf1 = emulate_cpuid(1, 0, "KVMKVMKVM\0\0\0")
    assert not leaf1.ecx & ECX1_VMX and leaf1.ecx & ECX1_HYPERVISOR
    sig = emulate_cpuid(0x40000000, 0, "KVMKVMKVM\0\0\0")
    raw = b"".join(r.to_bytes(4, "little") for r in (sig.ebx, sig.ecx, sig.edx))
    assert raw == b"KVMKVMKVM\0\0\0"


def test_cpuid_handler_writes_registers_and_skips_the_instruction() -> None:
    result = run("0f a2 90", vmcs(), guest(rax=0x40000000))
    (handled,) = result.rows[1].exits
    assert handled.handler.handler == "kvm_emulate_cpuid" and handled.handler.skip_instruction
    assert result.final_state["rip"] == 0x1003       # cpuid skipped, nop executed


def test_cmos_rtc_reads_bcd_and_writes_stay_virtual() -> None:
    bus = PortBus()
    bus.rtc.epoch = 1_700_000_000                     # 2023-11-14 22:13:20 UTC
    bus.access(0x70, 1, write=True, value=0x04)
    assert bus.access(0x71, 1, write=False).value == 0x22
    bus.access(0x70, 1, write=True, value=0x09)
    assert bus.access(0x71, 1, write=False).value == 0x23
    bus.access(0x70, 1, write=True, value=0x00)
    bus.access(0x71, 1, write=True, value=0x45)
    bus.access(0x70, 1, write=True, value=0x00)
    assert bus.access(0x71, 1, write=False).value == 0x45


def test_reset_ports_and_serial() -> None:
    bus = PortBus()
    assert bus.access(0xCF9, 1, write=True, value=0x02).reset is False
    assert bus.access(0xCF9, 1, write=True, value=0x06).reset is True
    assert bus.access(0x64, 1, write=True, value=0xFE).reset is True
    assert bus.access(0x64, 1, write=True, value=0xAE).reset is False
    bus.access(0x3F8, 1, write=True, value=ord("h"))
    assert bytes(bus.serial.output) == b"h"
    assert bus.access(0x3FD, 1, write=False).value & 0x20
    assert bus.access(0x32, 4, write=False).value == 0xFFFF_FFFF


def test_in_from_the_rtc_lands_in_al() -> None:
    result = run("b0 09 e6 70 e4 71", vmcs(proc=ProcCtl.UNCONDITIONAL_IO_EXITING))
    exits = result.exits
    assert [h.exit.reason for h in exits] == [ExitReason.IO_INSTRUCTION] * 2
    assert all(h.handler.outcome is ExitOutcome.TO_USERSPACE for h in exits)
    assert "RTC register 0x9" in exits[1].handler.action


def test_reboot_through_0xcf9_stops_the_vm() -> None:
    result = run("66 ba f9 0c b0 06 ee 90", vmcs(proc=ProcCtl.UNCONDITIONAL_IO_EXITING))
    assert result.stopped == "reset requested through port 0xcf9"
    assert result.rows[-1].executed is False


def test_unknown_msr_gets_gp_injected() -> None:
    result = run("0f 32", vmcs(), guest(rcx=0x12345678))
    (handled,) = result.exits
    assert handled.handler.injection.vector == Vector.GP


def test_guest_tsc_write_moves_the_offset_not_the_tsc() -> None:
    result = run("0f 30 0f 31", vmcs(proc=ProcCtl.USE_MSR_BITMAPS | ProcCtl.RDTSC_EXITING,
                                     msr_bitmap=MsrBitmap.build(default_exit=True)),
                 guest(rcx=0x10, rax=1_000_000, tsc=50))
    wrmsr, rdtsc = result.exits
    assert wrmsr.exit.reason == ExitReason.MSR_WRITE and rdtsc.exit.reason == ExitReason.RDTSC
    assert "TSC offset" in wrmsr.handler.action


def test_ept_violation_maps_on_demand_then_the_instruction_completes() -> None:
    ept = EptConfig(ranges=(EptRange(0, 0x10000, 0x100000000),),
                    memslots=(Memslot(0, 1 << 30, 0x100000000),))
    v = vmcs(sec=Proc2Ctl.ENABLE_EPT, ept=ept)
    g = guest(rdi=0x20000)
    result = run("48 89 07", v, g)
    (handled,) = result.exits
    assert handled.exit.reason == ExitReason.EPT_VIOLATION
    assert handled.handler.handler == "handle_ept_violation"
    assert handled.handler.outcome is ExitOutcome.RESUME and not handled.handler.skip_instruction
    row = result.rows[1]
    assert any("re-executed" in n for n in row.notes)
    assert result.final_state["rip"] == 0x1003


def test_mov_dr_exits_once_then_runs_natively() -> None:
    result = run("0f 23 f8 0f 23 f8", vmcs(proc=ProcCtl.MOV_DR_EXITING))
    assert [h.exit.reason for h in result.exits] == [ExitReason.DR_ACCESS]


def test_mov_dr_exit_beats_the_cpl_gp() -> None:
    result = run("0f 23 f8", vmcs(proc=ProcCtl.MOV_DR_EXITING), guest(cpl=3))
    assert result.exits[0].exit.reason == ExitReason.DR_ACCESS


def test_interrupt_window_flow_when_guest_interrupts_are_off() -> None:
    v = vmcs(pin=PinCtl.EXTERNAL_INTERRUPT_EXITING,
             exit_ctl=ExitCtl.HOST_ADDRESS_SPACE_SIZE | ExitCtl.ACK_INTERRUPT_ON_EXIT)
    g = guest()
    g.pending.external_vector = 0x41                 # IF = 0: the guest cannot take it yet
    machine = Machine.build(v, g)
    result = machine.run(decode_bytes(bytes.fromhex("90fb9090"), 0x1000))
    reasons = [h.exit.reason for h in result.exits]
    assert reasons == [ExitReason.EXTERNAL_INTERRUPT, ExitReason.PENDING_INTERRUPT]
    window = result.exits[1]
    assert window.handler.injection.vector == 0x41
    assert ProcCtl.INTERRUPT_WINDOW_EXITING not in machine.vcpu.vmcs.proc


def test_trace_shows_exit_and_entry_steps_with_msr_areas() -> None:
    v = load_vmcs(POLICIES / "all-exiting.yaml")
    result = run("0f a2", v, trace=True)
    (handled,) = result.exits
    text = "\n".join(handled.trace)
    for expected in ("record exit information: exit reason 0xa (CPUID)",
                     "save guest state", "store 1 MSR(s) to the VM-exit MSR-store area: 0x10=",
                     "load host state", "load 1 MSR(s) from the VM-exit MSR-load area: 0x277=",
                     "VMM kvm_emulate_cpuid", "VMRESUME",
                     "load 1 MSR(s) from the VM-entry MSR-load area"):
        assert expected in text, expected


def test_nmi_exit_has_nmi_interruption_info() -> None:
    g = guest()
    g.pending.nmi = True
    machine = Machine.build(vmcs(pin=PinCtl.NMI_EXITING), g)
    result = machine.run(decode_bytes(b"\x90", 0x1000))
    (handled,) = result.exits
    assert handled.exit.interruption_info == InterruptionInfo(2, InterruptionType.NMI)
    assert handled.exit.interruption_info.encode() == 0x80000202


def test_exit_msr_load_area_failure_is_reported_at_entry() -> None:
    areas = MsrAreas(entry_load=(MsrEntry(0x9E, 0),))
    result = run("90", vmcs(msr_areas=areas))
    assert result.stopped and result.rows[0].exits[0].exit.reason == ExitReason.MSR_LOAD_FAIL


def test_hlt_without_exiting_halts_the_run() -> None:
    result = run("f4 90", vmcs(), guest(rflags=Rflags.FIXED1))
    assert result.rows[-1].executed is False and "HLT" in result.stopped


def test_cr_handler_updates_the_shadow() -> None:
    g = guest()
    g.set_reg(Gpr.RAX, g.cr0 & ~(1 << 16))           # clear WP through an owned bit
    machine = Machine.build(vmcs(cr0=CrShadowing(1 << 16, g.cr0)), g)
    machine.run([insn("0f 22 c0")])
    assert machine.vcpu.vmcs.cr0.shadow == g.cr0 & ~(1 << 16)
