"""Exit rules beyond the spec's scenario table: qualifications and instruction information
from the SDM layouts (spec §4, §5), EPT misconfigurations, MTF, PAUSE loops, the timer."""

from __future__ import annotations

import pytest
from vmx_helpers import guest, insn, paged_vcpu, step, vmcs

from appvirt.vmx.controls import ExitCtl, PinCtl, ProcCtl, Proc2Ctl, Rflags, Vector
from appvirt.vmx.cpu import execute_instruction
from appvirt.vmx.decoder import decode_bytes
from appvirt.vmx.reasons import ExitReason
from appvirt.vmx.simulator import Machine, RowKind
from appvirt.vmx.vmcs import CrShadowing, EptAccess, EptConfig, EptRange, VmxCapabilities



def reasons_of(hex_bytes: str, v, g=None) -> list[ExitReason]:
    machine = Machine.build(v, g or guest())
    result = machine.run(decode_bytes(bytes.fromhex(hex_bytes.replace(" ", "")), 0x1000))
    return [h.exit.reason for h in result.exits]


def test_clts_exits_only_when_mask_and_shadow_ts_are_both_set() -> None:
    result, _ = step("0f 06", vmcs(cr0=CrShadowing(mask=0x8, shadow=0x8)))
    assert (result.exit.reason, result.exit.qualification, result.exit.instruction_length) == \
        (ExitReason.CR_ACCESS, 0x20, 2)
    g = guest()
    g.cr0 |= 0x8
    result, cpu = step("0f 06", vmcs(cr0=CrShadowing(mask=0x8, shadow=0)), g)
    assert result.exit is None and cpu.state.cr0 & 0x8          # TS not cleared


def test_lmsw_register_and_memory_forms() -> None:
    v = vmcs(cr0=CrShadowing(mask=0xF, shadow=0x1))
    result, _ = step("0f 01 f0", v, guest(rax=0x3))              # lmsw %ax: MP changes
    assert result.exit.qualification == 0x3 << 16 | 3 << 4
    v = vmcs(cr0=CrShadowing(mask=0xF, shadow=0x3))
    result, _ = step("0f 01 30", v, guest(rax=0x2000))           # lmsw (%rax): reads 0
    assert result.exit.qualification == 3 << 4 | 1 << 6       # memory operand, data 0
    assert result.exit.guest_linear_address == 0x2000


def test_mov_from_cr0_reads_the_shadow_for_owned_bits() -> None:
    g = guest()
    result, cpu = step("0f 20 c0", vmcs(cr0=CrShadowing(mask=1 << 16, shadow=0)), g)
    assert result.exit is None and cpu.state.gpr[0] == g.cr0 & ~(1 << 16)


def test_cr8_store_and_tpr_below_threshold_trap() -> None:
    result, _ = step("44 0f 20 c0", vmcs(proc=ProcCtl.CR8_STORE_EXITING))
    assert (result.exit.reason, result.exit.qualification) == (ExitReason.CR_ACCESS, 0x18)
    v = vmcs(proc=ProcCtl.USE_TPR_SHADOW, tpr_threshold=5)
    result, cpu = step("44 0f 22 c0", v, guest(rax=2))
    assert result.exit.reason == ExitReason.TPR_BELOW_THRESHOLD and result.completed
    assert cpu.state.rip == 0x1004 and cpu.state.cr8 == 2      # trap-like: after the write


def test_mwait_qualification_reports_an_armed_monitor() -> None:
    v = vmcs(proc=ProcCtl.MWAIT_EXITING)
    machine = Machine.build(v, guest())
    result = machine.run(decode_bytes(bytes.fromhex("0f01c8 0f01c9".replace(" ", "")), 0x1000))
    (mwait,) = result.exits
    assert (mwait.exit.reason, mwait.exit.qualification) == (ExitReason.MWAIT_INSTRUCTION, 1)
    result, _ = step("0f 01 c9", v, guest(cpl=3))
    assert result.exit is None and result.delivered.vector == Vector.UD


def test_rep_insb_qualification_linear_address_and_info() -> None:
    g = guest(rdx=0x1F0, rcx=4, rdi=0x3000)
    result, _ = step("f3 6c", vmcs(proc=ProcCtl.UNCONDITIONAL_IO_EXITING), g)
    assert result.exit.qualification == 0x01F0_0038         # size 1, IN, string, REP
    assert result.exit.guest_linear_address == 0x3000      # ES:RDI
    assert result.exit.instruction_info == 2 << 7 | 0 << 15  # 64-bit addressing, ES


def test_rep_ins_with_zero_count_does_not_exit() -> None:
    result, _ = step("f3 6c", vmcs(proc=ProcCtl.UNCONDITIONAL_IO_EXITING), guest(rcx=0))
    assert result.exit is None


def test_outs_uses_the_segment_override_in_the_information() -> None:
    g = guest(rdx=0x3F8, rsi=0x10)
    g.fs_base = 0x40000
    result, _ = step("64 6e", vmcs(proc=ProcCtl.UNCONDITIONAL_IO_EXITING), g)
    assert result.exit.qualification == 0x03F8_0010
    assert result.exit.guest_linear_address == 0x40010
    assert result.exit.instruction_info >> 15 & 7 == 4      # FS


