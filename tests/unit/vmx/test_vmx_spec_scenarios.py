"""Every scenario of vmexit-spec.md §10, one test each (numbering as in the spec's table).

Expected values are the spec's. Instruction length is asserted only where the SDM defines it.
"""

from __future__ import annotations

import pytest
from vmx_helpers import guest, insn, paged_vcpu, step, vcpu, vmcs

from appvirt.vmx.bitmaps import PAGE, IoBitmaps, MsrBitmap
from appvirt.vmx.controls import Cr4, ExitCtl, PinCtl, ProcCtl, Proc2Ctl, Rflags, Vector
from appvirt.vmx.cpu import execute_instruction
from appvirt.vmx.decoder import decode_bytes
from appvirt.vmx.events import check_boundary
from appvirt.vmx.exits import VmExitSignal
from appvirt.vmx.guest import ActivityState, GuestState
from appvirt.vmx.reasons import ExitReason
from appvirt.vmx.simulator import Machine, RowKind
from appvirt.vmx.vmcs import CrShadowing, EptConfig, EptRange, VmxCapabilities

MSR_BITMAPS = ProcCtl.USE_MSR_BITMAPS
IO_BITMAPS = ProcCtl.USE_IO_BITMAPS
UNCOND_IO = ProcCtl.UNCONDITIONAL_IO_EXITING


def msr_bitmap_with(byte: int, bit: int) -> MsrBitmap:
    data = bytearray(PAGE)
    data[byte] |= 1 << bit
    return MsrBitmap(bytes(data))


def io_bitmaps(a: dict[int, int] | None = None, b: dict[int, int] | None = None) -> IoBitmaps:
    ba, bb = bytearray(PAGE), bytearray(PAGE)
    for byte, value in (a or {}).items():
        ba[byte] = value
    for byte, value in (b or {}).items():
        bb[byte] = value
    return IoBitmaps(bytes(ba), bytes(bb))


# -- 1: WRMSR ---------------------------------------------------------------------------------

def test_1a_wrmsr_exits_when_msr_bitmaps_are_off() -> None:
    g = guest(rcx=0x10, rax=0x1234, rdx=0x1, tsc=5000)
    result, cpu = step("0f 30", vmcs(), g)
    assert result.exit is not None
    assert result.exit.reason == ExitReason.MSR_WRITE == 32
    assert result.exit.qualification == 0
    assert result.exit.instruction_length == 2
    assert cpu.state.rip == 0x1000            # RIP unchanged: fault-like
    assert cpu.state.tsc == 5000              # TSC unchanged


def test_1b_wrmsr_exits_on_write_low_bitmap_byte_0x802_bit_0() -> None:
    result, _ = step("0f 30", vmcs(proc=MSR_BITMAPS, msr_bitmap=msr_bitmap_with(0x802, 0)),
                     guest(rcx=0x10))
    assert result.exit is not None
    assert (result.exit.reason, result.exit.qualification, result.exit.instruction_length) == (32, 0, 2)


def test_1c_wrmsr_tsc_without_exit_sets_physical_tsc() -> None:
    g = guest(rcx=0x10, rdx=0x1234_5678, rax=0x9ABC_DEF0, tsc=5000)
    result, cpu = step("0f 30", vmcs(proc=MSR_BITMAPS), g)
    assert result.exit is None
    assert cpu.state.tsc == 0x1234_5678_9ABC_DEF0


def test_1d_wrmsr_at_cpl3_is_a_gp_not_an_exit() -> None:
    result, _ = step("0f 30", vmcs(), guest(rcx=0x10, cpl=3))
    assert result.exit is None
    assert result.delivered is not None and result.delivered.vector == Vector.GP
    assert result.delivered.error_code == 0
    result, _ = step("0f 30", vmcs(exception_bitmap=1 << 13), guest(rcx=0x10, cpl=3))
    assert result.exit is not None and result.exit.reason == ExitReason.EXCEPTION_NMI == 0
    assert result.exit.interruption_info.encode() == 0x80000B0D
    assert result.exit.interruption_error_code == 0


# -- 2, 3: RDMSR ------------------------------------------------------------------------------

def test_2_rdmsr_tsc_without_exit_adds_the_offset() -> None:
    v = vmcs(proc=MSR_BITMAPS | ProcCtl.USE_TSC_OFFSETTING, tsc_offset=-1000)
    result, cpu = step("0f 32", v, guest(rcx=0x10, tsc=1_000_000))
    assert result.exit is None
    assert cpu.state.edx_eax() == 1_000_000 - 1000


