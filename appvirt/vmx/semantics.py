"""General-purpose instructions: the ones that never exit by themselves.

They still matter to the simulator: their memory accesses can fault (#PF through the exception
bitmap, EPT violations and misconfigurations), and their register results feed later
instructions (`or $0x800,%eax` before `wrmsr`). Arithmetic flags other than IF are not
modelled and branches are not followed (a listing runs straight through).
"""

from __future__ import annotations

from .controls import InterruptionType, Rflags, Vector
from .decoder import OperandKind
from .execctx import ExecContext
from .faults import GuestFault
from .guest import MASK64
from .paging import translate_range
from .paging_types import AccessKind
from .registers import Gpr, RegRef

_ALU = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "and": lambda a, b: a & b,
    "or": lambda a, b: a | b, "xor": lambda a, b: a ^ b, "adc": lambda a, b: a + b,
    "sbb": lambda a, b: a - b,
}
_READ_ONLY = frozenset({"test", "cmp", "bt"})
_NOPS = frozenset({"nop", "endbr64", "endbr32", "lfence", "mfence", "sfence", "prefetcht0",
                   "prefetcht1", "prefetcht2", "prefetchnta", "clc", "stc", "cld", "std", "cmc"})
_MAX_REP = 4096
GENERAL_DECISION = "not an exiting instruction"


def _mask(size: int) -> int:
    return (1 << (8 * size)) - 1


def _sign_extend(value: int, size: int) -> int:
    bits = 8 * size
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def execute(ctx: ExecContext) -> bool:
    """Run a general-purpose instruction; False when it is not modelled."""
    insn, state = ctx.insn, ctx.state
    m = insn.base_mnemonic
    ops = insn.operands
    ctx.decision = GENERAL_DECISION

    if m in _NOPS or m.startswith("prefetch"):
        return True
    if m in ("mov", "movabs", "movzx", "movsx", "movsxd") and len(ops) == 2:
        dst, src = ops
        dst_pieces = ctx.stage(dst, AccessKind.WRITE) if dst.kind is OperandKind.MEM else None
        value = ctx.read_operand(src)
        if m in ("movsx", "movsxd"):
            value = _sign_extend(value, src.size)
        ctx.write_operand(dst, value & _mask(dst.size), dst_pieces)
        return True
    if m == "lea":
        ctx.write_operand(ops[0], ctx.effective_address(ops[1]) & _mask(ops[0].size))
        return True
    if m in _ALU or m in _READ_ONLY:
        dst, src = ops
        pieces = None
        if dst.kind is OperandKind.MEM:
            kind = AccessKind.READ if m in _READ_ONLY else AccessKind.WRITE
            pieces = ctx.stage(dst, kind)
        a = ctx.read_operand(dst, pieces)
        b = ctx.read_operand(src)
        if src.kind is OperandKind.IMM and src.size < dst.size:
            b = _sign_extend(src.imm or 0, src.size) & _mask(dst.size)
        elif src.kind is OperandKind.IMM:
            b = (src.imm or 0) & _mask(dst.size)
        if m not in _READ_ONLY:
            ctx.write_operand(dst, _ALU[m](a, b) & _mask(dst.size), pieces)
        return True
    if m in ("inc", "dec", "not", "neg"):
        (dst,) = ops
        pieces = ctx.stage(dst, AccessKind.WRITE) if dst.kind is OperandKind.MEM else None
        a = ctx.read_operand(dst, pieces)
        result = {"inc": a + 1, "dec": a - 1, "not": ~a, "neg": -a}[m]
        ctx.write_operand(dst, result & _mask(dst.size), pieces)
        return True
    if m == "xchg":
        a_op, b_op = ops
        pieces = ctx.stage(a_op, AccessKind.WRITE) if a_op.kind is OperandKind.MEM else None
        a, b = ctx.read_operand(a_op, pieces), ctx.read_operand(b_op)
        ctx.write_operand(a_op, b, pieces)
        ctx.write_operand(b_op, a)
        return True
    if m == "push":
        (src,) = ops
        value = ctx.read_operand(src)
        if src.kind is OperandKind.IMM:
            value = _sign_extend(src.imm or 0, src.size) & MASK64
        ctx.commit_push(ctx.stage_push(8), value)
        return True
    if m == "pop":
        (dst,) = ops
        ctx.write_operand(dst, ctx.pop(8))
        return True
    if m == "pushfq":
        ctx.commit_push(ctx.stage_push(8), state.rflags & ~(Rflags.RF | Rflags.VM))
        return True
    if m == "popfq":
        value = ctx.pop(8)
        keep = Rflags.IOPL if state.cpl > 0 else 0
        if state.cpl > state.iopl:
            keep |= Rflags.IF
        state.rflags = (state.rflags & keep) | (value & ~keep & 0x3F7FD5) | Rflags.FIXED1
        return True
    if m == "call":
        staged = ctx.stage_push(8)
        target = ctx.read_operand(ops[0]) if ops else 0
        ctx.commit_push(staged, insn.next_rip)
        ctx.note(f"call to {target:#x} not followed (the listing runs straight through)")
        return True
    if m == "ret":
        target = ctx.pop(8)
        ctx.note(f"return to {target:#x} not followed")
        return True
    if m == "leave":
        state.set_reg(Gpr.RSP, state.reg(Gpr.RBP))
        state.set_reg(Gpr.RBP, ctx.pop(8))
        return True
    if m == "jmp" or (m.startswith("j") and m != "jmp") or m.startswith("loop"):
        if ops and ops[0].kind is OperandKind.MEM:
            ctx.read_operand(ops[0])
        ctx.note("branch not followed (the listing runs straight through)")
        return True
    if m in ("cli", "sti"):
        if state.cpl > state.iopl:
            raise GuestFault(Vector.GP, 0, why=f"{m.upper()} with CPL {state.cpl} > IOPL {state.iopl}")
        if m == "sti":
            if not state.interrupts_enabled:
                state.sti_blocking = True         # blocks events until after the next instruction
            state.rflags |= Rflags.IF
        else:
            state.rflags &= ~Rflags.IF
        return True
    if m == "swapgs":
        if state.cpl != 0:
            raise GuestFault(Vector.GP, 0, why="SWAPGS at CPL > 0")
        state.gs_base, state.kernel_gs_base = state.kernel_gs_base, state.gs_base
        return True
    if m == "int3":
        raise GuestFault(Vector.BP, kind=InterruptionType.SOFTWARE_EXCEPTION, why="INT3")
    if m == "int1":
        raise GuestFault(Vector.DB, kind=InterruptionType.PRIVILEGED_SOFTWARE_EXCEPTION, why="INT1")
    if m == "int":
        raise GuestFault((ops[0].imm or 0) & 0xFF, kind=InterruptionType.SOFTWARE_INTERRUPT,
                         why="software interrupt")
    if m in ("ud2", "ud0", "ud1", "into"):
        raise GuestFault(Vector.UD, why=f"{m.upper()}" + (" is invalid in 64-bit mode"
                                                          if m == "into" else ""))
    if m in ("movsb", "movsw", "movsd", "movsq", "stosb", "stosw", "stosd", "stosq",
             "lodsb", "lodsw", "lodsd", "lodsq") and not any(
                 op.kind is OperandKind.REG and op.reg and op.reg.startswith("xmm") for op in ops):
        return _string_move(ctx, m)
    if m in ("syscall", "sysret", "sysretq", "iretq", "iret", "iretd"):
        ctx.note(f"{m}: privilege transition not modelled (it never exits by itself)")
        return True
    return False


