"""The seed quizzes (shared/reference/seed-virtualization-quizzes.txt), answered by the simulator.

Quiz 1: the "mystery function" at CPL 0, instruction by instruction, under three VMCS files,
with the deciding condition named. Quiz 2: TLB lookups and contents for `mov 0x1080,%rax`.
The expected answers come from the spec's rules, not from the (partly wrong) student answers.
"""

from __future__ import annotations

import re

import pytest
from vmx_helpers import EXAMPLES, POLICIES, REFERENCE, paged_vcpu, vmcs

from appvirt.vmx.cpu import execute_instruction
from appvirt.vmx.decoder import decode_bytes, parse_listing
from appvirt.vmx.errors import VmxInputError
from appvirt.vmx.controls import Proc2Ctl
from appvirt.vmx.reasons import ExitReason
from appvirt.vmx.simulator import Machine, RowKind, RunResult
from appvirt.vmx.state_file import load_state
from appvirt.vmx.vmcs import EptConfig, EptRange
from appvirt.vmx.vmcs_file import load_vmcs

LISTING = EXAMPLES / "seed-quiz1.lst"
STATE = EXAMPLES / "seed-quiz1-state.yaml"


def run_seed(profile: str) -> RunResult:
    setup = load_state(STATE)
    machine = Machine.build(load_vmcs(POLICIES / profile), setup.state, setup.memory,
                            flat_paging=setup.flat_paging)
    return machine.run(parse_listing(LISTING.read_text(), str(LISTING)), list(setup.events))


def by_address(result: RunResult) -> dict[int, object]:
    return {row.insn.address: row for row in result.rows if row.kind is RowKind.INSTRUCTION}


def test_cleaned_listing_decodes_to_the_brief_bytes() -> None:
    insns = parse_listing(LISTING.read_text(), str(LISTING))
    expected = ("55 4154 4155 4989fd 65488b0c2508000000 4d85ed 0f22d8 e732 0d00080000 "
                "0f30").split()
    assert [i.raw.hex() for i in insns] == expected
    assert [i.address for i in insns] == [0x701, 0x702, 0x704, 0x706, 0x709, 0x712, 0x715,
                                          0x718, 0x71A, 0x71F]


# Quiz answer key: can the instruction exit for a reason of its own (or of its memory access)?
POSSIBLE = {0x701: True, 0x702: True, 0x704: True, 0x706: False, 0x709: True, 0x712: False,
            0x715: True, 0x718: True, 0x71A: False, 0x71F: True}


def test_exit_possible_column_matches_the_rules() -> None:
    rows = by_address(run_seed("minimal-hypervisor.yaml"))
    assert {a: r.possible.possible for a, r in rows.items()} == POSSIBLE


NO_EXIT = (0x701, 0x702, 0x704, 0x706, 0x709, 0x712, 0x71A)


def _assert_no_exits(rows: dict, addresses: tuple[int, ...]) -> None:
    for address in addresses:
        assert rows[address].executed and rows[address].exits == (), hex(address)


def test_seed_under_kvm_default() -> None:
    rows = by_address(run_seed("kvm-default.yaml"))
    _assert_no_exits(rows, NO_EXIT)
    assert rows[0x715].exits == () and "CR3_LOAD_EXITING = 0" in rows[0x715].decision
    (io,) = rows[0x718].exits
    assert (io.exit.reason, io.exit.qualification, io.exit.instruction_length) == \
        (ExitReason.IO_INSTRUCTION, 0x00320043, 2)
    assert "UNCONDITIONAL_IO_EXITING = 1" in io.exit.decided_by
    (msr,) = rows[0x71F].exits
    assert (msr.exit.reason, msr.exit.qualification, msr.exit.instruction_length) == \
        (ExitReason.MSR_WRITE, 0, 2)
    # LSTAR write: write-high byte 0xc10, bit 2 (spec §4.3 worked offsets).
    assert "write-high byte 0xc10 bit 2 = 1" in msr.exit.decided_by