def test_3_rdmsr_out_of_range_exits_and_efer_follows_byte_0x410() -> None:
    result, _ = step("0f 32", vmcs(proc=MSR_BITMAPS), guest(rcx=0x40000000))
    assert result.exit is not None
    assert (result.exit.reason, result.exit.qualification) == (31, 0)
    result, cpu = step("0f 32", vmcs(proc=MSR_BITMAPS), guest(rcx=0xC0000080))
    assert result.exit is None
    assert cpu.state.edx_eax() == cpu.state.efer
    result, _ = step("0f 32", vmcs(proc=MSR_BITMAPS, msr_bitmap=msr_bitmap_with(0x410, 0)),
                     guest(rcx=0xC0000080))
    assert result.exit is not None and result.exit.reason == ExitReason.MSR_READ == 31


# -- 4-8: I/O ---------------------------------------------------------------------------------

def test_4a_out_imm_with_unconditional_io_exiting() -> None:
    result, _ = step("e7 32", vmcs(proc=UNCOND_IO))
    assert result.exit is not None
    assert (result.exit.reason, result.exit.qualification, result.exit.instruction_length) == \
        (30, 0x00320043, 2)


def test_4b_io_bitmaps_override_unconditional_io_exiting() -> None:
    result, _ = step("e7 32", vmcs(proc=IO_BITMAPS | UNCOND_IO, io_bitmaps=io_bitmaps()))
    assert result.exit is None


def test_4c_any_covered_port_bit_exits() -> None:
    result, _ = step("e7 32", vmcs(proc=IO_BITMAPS, io_bitmaps=io_bitmaps(a={6: 1 << 5})))
    assert result.exit is not None
    assert (result.exit.reason, result.exit.qualification) == (30, 0x00320043)


def test_5_cmos_out_and_in_qualifications() -> None:
    out, _ = step("e6 70", vmcs(proc=UNCOND_IO))
    inp, _ = step("e4 71", vmcs(proc=UNCOND_IO))
    assert (out.exit.qualification, out.exit.instruction_length) == (0x00700040, 2)
    assert (inp.exit.qualification, inp.exit.instruction_length) == (0x00710048, 2)


def test_6_in_dx_wraparound_always_exits() -> None:
    result, _ = step("ed", vmcs(proc=IO_BITMAPS), guest(rdx=0xFFFE))
    assert result.exit is not None
    assert (result.exit.reason, result.exit.qualification, result.exit.instruction_length) == \
        (30, 0xFFFE000B, 1)


def test_7_access_spanning_bitmaps_a_and_b() -> None:
    result, _ = step("66 ef", vmcs(proc=IO_BITMAPS, io_bitmaps=io_bitmaps(b={0: 1})),
                     guest(rdx=0x7FFF))
    assert result.exit is not None
    assert (result.exit.reason, result.exit.qualification, result.exit.instruction_length) == \
        (30, 0x7FFF0001, 2)


def test_8_reboot_port_cf9_and_the_iopl_gp() -> None:
    result, _ = step("ee", vmcs(proc=UNCOND_IO), guest(rdx=0xCF9, rax=6))
    assert (result.exit.reason, result.exit.qualification, result.exit.instruction_length) == \
        (30, 0x0CF90000, 1)
    g = guest(rdx=0xCF9, rax=6, cpl=3)
    g.rflags = Rflags.FIXED1                       # IOPL 0, empty TSS I/O bitmap
    result, _ = step("ee", vmcs(proc=UNCOND_IO), g)
    assert result.exit is None
    assert result.delivered is not None and result.delivered.vector == Vector.GP


# -- 9, 10: control registers -----------------------------------------------------------------

T0, T1 = 0x5000, 0x6000


def test_9a_cr3_load_with_no_targets_exits() -> None:
    result, _ = step("0f 22 d8", vmcs(proc=ProcCtl.CR3_LOAD_EXITING, cr3_target_count=0))
    assert (result.exit.reason, result.exit.qualification, result.exit.instruction_length) == \
        (28, 0x3, 3)


def test_9b_cr3_target_value_avoids_the_exit() -> None:
    v = vmcs(proc=ProcCtl.CR3_LOAD_EXITING, cr3_target_count=2, cr3_targets=(T0, T1))
    result, cpu = step("0f 22 d8", v, guest(rax=T1))
    assert result.exit is None
    assert cpu.state.cr3 == T1