def _string_move(ctx: ExecContext, m: str) -> bool:
    """MOVS/STOS/LODS with optional REP: each iteration's accesses are translated in turn."""
    state, insn = ctx.state, ctx.insn
    size = {"b": 1, "w": 2, "d": 4, "q": 8}[m[-1]]
    count = state.reg(Gpr.RCX) if insn.has_rep else 1
    if insn.has_rep and count > _MAX_REP:
        ctx.note(f"REP count {count} capped at {_MAX_REP} iterations in the simulation")
        count = _MAX_REP
    step = -size if state.rflags & 0x400 else size
    for _ in range(count):
        rsi, rdi = state.reg(Gpr.RSI), state.reg(Gpr.RDI)
        if m.startswith("movs"):
            src = ctx.read_mem(_range(ctx, rsi, size, AccessKind.READ))
            ctx.write_mem(_range(ctx, rdi, size, AccessKind.WRITE), src)
            state.set_reg(Gpr.RSI, rsi + step)
            state.set_reg(Gpr.RDI, rdi + step)
        elif m.startswith("stos"):
            ctx.write_mem(_range(ctx, rdi, size, AccessKind.WRITE),
                          state.reg(Gpr.RAX) & _mask(size))
            state.set_reg(Gpr.RDI, rdi + step)
        else:
            value = ctx.read_mem(_range(ctx, rsi, size, AccessKind.READ))
            state.write(RegRef(Gpr.RAX, size), value)
            state.set_reg(Gpr.RSI, rsi + step)
        if insn.has_rep:
            state.set_reg(Gpr.RCX, state.reg(Gpr.RCX) - 1)
    return True


def _range(ctx: ExecContext, linear: int, size: int, kind: AccessKind) -> list[tuple[int, int]]:
    return translate_range(ctx.vcpu, linear, size, kind,
                           purpose="data write" if kind is AccessKind.WRITE else "data read")