def test_rdrand_and_rdseed_information() -> None:
    result, _ = step("0f c7 f0", vmcs(sec=Proc2Ctl.RDRAND_EXITING))
    assert (result.exit.reason, result.exit.instruction_info, result.exit.instruction_length) == \
        (ExitReason.RDRAND, 1 << 11, 3)                      # EAX, 32-bit
    result, _ = step("48 0f c7 f9", vmcs(sec=Proc2Ctl.RDSEED_EXITING))
    assert (result.exit.reason, result.exit.instruction_info) == (ExitReason.RDSEED, 1 << 3 | 2 << 11)


def test_descriptor_table_exits_and_information() -> None:
    v = vmcs(sec=Proc2Ctl.DESCRIPTOR_TABLE_EXITING)
    result, _ = step("0f 01 50 10", v, guest(rax=0x5000))   # lgdt 0x10(%rax)
    assert (result.exit.reason, result.exit.qualification, result.exit.instruction_length) == \
        (ExitReason.GDTR_IDTR, 0x10, 4)
    # identity LGDT=2 in 29:28, base RAX valid, no index, 64-bit addressing, DS.
    assert result.exit.instruction_info == 2 << 28 | 1 << 22 | 3 << 15 | 2 << 7
    result, _ = step("0f 00 c8", v)                          # str %eax
    assert result.exit.reason == ExitReason.LDTR_TR
    assert result.exit.instruction_info == 1 << 28 | 1 << 10
    result, _ = step("0f 01 50 10", v, guest(rax=0x5000, cpl=3))
    assert result.exit is None and result.delivered.vector == Vector.GP


def test_invpcid_needs_enable_invpcid_and_exits_on_invlpg_exiting() -> None:
    result, _ = step("66 0f 38 82 08", vmcs(proc=ProcCtl.INVLPG_EXITING), guest(rax=1))
    assert result.exit is None and result.delivered.vector == Vector.UD
    result, _ = step("66 0f 38 82 08", vmcs(proc=ProcCtl.INVLPG_EXITING,
                                            sec=Proc2Ctl.ENABLE_INVPCID), guest(rax=1))
    assert (result.exit.reason, result.exit.instruction_length) == (ExitReason.INVPCID, 5)


def test_rdpmc_and_rdtsc_privilege_faults_come_first() -> None:
    result, _ = step("0f 33", vmcs(proc=ProcCtl.RDPMC_EXITING), guest(cpl=3))
    assert result.exit is None and result.delivered.vector == Vector.GP
    g = guest(cpl=3)
    g.cr4 |= 1 << 2                                          # CR4.TSD
    result, _ = step("0f 31", vmcs(proc=ProcCtl.RDTSC_EXITING), g)
    assert result.exit is None and result.delivered.vector == Vector.GP
    result, _ = step("0f 33", vmcs(proc=ProcCtl.RDPMC_EXITING))
    assert (result.exit.reason, result.exit.instruction_length) == (ExitReason.RDPMC, 2)


def test_vmx_instruction_exits_carry_displacement_and_information() -> None:
    result, _ = step("0f c7 70 08", vmcs(), guest(rax=0x9000))   # vmptrld 8(%rax)
    assert (result.exit.reason, result.exit.qualification) == (ExitReason.VMPTRLD, 8)
    assert result.exit.instruction_info == 2 << 7 | 3 << 15 | 1 << 22
    result, _ = step("0f 01 c2", vmcs())
    assert (result.exit.reason, result.exit.instruction_length) == (ExitReason.VMLAUNCH, 3)


def test_int3_exit_is_a_software_exception_with_a_length() -> None:
    result, _ = step("cc", vmcs(exception_bitmap=1 << 3))
    assert result.exit.interruption_info.encode() == 0x80000603
    assert result.exit.instruction_length == 1
    result, _ = step("cd 80", vmcs(exception_bitmap=0xFFFFFFFF))
    assert result.exit is None and result.delivered.vector == 0x80


# -- EPT misconfiguration and permissions (spec §4.6) -------------------------------------------

PAGES = {"registers": {"rsp": 0x8000, "rax": 0x3000},
         "paging": {"tables_at": 0x100000, "pages": [
             {"linear": 0x1000, "physical": 0x11000}, {"linear": 0x3000, "physical": 0x13000}]}}
BASE = (EptRange(0x100000, 0x10000, 0x100000), EptRange(0x11000, 0x1000, 0x11000))


def _ept_step(hex_bytes: str, data_range: EptRange, execute_only: bool = True):
    v = vmcs(sec=Proc2Ctl.ENABLE_EPT, ept=EptConfig(ranges=BASE + (data_range,)),
             caps=VmxCapabilities(ept_execute_only=execute_only))
    return execute_instruction(paged_vcpu(v, PAGES), insn(hex_bytes))