def test_9c_only_the_first_count_targets_count() -> None:
    v = vmcs(proc=ProcCtl.CR3_LOAD_EXITING, cr3_target_count=1, cr3_targets=(T0, T1))
    result, _ = step("0f 22 d8", v, guest(rax=T1))
    assert result.exit is not None
    assert (result.exit.reason, result.exit.qualification) == (28, 0x3)


def test_9d_no_cr3_load_exiting_no_exit() -> None:
    result, _ = step("0f 22 d8", vmcs(), guest(rax=T1))
    assert result.exit is None


def test_10_cr3_store_and_cr0_mask_shadow() -> None:
    result, _ = step("0f 20 d8", vmcs(proc=ProcCtl.CR3_STORE_EXITING))
    assert (result.exit.reason, result.exit.qualification) == (28, 0x13)
    shadowed = vmcs(cr0=CrShadowing(mask=0x80000001, shadow=0x80000001))
    result, _ = step("41 0f 22 c7", shadowed, guest(r15=0x31))
    assert (result.exit.reason, result.exit.qualification) == (28, 0xF00)
    result, cpu = step("41 0f 22 c7", shadowed, guest(r15=0x80000031))
    assert result.exit is None
    assert cpu.state.cr0 == 0x80000031


# -- 11-14 -------------------------------------------------------------------------------------

@pytest.mark.parametrize("cpl", [0, 3])
def test_11_cpuid_always_exits(cpl: int) -> None:
    result, _ = step("0f a2", vmcs(), guest(cpl=cpl))
    assert (result.exit.reason, result.exit.qualification, result.exit.instruction_length) == \
        (10, 0, 2)


def test_12_hlt_exiting_no_exiting_and_cpl3() -> None:
    result, _ = step("f4", vmcs(proc=ProcCtl.HLT_EXITING))
    assert (result.exit.reason, result.exit.instruction_length) == (12, 1)
    result, cpu = step("f4", vmcs())
    assert result.exit is None and cpu.state.activity is ActivityState.HLT
    result, _ = step("f4", vmcs(proc=ProcCtl.HLT_EXITING), guest(cpl=3))
    assert result.exit is None and result.delivered.vector == Vector.GP


def test_13_rdtsc_and_rdtscp_exits_and_the_rdtscp_ud() -> None:
    v = vmcs(proc=ProcCtl.RDTSC_EXITING, sec=Proc2Ctl.ENABLE_RDTSCP)
    result, _ = step("0f 31", v)
    assert (result.exit.reason, result.exit.instruction_length) == (16, 2)
    result, _ = step("0f 01 f9", v)
    assert (result.exit.reason, result.exit.instruction_length) == (51, 3)
    result, _ = step("0f 01 f9", vmcs(proc=ProcCtl.RDTSC_EXITING))
    assert result.exit is None and result.delivered.vector == Vector.UD


def test_14_rdtsc_with_offsetting_and_scaling() -> None:
    v = vmcs(proc=ProcCtl.USE_TSC_OFFSETTING, sec=Proc2Ctl.USE_TSC_SCALING, tsc_offset=5,
             tsc_multiplier=2 << 48)
    result, cpu = step("0f 31", v, guest(tsc=1 << 40))
    assert result.exit is None
    assert cpu.state.edx_eax() == (1 << 41) + 5


# -- 15: #PF and EPT ---------------------------------------------------------------------------

STACK_MISSING = {"registers": {"rsp": 0x8000},
                 "paging": {"tables_at": 0x100000,
                            "pages": [{"linear": 0x1000, "physical": 0x11000}]}}
FAULT_ADDRESS = 0x8000 - 8


def _push(v) -> tuple:
    cpu = paged_vcpu(v, STACK_MISSING)
    cpu.state.cr2 = 0xDEAD
    return execute_instruction(cpu, insn("55")), cpu


def test_15a_pf_not_intercepted_goes_to_the_guest() -> None:
    result, cpu = _push(vmcs(exception_bitmap=0, pfec_mask=0, pfec_match=0))
    assert result.exit is None
    assert result.delivered.vector == Vector.PF and result.delivered.error_code == 0x2
    assert cpu.state.cr2 == FAULT_ADDRESS


