"""Per-instruction execution context: operands, effective addresses, staged memory accesses.

Memory operands are translated *before* anything is committed, so that a #PF or an EPT exit
leaves the guest state untouched (fault-like behaviour, SDM 27.1; spec §1 step 3).
"""

from __future__ import annotations

from .controls import Vector
from .decoder import Access, Insn, Operand, OperandKind, effective_segment
from .faults import GuestFault
from .guest import MASK64, GuestState
from .paging import read_pieces, translate_range, write_pieces
from .paging_types import AccessKind
from .registers import REGISTER_NAMES, Gpr, SegReg
from .vcpu import Vcpu

# Capstone reports some read-modify-write memory operands as read-only.
_RMW = frozenset({"add", "sub", "and", "or", "xor", "adc", "sbb", "inc", "dec", "not", "neg",
                  "xchg", "cmpxchg", "xadd", "shl", "shr", "sar", "rol", "ror", "bts", "btr",
                  "btc"})


class ExecContext:
    """What one instruction's semantics need: the vCPU, the decoded bytes, and a notebook."""

    def __init__(self, vcpu: Vcpu, insn: Insn) -> None:
        self.vcpu = vcpu
        self.insn = insn
        self.notes: list[str] = []
        self.decision = ""
        self.completed = False
        self.next_rip = insn.next_rip
        self.tsc_written = False       # WRMSR to IA32_TSC: the written value is the TSC at retirement

    @property
    def state(self) -> GuestState:
        return self.vcpu.state

    def note(self, text: str) -> None:
        self.notes.append(text)

    # -- addresses ---------------------------------------------------------------------------
    def segment_base(self, seg: SegReg) -> int:
        if seg is SegReg.FS:
            return self.state.fs_base
        if seg is SegReg.GS:
            return self.state.gs_base
        return 0                                    # flat in 64-bit mode (SDM Vol. 3A 3.2.4)

    def effective_address(self, op: Operand) -> int:
        """Offset of a memory operand (no segment base), truncated to the address size."""
        assert op.mem is not None
        m = op.mem
        value = m.disp
        if m.base == "rip":
            value += self.insn.next_rip
        elif m.base:
            value += self.state.read(REGISTER_NAMES[m.base])
        if m.index:
            value += self.state.read(REGISTER_NAMES[m.index]) * m.scale
        mask = {2: 0xFFFF, 4: 0xFFFF_FFFF}.get(self.insn.addr_size, MASK64)
        return value & mask

    def linear(self, op: Operand) -> int:
        assert op.mem is not None
        return (self.segment_base(effective_segment(op.mem)) + self.effective_address(op)) & MASK64

    def displacement(self) -> int:
        """Exit qualification of VMX/descriptor instructions: displacement, RIP-relative resolved."""
        op = self.insn.mem_operand()
        if op is None or op.mem is None:
            return 0
        disp = op.mem.disp
        if op.mem.base == "rip":
            disp += self.insn.next_rip
        return disp & MASK64

    def is_stack(self, op: Operand) -> bool:
        return op.mem is not None and effective_segment(op.mem) is SegReg.SS

    # -- operands ----------------------------------------------------------------------------
    def mem_kind(self, op: Operand, index: int) -> AccessKind:
        mnemonic = self.insn.base_mnemonic
        if mnemonic in _RMW and index == 0:
            return AccessKind.WRITE
        if op.access & Access.WRITE:
            return AccessKind.WRITE
        return AccessKind.READ

    def stage(self, op: Operand, kind: AccessKind, purpose: str = "") -> list[tuple[int, int]]:
        """Translate a memory operand now; the returned pieces are read/written later."""
        what = purpose or ("data write" if kind is AccessKind.WRITE else "data read")
        return translate_range(self.vcpu, self.linear(op), op.size, kind, purpose=what,
                               stack=self.is_stack(op))

    def read_mem(self, pieces: list[tuple[int, int]]) -> int:
        return read_pieces(self.vcpu, pieces)

    def write_mem(self, pieces: list[tuple[int, int]], value: int) -> None:
        write_pieces(self.vcpu, pieces, value)

    def read_operand(self, op: Operand, pieces: list[tuple[int, int]] | None = None) -> int:
        if op.kind is OperandKind.IMM:
            return (op.imm or 0) & ((1 << (8 * op.size)) - 1) if op.size else (op.imm or 0)
        if op.kind is OperandKind.REG:
            ref = REGISTER_NAMES.get(op.reg or "")
            if ref is None:
                raise GuestFault(Vector.UD, why=f"register {op.reg} is not modelled")
            return self.state.read(ref)
        if pieces is None:
            pieces = self.stage(op, AccessKind.READ)
        return self.read_mem(pieces)

    def write_operand(self, op: Operand, value: int,
                      pieces: list[tuple[int, int]] | None = None) -> None:
        if op.kind is OperandKind.REG:
            self.state.write(REGISTER_NAMES[op.reg or ""], value)
        elif op.kind is OperandKind.MEM:
            if pieces is None:
                pieces = self.stage(op, AccessKind.WRITE)
            self.write_mem(pieces, value)

    def gpr(self, number: int) -> Gpr:
        return Gpr(number & 0xF)

    # -- stack -------------------------------------------------------------------------------
    def stage_push(self, size: int = 8) -> tuple[int, list[tuple[int, int]]]:
        rsp = (self.state.reg(Gpr.RSP) - size) & MASK64
        pieces = translate_range(self.vcpu, rsp, size, AccessKind.WRITE, purpose="stack write",
                                 stack=True)
        return rsp, pieces

    def commit_push(self, staged: tuple[int, list[tuple[int, int]]], value: int) -> None:
        rsp, pieces = staged
        self.write_mem(pieces, value)
        self.state.set_reg(Gpr.RSP, rsp)

    def pop(self, size: int = 8) -> int:
        rsp = self.state.reg(Gpr.RSP)
        pieces = translate_range(self.vcpu, rsp, size, AccessKind.READ, purpose="stack read",
                                 stack=True)
        value = self.read_mem(pieces)
        self.state.set_reg(Gpr.RSP, rsp + size)
        return value