def test_seed_under_all_exiting() -> None:
    rows = by_address(run_seed("all-exiting.yaml"))
    _assert_no_exits(rows, NO_EXIT)
    (cr3,) = rows[0x715].exits
    assert (cr3.exit.reason, cr3.exit.qualification, cr3.exit.instruction_length) == \
        (ExitReason.CR_ACCESS, 0x3, 3)
    assert "first 0 CR3-target values" in cr3.exit.decided_by
    (io,) = rows[0x718].exits
    assert (io.exit.reason, io.exit.qualification) == (ExitReason.IO_INSTRUCTION, 0x00320043)
    assert "I/O bitmap A byte 0x6 bit 2 = 1" in io.exit.decided_by     # port 0x32
    (msr,) = rows[0x71F].exits
    assert msr.exit.reason == ExitReason.MSR_WRITE
    assert "write-high byte 0xc10 bit 2 = 1" in msr.exit.decided_by


def test_seed_under_minimal_hypervisor() -> None:
    result = run_seed("minimal-hypervisor.yaml")
    rows = by_address(result)
    _assert_no_exits(rows, tuple(rows))
    assert "CR3_LOAD_EXITING = 0" in rows[0x715].decision
    assert "UNCONDITIONAL_IO_EXITING = 0" in rows[0x718].decision
    assert "write-high byte 0xc10 bit 2 = 0" in rows[0x71F].decision
    assert result.final_state["rip"] == 0x721


def test_raw_seed_listing_is_rejected_with_the_line() -> None:
    path = REFERENCE / "seed-virtualization-quizzes.txt"
    if not path.exists():
        pytest.skip(f"reference file missing: {path}")
    quiz = "\n".join(line for line in path.read_text().splitlines()
                     if re.match(r"^\s*7[0-9a-f]{2}:", line))
    with pytest.raises(VmxInputError) as info:
        parse_listing(quiz, "seed.txt")
    message = str(info.value)
    assert message.startswith("seed.txt:5:") and "not a complete" in message   # the 709 line
    fixed = quiz.replace("08 00 00 mov", "08 00 00 00 mov")
    with pytest.raises(VmxInputError) as info:
        parse_listing(fixed, "seed.txt")
    assert "df 22 d8" in str(info.value) and "stray" in str(info.value)


# -- quiz 2: the TLB ------------------------------------------------------------------------------

QUIZ2_STATE = {
    "registers": {"rsp": 0x8000},
    "paging": {"tables_at": 0x100000, "pages": [{"linear": 0x1000, "physical": 0x12000}]},
}


def _quiz2():
    ept = EptConfig(ranges=(EptRange(0x100000, 0x10000, 0x100000),
                            EptRange(0x12000, 0x1000, 0x45000)))
    cpu = paged_vcpu(vmcs(sec=Proc2Ctl.ENABLE_EPT | Proc2Ctl.ENABLE_VPID, ept=ept, vpid=7),
                     QUIZ2_STATE)
    (insn,) = decode_bytes(bytes.fromhex("488b042580100000"), 0x1010)   # mov 0x1080,%rax
    return execute_instruction(cpu, insn), cpu


def test_quiz2_tlb_lookups_and_contents() -> None:
    result, cpu = _quiz2()
    linear = [lk for lk in result.lookups if lk.kind == "linear"]
    assert [(lk.purpose, lk.address, lk.hit) for lk in linear] == [
        ("instruction fetch", 0x1010, False), ("data read", 0x1080, True)]
    (entry,) = cpu.tlb.linear_entries()
    assert (entry.linear, entry.hpa, entry.gpa, entry.tag.vpid) == (0x1000, 0x45000, 0x12000, 7)
    assert entry.tag.eptrta is not None                       # a combined mapping
    assert any(e.gpa == 0x12000 and e.hpa == 0x45000 for e in cpu.tlb.gpa_entries())


def test_quiz2_true_false_answers() -> None:
    result, cpu = _quiz2()
    assert result.exit is None                                   # Q4: no VM exit
    assert result.delivered is None                              # Q5: no #GP
    reads = [a for a in result.accesses if not a.write and a.what == "data read"]
    assert reads and reads[0].linear == 0x1080 and reads[0].hpa == 0x45080   # Q3: a read
    # Q2: the walk sets accessed bits in the guest paging entries: memory is written.
    assert any(a.write and "accessed" in a.what for a in result.accesses)