def test_15b_pf_intercepted_exits_without_touching_cr2() -> None:
    result, cpu = _push(vmcs(exception_bitmap=1 << 14, pfec_mask=0, pfec_match=0))
    assert result.exit.reason == ExitReason.EXCEPTION_NMI
    assert result.exit.interruption_info.encode() == 0x80000B0E
    assert result.exit.interruption_error_code == 0x2
    assert result.exit.qualification == FAULT_ADDRESS
    assert cpu.state.cr2 == 0xDEAD


def test_15c_pfec_mismatch_with_bit_14_set_means_no_exit() -> None:
    result, _ = _push(vmcs(exception_bitmap=1 << 14, pfec_mask=1, pfec_match=1))
    assert result.exit is None


def test_15d_pfec_mismatch_inverts_bit_14() -> None:
    result, _ = _push(vmcs(exception_bitmap=0, pfec_mask=1, pfec_match=1))
    assert result.exit is not None and result.exit.reason == ExitReason.EXCEPTION_NMI


STACK_PRESENT = {"registers": {"rsp": 0x8000},
                 "paging": {"tables_at": 0x100000,
                            "pages": [{"linear": 0x1000, "physical": 0x11000},
                                      {"linear": 0x7000, "physical": 0x17000}]}}
TABLES = EptRange(0x100000, 0x10000, 0x100000)
CODE = EptRange(0x11000, 0x1000, 0x11000)
STACK = EptRange(0x17000, 0x1000, 0x17000)


def _ept(*ranges: EptRange, ad: bool = False, advanced: bool = False):
    return vmcs(sec=Proc2Ctl.ENABLE_EPT, ept=EptConfig(accessed_dirty=ad, ranges=ranges),
                caps=VmxCapabilities(ept_advanced_exit_info=advanced))


def test_15e_ept_entry_missing_for_the_data_gpa() -> None:
    cpu = paged_vcpu(_ept(TABLES, CODE), STACK_PRESENT)
    result = execute_instruction(cpu, insn("55"))
    assert result.exit.reason == ExitReason.EPT_VIOLATION == 48
    assert result.exit.qualification == 0x182
    assert result.exit.guest_physical_address == 0x17000 + 0xFF8
    assert result.exit.guest_linear_address == FAULT_ADDRESS
    cpu = paged_vcpu(_ept(TABLES, CODE, advanced=True), STACK_PRESENT)
    result = execute_instruction(cpu, insn("55"))
    # Advanced information: bit 9 user (0), bit 10 writable page (1), bit 11 XD (0).
    assert result.exit.qualification == 0x182 | 1 << 10


@pytest.mark.parametrize("ad, read_bit, write_bit", [(False, 1, 0), (True, 0, 1)])
def test_15e_guest_page_table_not_mapped_in_ept(ad: bool, read_bit: int, write_bit: int) -> None:
    cpu = paged_vcpu(_ept(CODE, STACK, ad=ad), STACK_PRESENT)
    result = execute_instruction(cpu, insn("55"))
    q = result.exit.qualification
    assert result.exit.reason == ExitReason.EPT_VIOLATION
    assert q >> 8 & 1 == 0 and q >> 7 & 1 == 1
    assert (q & 1, q >> 1 & 1) == (read_bit, write_bit)
    assert result.exit.guest_physical_address == 0x100000      # the guest PML4 entry


def test_16_test_never_exits_with_every_control_set() -> None:
    every = vmcs(pin=PinCtl(sum(PinCtl)), proc=ProcCtl(sum(ProcCtl)) & ~ProcCtl.ACTIVATE_TERTIARY_CONTROLS,
                 sec=Proc2Ctl(sum(Proc2Ctl)), exception_bitmap=0xFFFFFFFF,
                 io_bitmaps=IoBitmaps.from_ports([], all_set=True),
                 msr_bitmap=MsrBitmap.build(default_exit=True),
                 cr0=CrShadowing(~0 & (1 << 64) - 1, 0), cr4=CrShadowing(~0 & (1 << 64) - 1, 0))
    result, _ = step("48 85 ed", every)
    assert result.exit is None and result.completed


# -- 17, 18 ------------------------------------------------------------------------------------

@pytest.mark.parametrize("hex_bytes, reason, length", [
    ("0f 01 c1", ExitReason.VMCALL, 3), ("0f 01 d1", ExitReason.XSETBV, 3),
    ("0f 08", ExitReason.INVD, 2)])
def test_17_unconditional_exits(hex_bytes: str, reason: ExitReason, length: int) -> None:
    result, _ = step(hex_bytes, vmcs())
    assert (result.exit.reason, result.exit.instruction_length) == (reason, length)