@pytest.mark.parametrize("access, memory_type", [(EptAccess.W, 6), (EptAccess.W | EptAccess.X, 6),
                                                 (EptAccess.R | EptAccess.W, 2),
                                                 (EptAccess.R, 7)])
def test_ept_misconfigurations(access: EptAccess, memory_type: int) -> None:
    result = _ept_step("48 8b 00", EptRange(0x13000, 0x1000, 0x13000, access, memory_type))
    assert result.exit.reason == ExitReason.EPT_MISCONFIG == 49
    assert result.exit.guest_physical_address == 0x13000


def test_execute_only_entries_depend_on_the_capability() -> None:
    x_only = EptRange(0x13000, 0x1000, 0x13000, EptAccess.X)
    result = _ept_step("48 8b 00", x_only)                    # a read of an X-only page
    assert result.exit.reason == ExitReason.EPT_VIOLATION
    assert result.exit.qualification & 0x3F == 0b100001      # read; executable only
    result = _ept_step("48 8b 00", x_only, execute_only=False)
    assert result.exit.reason == ExitReason.EPT_MISCONFIG


def test_write_to_read_only_ept_page_reports_the_combined_permissions() -> None:
    result = _ept_step("48 89 00", EptRange(0x13000, 0x1000, 0x13000, EptAccess.R | EptAccess.X))
    assert result.exit.qualification & 0x1FF == 0b110101010  # write; R and X; GLA; final


# -- events at boundaries -----------------------------------------------------------------------

def test_monitor_trap_flag_exits_after_every_instruction() -> None:
    assert reasons_of("90 90", vmcs(proc=ProcCtl.MONITOR_TRAP_FLAG)) == \
        [ExitReason.MONITOR_TRAP_FLAG] * 2


def test_nmi_window_exits_when_there_is_no_nmi_blocking() -> None:
    v = vmcs(pin=PinCtl.NMI_EXITING | PinCtl.VIRTUAL_NMIS, proc=ProcCtl.NMI_WINDOW_EXITING)
    assert reasons_of("90", v)[0] == ExitReason.NMI_WINDOW


def test_sti_blocking_delays_the_interrupt_window_by_one_instruction() -> None:
    v = vmcs(proc=ProcCtl.INTERRUPT_WINDOW_EXITING)
    machine = Machine.build(v, guest())
    result = machine.run(decode_bytes(bytes.fromhex("fb9090"), 0x1000))
    kinds = [(row.kind, row.insn.address if row.insn else None) for row in result.rows
             if row.exits]
    assert kinds == [(RowKind.BOUNDARY, 0x1002)]                # after the NOP that follows STI


def test_preemption_timer_counts_down_at_the_tsc_rate() -> None:
    v = vmcs(pin=PinCtl.ACTIVATE_PREEMPTION_TIMER, preemption_timer=3,
             caps=VmxCapabilities(preemption_timer_rate=0))
    machine = Machine.build(v, guest())
    result = machine.run(decode_bytes(bytes.fromhex("90" * 5), 0x1000))
    timer_rows = [row.insn.address for row in result.rows if row.exits]
    assert timer_rows == [0x1003]                             # after three 1-cycle NOPs


def test_pause_loop_exiting_at_cpl0() -> None:
    v = vmcs(sec=Proc2Ctl.PAUSE_LOOP_EXITING, ple_gap=2, ple_window=3)
    machine = Machine.build(v, guest())
    result = machine.run(decode_bytes(bytes.fromhex("f390" * 6), 0x1000))
    exits = [(row.insn.address, h.exit.reason) for row in result.rows for h in row.exits]
    assert exits == [(0x1008, ExitReason.PAUSE_INSTRUCTION)]  # 5th PAUSE: 4 cycles > window 3
    assert reasons_of("f390", vmcs(proc=ProcCtl.PAUSE_EXITING)) == [ExitReason.PAUSE_INSTRUCTION]


def test_init_always_exits() -> None:
    g = guest()
    g.pending.init = True
    assert reasons_of("90", vmcs(), g) == [ExitReason.INIT_SIGNAL]


def test_external_interrupt_exits_even_with_if_clear() -> None:
    g = guest(rflags=Rflags.FIXED1)
    g.pending.external_vector = 0x20
    v = vmcs(pin=PinCtl.EXTERNAL_INTERRUPT_EXITING,
             exit_ctl=ExitCtl.HOST_ADDRESS_SPACE_SIZE | ExitCtl.ACK_INTERRUPT_ON_EXIT)
    assert reasons_of("90", v, g)[0] == ExitReason.EXTERNAL_INTERRUPT


def test_ept_violation_ve_converts_the_violation_into_a_guest_ve() -> None:
    v = vmcs(sec=Proc2Ctl.ENABLE_EPT | Proc2Ctl.EPT_VIOLATION_VE, ept=EptConfig(ranges=BASE))
    result = execute_instruction(paged_vcpu(v, PAGES), insn("48 8b 00"))
    assert result.exit is None and result.delivered.vector == Vector.VE == 20
