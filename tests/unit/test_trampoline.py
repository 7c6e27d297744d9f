"""The trampolines that put a thread's registers back after an open rewritten from its slot
(trampoline.py): their layout is the C engine's, and their code, run for real by a small
program (no ptrace: the kernel's part is played by the program), restores what it must."""

from __future__ import annotations

import errno
import subprocess

import capstone
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appvirt.core.slotlayout import (AREA_END, CELL_BASE, CELL_STRIDE, SLOT_BASE, SLOT_COUNT,
                                     TRAMP_BASE, TRAMP_STRIDE, overlaps)
from appvirt.tracer import trampoline

_fastpath = pytest.importorskip("appvirt.tracer._fastpath")

FLAGS_SET = 0x8D5           # CF PF AF ZF SF OF


def test_the_layout_is_the_engines():
    assert _fastpath.TRAMP_LAYOUT == (TRAMP_STRIDE, trampoline.ENTRY, trampoline.DATA,
                                      trampoline.LAST_JUMP, CELL_STRIDE)
    assert TRAMP_BASE + TRAMP_STRIDE * SLOT_COUNT == AREA_END == CELL_BASE
    assert overlaps(CELL_BASE + CELL_STRIDE * (SLOT_COUNT - 1) + 7, 1)  # the cells are guarded
    assert not overlaps(CELL_BASE + CELL_STRIDE * SLOT_COUNT, 1)
    assert overlaps(SLOT_BASE - 4096, 4097)


def _decoded(slot: int):
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    base = TRAMP_BASE + slot * TRAMP_STRIDE
    return base, list(md.disasm(trampoline.code(), base))


def _target(insn) -> int | None:
    """The absolute address a rip-relative operand of insn names."""
    for op in insn.operands:
        if op.type == capstone.x86.X86_OP_MEM and op.mem.base == capstone.x86.X86_REG_RIP:
            return insn.address + insn.size + op.mem.disp
    return None