def test_17_xsetbv_with_osxsave_clear_is_ud() -> None:
    g = guest()
    g.cr4 &= ~Cr4.OSXSAVE
    result, _ = step("0f 01 d1", vmcs(), g)
    assert result.exit is None and result.delivered.vector == Vector.UD


def test_18_invlpg_and_wbinvd() -> None:
    result, _ = step("0f 01 38", vmcs(proc=ProcCtl.INVLPG_EXITING), guest(rax=0x7FFF0000))
    assert (result.exit.reason, result.exit.qualification, result.exit.instruction_length) == \
        (14, 0x7FFF0000, 3)
    result, _ = step("0f 09", vmcs(sec=Proc2Ctl.WBINVD_EXITING))
    assert (result.exit.reason, result.exit.instruction_length) == (54, 2)


# -- 19-22: events ------------------------------------------------------------------------------

def _pending_interrupt(v) -> tuple:
    g = guest(rflags=Rflags.FIXED1 | Rflags.IF)
    g.pending.external_vector = 0x30
    cpu = vcpu(v, g)
    try:
        return check_boundary(cpu), None, cpu
    except VmExitSignal as signal:
        return None, signal.exit, cpu


def test_19_external_interrupt_acknowledged_on_exit() -> None:
    _, exit_, cpu = _pending_interrupt(vmcs(pin=PinCtl.EXTERNAL_INTERRUPT_EXITING,
                                            exit_ctl=ExitCtl.HOST_ADDRESS_SPACE_SIZE
                                            | ExitCtl.ACK_INTERRUPT_ON_EXIT))
    assert exit_.reason == ExitReason.EXTERNAL_INTERRUPT == 1
    assert exit_.interruption_info.encode() == 0x80000030
    assert cpu.state.pending.external_vector is None


def test_19_external_interrupt_not_acknowledged_stays_pending() -> None:
    _, exit_, cpu = _pending_interrupt(vmcs(pin=PinCtl.EXTERNAL_INTERRUPT_EXITING))
    assert exit_.reason == ExitReason.EXTERNAL_INTERRUPT
    assert exit_.interruption_info.encode() == 0
    assert cpu.state.pending.external_vector == 0x30


def test_19_external_interrupt_without_exiting_goes_to_the_guest_idt() -> None:
    delivered, exit_, _ = _pending_interrupt(vmcs())
    assert exit_ is None and delivered.vector == 0x30


def _first_boundary_exit(v, g: GuestState) -> ExitReason:
    machine = Machine.build(v, g)
    result = machine.run(decode_bytes(bytes.fromhex("90"), 0x1000))
    entry, boundary = result.rows[0], result.rows[1]
    assert entry.executed and boundary.kind is RowKind.BOUNDARY
    return boundary.exits[0].exit.reason


def test_20_preemption_timer_zero_exits_before_the_first_instruction() -> None:
    v = vmcs(pin=PinCtl.ACTIVATE_PREEMPTION_TIMER, preemption_timer=0)
    assert _first_boundary_exit(v, guest()) == ExitReason.PREEMPTION_TIMER == 52


def test_20_interrupt_window_with_if_exits_before_the_first_instruction() -> None:
    v = vmcs(proc=ProcCtl.INTERRUPT_WINDOW_EXITING)
    g = guest(rflags=Rflags.FIXED1 | Rflags.IF)
    assert _first_boundary_exit(v, g) == ExitReason.PENDING_INTERRUPT == 7


def test_21_gp_while_delivering_df_is_a_triple_fault() -> None:
    g = guest()
    g.idt_broken = True                 # every IDT gate is unusable: delivery raises #GP
    result, _ = step("0f 0b", vmcs(exception_bitmap=0), g)
    assert (result.exit.reason, result.exit.qualification) == (ExitReason.TRIPLE_FAULT, 0)


def test_22_mov_dr7_exits_and_mov_cr0_with_zero_mask_does_not() -> None:
    result, _ = step("0f 23 f8", vmcs(proc=ProcCtl.MOV_DR_EXITING))
    assert (result.exit.reason, result.exit.qualification, result.exit.instruction_length) == \
        (29, 0x7, 3)
    g = guest()
    g.set_reg(0, g.cr0)
    result, _ = step("0f 22 c0", vmcs(cr0=CrShadowing(0, 0)), g)
    assert result.exit is None
