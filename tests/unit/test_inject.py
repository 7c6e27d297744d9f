"""The stub that maps the slot area into a freshly exec'd process (inject.py), decoded."""

from __future__ import annotations

import signal

import capstone
import pytest
from hypothesis import given
from hypothesis import strategies as st

from appvirt.core import sysnums
from appvirt.core.slotlayout import AREA_SIZE, CELL_BASE, CELLS_SIZE, SLOT_BASE
from appvirt.tracer.inject import PAGE, Injection, InjectionFailed, stub, stub_address

KEEPER = b"/proc/4194304/fd/100"       # the longest a keeper's path gets
PROT_READ, PROT_EXEC = 1, 4


def _decoded(code: bytes, at: int = 0x1000):
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    return [(i.address - at, i.mnemonic, i.op_str) for i in md.disasm(code, at)]


def _code(prot: int, cells: bool) -> bytes:
    return stub(KEEPER, prot, cells)[:-len(KEEPER) - 1]


@pytest.mark.parametrize("prot, cells", [(PROT_READ, False), (PROT_READ | PROT_EXEC, True)])
def test_the_stub_opens_maps_and_closes_then_traps(prot, cells):
    code = _code(prot, cells)
    insns = _decoded(code)
    assert insns[-1][0] + 1 == len(code)                      # every byte decoded
    calls = [op for _, m, op in insns if m == "mov" and op.startswith("eax, ")]
    assert [int(c.split(", ")[1], 16) for c in calls] == [
        sysnums.nr("openat"), sysnums.nr("mmap"), sysnums.nr("close")] + (
        [sysnums.nr("mmap")] if cells else [])
    assert [m for _, m, _ in insns].count("syscall") == 3 + cells
    text = [f"{m} {op}" for _, m, op in insns]
    assert f"movabs rdi, {SLOT_BASE:#x}" in text
    assert f"movabs rsi, {AREA_SIZE:#x}" in text
    assert "mov rdi, 0xffffffffffffff9c" in text          # AT_FDCWD
    assert "mov edx, 0x80000" in text                     # O_RDONLY | O_CLOEXEC
    assert f"mov edx, {prot}" in text                     # the area's protection
    assert "mov r10d, 0x100001" in text                   # MAP_SHARED | MAP_FIXED_NOREPLACE
    assert "mov r13, rax" in text                         # the open's result, for on_signal
    assert ("mov r10d, 0x100022" in text) == cells        # MAP_PRIVATE|ANONYMOUS|FIXED_NOREPLACE
    assert (f"movabs rdi, {CELL_BASE:#x}" in text) == cells
    assert (f"mov esi, {CELLS_SIZE:#x}" in text) == cells
    assert ("mov r12, rax" in text) == cells
    assert insns[-2:] == [(len(code) - 4, "mov", "rax, rbx"), (len(code) - 1, "int3", "")]


@pytest.mark.parametrize("cells", [False, True])
def test_the_path_operand_and_the_error_branch_land_where_they_should(cells):
    code = stub(KEEPER, PROT_READ, cells)
    insns = _decoded(_code(PROT_READ, cells), at=0)
    lea = next((a, op) for a, m, op in insns if m == "lea")
    addr = int(lea[1].split("0x")[1].rstrip("]"), 16) + lea[0] + 7     # rip-relative
    assert code[addr:].split(b"\0")[0] == KEEPER
    js = next(op for _, m, op in insns if m == "js")
    assert int(js, 16) == insns[-1][0]                    # a failed open goes to the trap
    assert code.endswith(KEEPER + b"\0")


@given(st.integers(0x400000, 0x7FFF_FFFF_F000), st.integers(1, 512))
def test_the_stub_stays_within_the_entry_page(entry, size):
    at = stub_address(entry, size)
    page = entry & ~(PAGE - 1)
    assert page <= at <= entry
    assert at + size <= page + PAGE
    if entry + size <= page + PAGE:
        assert at == entry


@pytest.mark.parametrize("sig", [signal.SIGILL, signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE])
def test_a_fault_in_the_stub_fails_the_mapping_instead_of_repeating(sig):
    """Resumed, a faulting instruction faults again: holding the signal would loop for ever."""
    injection = Injection.__new__(Injection)       # no tracee: a fault is decided on its own
    with pytest.raises(InjectionFailed, match=signal.Signals(sig).name):
        injection.on_signal(sig)


def test_other_signals_are_held_for_the_program():
    injection = Injection.__new__(Injection)
    assert injection.on_signal(signal.SIGTERM) is False
    assert injection.on_signal(signal.SIGCHLD) is False