@pytest.mark.parametrize("slot", [0, 1, 777, SLOT_COUNT - 1])
def test_the_code_reads_its_own_data_and_writes_its_own_cell(slot):
    base, insns = _decoded(slot)
    assert insns[0].mnemonic == "syscall" and insns[1].address == base + trampoline.ENTRY
    assert insns[-1].address == base + trampoline.LAST_JUMP
    assert sum(i.size for i in insns) == len(trampoline.code())
    data = base + trampoline.DATA
    words = range(data, data + 8 * trampoline.DATA_WORDS)
    operands = [(i.mnemonic, i.op_str.split(",")[0], _target(i)) for i in insns
                if _target(i) is not None]
    cell = CELL_BASE + slot * CELL_STRIDE
    assert [(m, op, t if t not in words else (t - data) // 8) for m, op, t in operands] == [
        ("mov", "rcx", 7), ("mov", "qword ptr [rip + %#x]" % (cell - (base + 23)), cell),
        ("mov", "rdi", 0), ("mov", "rsi", 1), ("mov", "rdx", 2), ("mov", "r10", 3),
        ("jmp", "qword ptr [rip + 0x61]", 4), ("mov", "rax", 5),
        ("jmp", "qword ptr [rip + 0x64]", 6)]


@pytest.mark.parametrize("slot", [0, SLOT_COUNT - 1])
def test_the_code_clobbers_only_what_the_syscall_does_and_no_flags(slot):
    """rcx and r11 are the syscall instruction's to clobber; the four it restores and rax
    (on the restart) are set on purpose; the flags stay as the kernel returned them."""
    _, insns = _decoded(slot)
    written = set()
    for i in insns[1:]:                     # (the restart's syscall instruction is the call)
        _, regs_write = i.regs_access()
        written.update(i.reg_name(r) for r in regs_write)
    assert written - {"rip"} <= {"rcx", "r11", "r11d", "rdi", "rsi", "rdx", "r10", "rax"}


# The kernel's part played by a program: the rewritten registers in place and rax the call's
# result, it jumps to the trampoline, as a syscall's return would, with every flag set.
HARNESS = r"""
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

int main(int argc, char **argv)
{
    unsigned long long tramp_base = strtoull(argv[1], 0, 0), cell_base = strtoull(argv[2], 0, 0);
    size_t area = strtoull(argv[3], 0, 0), cells = strtoull(argv[4], 0, 0);
    FILE *f = fopen(argv[5], "rb");
    char *code = mmap((void *)tramp_base, area, PROT_READ | PROT_WRITE | PROT_EXEC,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    uint64_t *cell = mmap((void *)cell_base, cells, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (f == NULL || code != (char *)tramp_base || cell != (uint64_t *)cell_base
            || fread(code, 1, area, f) != area)
        return 2;
    unsigned slot;
    long long result;
    while (scanf("%u %lld", &slot, &result) == 2) {
        uint64_t *d = (uint64_t *)(code + slot * 256ULL + 128);
        unsigned token = 0x9000 + slot;
        d[0] = 0xd0d0d0d0d0d0d0d0ULL; d[1] = 0x5151515151515151ULL;
        d[2] = 0xd2d2d2d2d2d2d2d2ULL; d[3] = 0x1010101010101010ULL;
        d[5] = 257;                                  /* the program's call: openat */
        d[7] = (uint64_t)token << 32;
        uint64_t entry = tramp_base + slot * 256ULL + 2;
        register long r10 __asm__("r10");
        long rax = result, rdi, rsi, rdx, restarted = 0;
        unsigned long flags;
        __asm__ volatile(
            "lea 1f(%%rip), %%rcx\n\t"
            "mov %%rcx, 32(%[d])\n\t"              /* the return address */
            "lea 2f(%%rip), %%rcx\n\t"
            "mov %%rcx, 48(%[d])\n\t"              /* the program's syscall instruction */
            "mov $0x6fff00000000, %%rsi\n\t"       /* the rewritten registers */
            "mov $-100, %%rdi\n\t"
            "mov $0x6fff00000100, %%rdx\n\t"
            "mov $24, %%r10\n\t"
            "pushfq\n\t"
            "orq $0x8d5, (%%rsp)\n\t"
            "popfq\n\t"
            "jmp *%[entry]\n"
            "2:\n\t"
            "movq $1, %[restarted]\n"
            "1:\n\t"
            "pushfq\n\t"
            "popq %[flags]\n\t"
            : "+a"(rax), "=&D"(rdi), "=&S"(rsi), "=&d"(rdx), "=&r"(r10),
              [restarted] "+m"(restarted), [flags] "=m"(flags)
            : [d] "b"(d), [entry] "r"(entry)
            : "rcx", "r11", "memory", "cc");
        printf("%ld %#lx %#lx %#lx %#lx %ld %#lx %#llx\n", rax, rdi, rsi, rdx, r10, restarted,
               flags & 0x8d5, (unsigned long long)cell[slot * 32]);
        fflush(stdout);
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    out = tmp_path_factory.mktemp("trampoline")
    src, exe, area = out / "harness.c", out / "harness", out / "area"
    src.write_text(HARNESS)
    subprocess.run(["cc", "-O1", "-o", str(exe), str(src)], check=True, capture_output=True,
                   timeout=120)
    # Every slot's trampoline, as the engine writes each before its first use.
    area.write_bytes(trampoline.code().ljust(TRAMP_STRIDE, b"\0") * SLOT_COUNT)

    def run(cases: list[tuple[int, int]]) -> list[list[str]]:
        r = subprocess.run([str(exe), hex(TRAMP_BASE), hex(CELL_BASE),
                            str(TRAMP_STRIDE * SLOT_COUNT), str(CELL_STRIDE * SLOT_COUNT),
                            str(area)], input="".join(f"{s} {v}\n" for s, v in cases),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return [line.split() for line in r.stdout.splitlines()]
    return run


RESULTS = st.one_of(st.sampled_from([-errno.ELOOP, -errno.ENOENT, 0]), st.integers(0, 2**31 - 1),
                    st.integers(-4095, -1))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, SLOT_COUNT - 1), RESULTS), min_size=1, max_size=20))
def test_the_code_puts_the_registers_back_and_stores_the_result(harness, cases):
    for (slot, result), got in zip(cases, harness(cases), strict=True):
        rax, rdi, rsi, rdx, r10, restarted, flags, cell = got
        assert flags == hex(FLAGS_SET)                       # no flag changed
        assert int(cell, 16) == (0x9000 + slot) << 32 | (result & 0xFFFFFFFF)
        assert (rdi, rsi, rdx, r10) == ("0xd0d0d0d0d0d0d0d0", "0x5151515151515151",
                                        "0xd2d2d2d2d2d2d2d2", "0x1010101010101010")
        if result == -errno.ELOOP:                      # the program's call again
            assert (restarted, rax) == ("1", "257")
        else:
            assert (restarted, rax) == ("0", str(result))


def test_eloop_goes_back_to_the_programs_syscall_instruction(harness):
    [got] = harness([(3, -errno.ELOOP)])
    assert got[0] == "257" and got[5] == "1"
