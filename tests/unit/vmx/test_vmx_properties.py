"""Property tests (hypothesis).

1. With every exit control off, an instruction exits only for the unconditional reasons (spec
   §3 "Uncond."), or for RDMSR/WRMSR of an MSR outside both bitmap ranges, which always exits.
2. Ordinary instructions never exit by themselves, whatever the controls (spec §3, scenario 16).
3. Every qualification layout round-trips through encode()/decode().
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from vmx_helpers import guest, step, vmcs

from appvirt.vmx.bitmaps import IoBitmaps, MsrBitmap, msr_bit_position
from appvirt.vmx.controls import Cr4, InterruptionType, PinCtl, ProcCtl, Proc2Ctl
from appvirt.vmx.qualification import (
    AddressSize, CrAccessQual, CrAccessType, DebugQual, DrAccessQual, DrDirection,
    EptViolationQual, InstructionInfo, InterruptionInfo, IoDirection, IoQual, MwaitQual,
    TaskSwitchQual, TaskSwitchSource,
)
from appvirt.vmx.reasons import UNCONDITIONAL_REASONS, ExitReason, ExitReasonField
from appvirt.vmx.registers import Gpr, SegReg
from appvirt.vmx.vmcs import CrShadowing

# Instructions with an exit condition of their own, plus ordinary ones (capstone-decoded).
EXITING = [
    "0fa2", "0f37", "f4", "0f08", "0f0138", "660f388200", "0f33", "0f31", "0f01f9",
    "0f22d8", "0f20d8", "0f22c0", "0f20c0", "440f22c0", "440f20c0", "0f22e0", "0f06",
    "0f01f0", "0f01e0", "0f23f8", "0f21c0", "e732", "e670", "e471", "ec", "ed", "ee", "66ef",
    "f36c", "6e", "0f32", "0f30", "0f01c1", "0f01d1", "0f01c8", "0f01c9", "f390", "0f09",
    "0fc7f0", "480fc7f8", "0f0110", "0f0118", "0f0100", "0f0108", "0f00d0", "0f00c0",
    "0f00c8", "0f00d8", "660fc730", "0fc730", "f30fc730", "0fc738", "0f78c8", "0f79c1",
    "0f01c2", "0f01c3", "0f01c4", "660f388000", "660f388100", "cc", "0f0b", "cd80",
]
ORDINARY = ["55", "4154", "5d", "4989fd", "4d85ed", "0d00080000", "4885ed", "31c0", "4801d8",
            "488d0424", "90", "0faee8", "480fafc3", "4883c008", "f7d8", "48ffc0", "9c",
            "488b07", "488907", "e800000000", "c3", "7405"]

REGS = st.integers(0, (1 << 64) - 1)
SMALL_MSRS = st.sampled_from([0x10, 0x3B, 0x1B, 0x6E0, 0xC0000080, 0xC0000082, 0x40000000,
                              0x4B564D00, 0x12345678, 0x174])


def _guest(cpl, rax, rcx, rdx, rdi, cr4_bits):
    g = guest(cpl=cpl, rax=rax, rcx=rcx, rdx=rdx, rdi=rdi & 0xFFFF_FFFF, rsi=rdi & 0xFFFF)
    g.cr4 = (g.cr4 & ~(Cr4.OSXSAVE | Cr4.SMXE | Cr4.TSD | Cr4.PCE | Cr4.DE)) | cr4_bits
    return g


CR4_BITS = st.sets(st.sampled_from([Cr4.OSXSAVE, Cr4.SMXE, Cr4.TSD, Cr4.PCE, Cr4.DE])).map(
    lambda s: sum(int(b) for b in s))


@settings(max_examples=400, deadline=None)
@given(hexcode=st.sampled_from(EXITING + ORDINARY), cpl=st.sampled_from([0, 3]), rax=REGS,
       rcx=st.one_of(REGS, SMALL_MSRS), rdx=REGS, rdi=REGS, cr4_bits=CR4_BITS)
def test_no_exit_with_every_control_off_except_unconditional(hexcode, cpl, rax, rcx, rdx, rdi,
                                                              cr4_bits) -> None:
    # Every exit control 0. The MSR rule is inverted ("use MSR bitmaps" = 0 makes every RDMSR
    # and WRMSR exit), so the least-exiting setting is bitmaps on and all zero.
    least = vmcs(proc=ProcCtl.USE_MSR_BITMAPS)
    result, _ = step(hexcode, least, _guest(cpl, rax, rcx, rdx, rdi, cr4_bits))
    if result.exit is None:
        return
    reason = result.exit.reason
    if reason in (ExitReason.MSR_READ, ExitReason.MSR_WRITE):
        assert msr_bit_position(rcx & 0xFFFF_FFFF, reason == ExitReason.MSR_WRITE) is None
        return
    assert reason in UNCONDITIONAL_REASONS, (hexcode, reason)


@settings(max_examples=200, deadline=None)
@given(hexcode=st.sampled_from(["0f30", "0f32"]), rcx=st.one_of(REGS, SMALL_MSRS))
def test_msr_access_always_exits_without_msr_bitmaps(hexcode, rcx) -> None:
    result, _ = step(hexcode, vmcs(), guest(rcx=rcx))
    assert result.exit is not None
    assert result.exit.reason in (ExitReason.MSR_READ, ExitReason.MSR_WRITE)


ALL_CONTROLS = vmcs(
    pin=PinCtl(sum(PinCtl)), proc=ProcCtl(sum(ProcCtl)) & ~ProcCtl.ACTIVATE_TERTIARY_CONTROLS,
    sec=Proc2Ctl(sum(Proc2Ctl)), exception_bitmap=0, io_bitmaps=IoBitmaps.from_ports([], all_set=True),
    msr_bitmap=MsrBitmap.build(default_exit=True), cr0=CrShadowing((1 << 64) - 1, 0),
    cr4=CrShadowing((1 << 64) - 1, 0))


@settings(max_examples=300, deadline=None)
@given(hexcode=st.sampled_from(ORDINARY), rax=REGS, rcx=REGS, rdi=st.integers(0, 0xFFFF_FFFF))
def test_ordinary_instructions_never_exit_by_themselves(hexcode, rax, rcx, rdi) -> None:
    result, _ = step(hexcode, ALL_CONTROLS, guest(rax=rax, rcx=rcx, rdi=rdi, rbx=rax ^ rcx))
    assert result.exit is None


# -- qualification round trips ------------------------------------------------------------------

def _bools(n: int):
    return st.tuples(*[st.booleans()] * n)


LAYOUTS = {
    "cr": st.builds(CrAccessQual, st.integers(0, 15), st.sampled_from(CrAccessType),
                    st.sampled_from(Gpr), st.booleans(), st.integers(0, 0xFFFF)),
    "dr": st.builds(DrAccessQual, st.integers(0, 7), st.sampled_from(DrDirection),
                    st.sampled_from(Gpr)),
    "io": st.builds(IoQual, st.sampled_from([1, 2, 4]), st.sampled_from(IoDirection),
                    st.integers(0, 0xFFFF), st.booleans(), st.booleans(), st.booleans()),
    "ept": _bools(15).map(lambda b: EptViolationQual(*b)),
    "task": st.builds(TaskSwitchQual, st.integers(0, 0xFFFF), st.sampled_from(TaskSwitchSource)),
    "mwait": st.builds(MwaitQual, st.booleans()),
    "debug": st.builds(DebugQual, st.integers(0, 15), st.booleans(), st.booleans()),
    "interruption": st.builds(InterruptionInfo, st.integers(0, 255),
                              st.sampled_from(InterruptionType), st.booleans(), st.booleans(),
                              st.booleans()),
    "instruction": st.builds(InstructionInfo, st.integers(0, 3), st.integers(0, 15),
                             st.sampled_from(AddressSize), st.booleans(), st.integers(0, 3),
                             st.sampled_from(SegReg), st.integers(0, 15), st.booleans(),
                             st.integers(0, 15), st.booleans(), st.integers(0, 15)),
    "reason": st.builds(ExitReasonField, st.integers(0, 0xFFFF), *[st.booleans()] * 6),
}


@settings(max_examples=300, deadline=None)
@given(record=st.one_of(*LAYOUTS.values()))
def test_decode_of_encode_is_identity(record) -> None:
    assert type(record).decode(record.encode()) == record


# Defined bits of each layout, written from the SDM tables (spec §5), independently of the code.
DEFINED = {
    CrAccessQual: 0xFFFF_0F7F, DrAccessQual: 0xF17, EptViolationQual: 0x7FFF,
    TaskSwitchQual: 0xC000_FFFF, MwaitQual: 0x1, DebugQual: 0x600F,
    InterruptionInfo: 0x8000_1FFF, ExitReasonField: 0xBE00_FFFF,
}


@settings(max_examples=300, deadline=None)
@given(layout=st.sampled_from(sorted(DEFINED, key=lambda t: t.__name__)),
       value=st.integers(0, (1 << 64) - 1))
def test_encode_of_decode_keeps_exactly_the_defined_bits(layout, value) -> None:
    value &= DEFINED[layout]
    if layout is InterruptionInfo and value >> 8 & 7 == 1:      # type 1 is reserved
        value &= ~0x700
    assert layout.decode(value).encode() == value


@settings(max_examples=300, deadline=None)
@given(value=st.integers(0, (1 << 32) - 1))
def test_io_qualification_raw_round_trip(value) -> None:
    value &= 0xFFFF_007F
    if value & 7 not in (0, 1, 3):        # sizes 1, 2, 4 only
        value &= ~7
    assert IoQual.decode(value).encode() == value


@settings(max_examples=300, deadline=None)
@given(value=st.integers(0, (1 << 32) - 1))
def test_instruction_info_raw_round_trip(value) -> None:
    value &= 0xFFFF_9FFB                   # bits 2 and 13:14 are undefined
    if value >> 7 & 7 > 2:
        value &= ~(7 << 7)
    if value >> 15 & 7 > 5:
        value &= ~(7 << 15)
    assert InstructionInfo.decode(value).encode() == value
