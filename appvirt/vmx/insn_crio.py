"""Control- and debug-register access, port I/O and MSR access, in the SDM's check order.

Sources: spec §4.1-§4.4; SDM 25.1.3 (mirror pp. 1076-1081); Bochs crregs.cc (`MOV_CR0Rq`,
`MOV_DqRq`), io.cc (`allow_io` then `VMexit_IO`) and msr.cc (`VMexit_MSR` before the "MSR
exists" #GP).
"""

from __future__ import annotations

from collections.abc import Callable

from .controls import Cr0, Cr4, Efer, Msr, ProcCtl, Proc2Ctl, Vector
from .decoder import OperandKind, effective_segment
from .exits import (
    on_clts, on_cr3_write, on_cr8_write, on_cr_mask_write, on_cr_read, on_dr_access, on_io,
    on_lmsw, on_msr, vm_exit,
)
from .execctx import ExecContext
from .faults import GuestFault
from .guest import MASK64
from .insn_system import guest_tsc
from .paging import translate_range
from .paging_types import AccessKind
from .qualification import DebugQual
from .reasons import ExitReason
from .registers import Gpr, SegReg

_MAX_STRING_IO = 4096
_CR0_TLB_BITS = Cr0.PG | Cr0.WP | Cr0.PE
_CR4_TLB_BITS = Cr4.PGE | Cr4.PAE | Cr4.PCIDE | Cr4.SMEP | Cr4.SMAP | Cr4.LA57


def _cpl0(ctx: ExecContext, what: str) -> None:
    if ctx.state.cpl > 0:
        raise GuestFault(Vector.GP, 0, why=f"{what} at CPL {ctx.state.cpl} (the #GP has "
                                           "priority over the VM exit)")


# -- MOV CR (spec §4.1) --------------------------------------------------------------------------

def _mov_cr(ctx: ExecContext) -> None:
    insn, state, vmcs = ctx.insn, ctx.state, ctx.vcpu.vmcs
    to_cr = insn.raw[-2] == 0x22 if len(insn.raw) >= 3 else False
    cr, gpr = insn.modrm_reg, ctx.gpr(insn.modrm_rm)
    _cpl0(ctx, f"MOV {'to' if to_cr else 'from'} CR{cr}")
    if cr not in (0, 2, 3, 4, 8):
        raise GuestFault(Vector.UD, why=f"CR{cr} does not exist")
    if not to_cr:
        if cr in (0, 4):
            sh = vmcs.cr0 if cr == 0 else vmcs.cr4
            real = state.cr0 if cr == 0 else state.cr4
            state.set_reg(gpr, (real & ~sh.mask) | (sh.shadow & sh.mask))
            ctx.decision = (f"MOV from CR{cr} never exits: it reads the read shadow for the "
                            f"bits set in the guest/host mask ({sh.mask:#x})")
        elif cr == 2:
            state.set_reg(gpr, state.cr2)
            ctx.decision = "MOV from CR2 is not controlled by any VM-execution control"
        elif cr == 3:
            ctx.decision = on_cr_read(vmcs, insn, 3, gpr)
            state.set_reg(gpr, state.cr3)
        else:
            ctx.decision = on_cr_read(vmcs, insn, 8, gpr)
            state.set_reg(gpr, state.cr8 & 0xF)
        return
    value = state.reg(gpr)
    if cr in (0, 4):
        current = state.cr0 if cr == 0 else state.cr4
        merged, ctx.decision = on_cr_mask_write(vmcs, insn, cr, value, current, gpr)
        _check_cr(ctx, cr, merged)
        vpid = ctx.vcpu.tag().vpid
        if cr == 0:
            changed = (state.cr0 ^ merged) & _CR0_TLB_BITS
            state.cr0 = merged
        else:
            changed = (state.cr4 ^ merged) & _CR4_TLB_BITS
            state.cr4 = merged
        if changed:
            ctx.vcpu.tlb.invalidate_vpid(vpid)
            ctx.note(f"CR{cr} paging bits changed: the VPID's TLB entries are invalidated")
    elif cr == 2:
        state.cr2 = value
        ctx.decision = "MOV to CR2 is not controlled by any VM-execution control"
    elif cr == 3:
        ctx.decision = on_cr3_write(vmcs, insn, value, gpr)
        no_flush = bool(state.cr4 & Cr4.PCIDE and value >> 63)
        state.cr3 = value & ~(1 << 63) & MASK64
        if not no_flush:
            dropped = ctx.vcpu.tlb.invalidate_non_global(ctx.vcpu.tag().vpid, state.pcid())
            ctx.note(f"MOV to CR3 invalidated {dropped} non-global TLB entr"
                     f"{'y' if dropped == 1 else 'ies'}")
    else:
        ctx.decision = on_cr8_write(vmcs, insn, gpr)
        if value & ~0xF:
            raise GuestFault(Vector.GP, 0, why="MOV to CR8 with reserved bits set")
        state.cr8 = value & 0xF
        if ProcCtl.USE_TPR_SHADOW in vmcs.proc and (value & 0xF) < vmcs.tpr_threshold:
            ctx.completed = True           # trap-like: the write has happened (Bochs VMX_Write_VTPR)
            vm_exit(ExitReason.TPR_BELOW_THRESHOLD, 0,
                    decided_by=f"use TPR shadow = 1 and VTPR[7:4] {value & 0xF} < TPR threshold "
                               f"{vmcs.tpr_threshold} (trap-like, after the write)")


def _check_cr(ctx: ExecContext, cr: int, value: int) -> None:
    """#GP checks of MOV to CR0/CR4 that come after the exit check (SDM 1076)."""
    unrestricted = Proc2Ctl.UNRESTRICTED_GUEST in ctx.vcpu.vmcs.secondary
    if cr == 0:
        if value >> 32:
            raise GuestFault(Vector.GP, 0, why="MOV to CR0 with bits 63:32 set")
        if value & Cr0.PG and not value & Cr0.PE:
            raise GuestFault(Vector.GP, 0, why="MOV to CR0 with PG = 1 and PE = 0")
        if value & Cr0.NW and not value & Cr0.CD:
            raise GuestFault(Vector.GP, 0, why="MOV to CR0 with NW = 1 and CD = 0")
        if ctx.state.efer & Efer.LMA and not value & Cr0.PG:
            raise GuestFault(Vector.GP, 0, why="clearing CR0.PG in IA-32e mode")
        fixed = Cr0.NE if unrestricted else (Cr0.NE | Cr0.PE | Cr0.PG)
        if value & fixed != fixed:
            raise GuestFault(Vector.GP, 0, why=f"CR0 bits {fixed & ~value:#x} are fixed to 1 in "
                                               "VMX operation (IA32_VMX_CR0_FIXED0)")
    else:
        if value >> 32 or value & (1 << 15 | 1 << 19):
            raise GuestFault(Vector.GP, 0, why="MOV to CR4 with reserved bits set")
        if not value & Cr4.VMXE:
            raise GuestFault(Vector.GP, 0, why="CR4.VMXE is fixed to 1 in VMX operation "
                                               "(IA32_VMX_CR4_FIXED0)")


def _clts(ctx: ExecContext) -> None:
    _cpl0(ctx, "CLTS")
    clear, ctx.decision = on_clts(ctx.vcpu.vmcs, ctx.insn)
    if clear:
        ctx.state.cr0 &= ~Cr0.TS


def _lmsw(ctx: ExecContext) -> None:
    _cpl0(ctx, "LMSW")
    op = ctx.insn.operands[0]
    linear = ctx.linear(op) if op.kind is OperandKind.MEM else None
    msw = ctx.read_operand(op) & 0xFFFF
    ctx.state.cr0, ctx.decision = on_lmsw(ctx.vcpu.vmcs, ctx.insn, msw, ctx.state.cr0, linear)


def _smsw(ctx: ExecContext) -> None:
    if ctx.state.cpl > 0 and ctx.state.cr4 & Cr4.UMIP:
        raise GuestFault(Vector.GP, 0, why="SMSW at CPL > 0 with CR4.UMIP = 1")
    sh = ctx.vcpu.vmcs.cr0
    ctx.write_operand(ctx.insn.operands[0], (ctx.state.cr0 & ~sh.mask) | (sh.shadow & sh.mask))
    ctx.decision = "SMSW never exits: it reads the CR0 read shadow for host-owned bits"


# -- MOV DR -----------------------------------------------------------------------------------

def _mov_dr(ctx: ExecContext) -> None:
    insn, state = ctx.insn, ctx.state
    read = insn.raw[-2] == 0x21
    dr, gpr = insn.modrm_reg & 7, ctx.gpr(insn.modrm_rm)
    # Bochs MOV_DqRq/MOV_RqDq: the MOV-DR exit is checked before every fault (spec §1).
    ctx.decision = on_dr_access(ctx.vcpu.vmcs, insn, dr, gpr, read=read)
    _cpl0(ctx, "MOV DR")
    if dr in (4, 5):
        if state.cr4 & Cr4.DE:
            raise GuestFault(Vector.UD, why=f"DR{dr} with CR4.DE = 1")
        dr += 2
    if state.dr[7] >> 13 & 1:
        raise GuestFault(Vector.DB, why="DR7.GD = 1 (general detect)", debug=DebugQual(bd=True))
    if read:
        state.set_reg(gpr, state.dr[dr])
    else:
        state.dr[dr] = state.reg(gpr)


# -- I/O (spec §4.2) -----------------------------------------------------------------------------

def _io_permitted(ctx: ExecContext, port: int, size: int) -> None:
    """CPL > IOPL consults the TSS I/O-permission bitmap; the #GP beats the exit (SDM 16.5)."""
    state = ctx.state
    if state.cpl <= state.iopl:
        return
    denied = [p for p in range(port, port + size) if p not in state.tss_io_allowed]
    if denied:
        raise GuestFault(Vector.GP, 0, why=f"CPL {state.cpl} > IOPL {state.iopl} and the TSS "
                                           f"I/O bitmap denies port {denied[0]:#x}")


def _in_out(ctx: ExecContext) -> None:
    insn, state = ctx.insn, ctx.state
    is_in = insn.base_mnemonic == "in"
    data_op = insn.operands[0] if is_in else insn.operands[1]
    port_op = insn.operands[1] if is_in else insn.operands[0]
    immediate = port_op.kind is OperandKind.IMM
    port = (port_op.imm or 0) & 0xFF if immediate else state.reg(Gpr.RDX) & 0xFFFF
    size = data_op.size
    _io_permitted(ctx, port, size)
    ctx.decision = on_io(ctx.vcpu.vmcs, insn, port=port, size=size, is_in=is_in,
                         immediate=immediate)
    if is_in:
        ctx.write_operand(data_op, (1 << (8 * size)) - 1)
        ctx.note("the IN reached the physical port (not modelled: reads as all ones)")
    else:
        ctx.note("the OUT reached the physical port")


def _string_io(ctx: ExecContext) -> None:
    insn, state = ctx.insn, ctx.state
    m = insn.base_mnemonic
    is_in = m.startswith("ins")
    size = {"b": 1, "w": 2, "d": 4}[m[-1]]
    port = state.reg(Gpr.RDX) & 0xFFFF
    count = state.reg(Gpr.RCX) if insn.has_rep else 1
    if insn.has_rep and count == 0:
        ctx.decision = "REP with RCX = 0: no iteration, no I/O access, no exit"
        return
    mem = insn.mem_operand()
    assert mem is not None and mem.mem is not None
    asize_mask = {2: 0xFFFF, 4: 0xFFFF_FFFF}.get(insn.addr_size, MASK64)
    seg = SegReg.ES if is_in else effective_segment(mem.mem)
    index = Gpr.RDI if is_in else Gpr.RSI
    linear = (ctx.segment_base(seg) + (state.reg(index) & asize_mask)) & MASK64
    _io_permitted(ctx, port, size)
    # INS/OUTS information: address size in 9:7 and segment in 17:15 only (SDM 27.2.5).
    info = (ctx.insn.instruction_info().encode() & 7 << 7) | int(seg) << 15
    ctx.decision = on_io(ctx.vcpu.vmcs, insn, port=port, size=size, is_in=is_in, string=True,
                         rep=insn.has_rep, linear=linear, info=info)
    if count > _MAX_STRING_IO:
        ctx.note(f"REP count {count} capped at {_MAX_STRING_IO} iterations in the simulation")
        count = _MAX_STRING_IO
    step = -size if state.rflags & 0x400 else size
    for _ in range(count):
        addr = (ctx.segment_base(seg) + (state.reg(index) & asize_mask)) & MASK64
        kind = AccessKind.WRITE if is_in else AccessKind.READ
        pieces = translate_range(ctx.vcpu, addr, size, kind,
                                 purpose="string I/O " + ("write" if is_in else "read"))
        if is_in:
            ctx.write_mem(pieces, (1 << (8 * size)) - 1)
        else:
            ctx.read_mem(pieces)
        state.set_reg(index, state.reg(index) + step)
        if insn.has_rep:
            state.set_reg(Gpr.RCX, state.reg(Gpr.RCX) - 1)


# -- RDMSR/WRMSR (spec §4.3, §4.4) -------------------------------------------------------------

_EFER_WRITABLE = Efer.SCE | Efer.LME | Efer.LMA | Efer.NXE


def _msr(ctx: ExecContext) -> None:
    state, vmcs = ctx.state, ctx.vcpu.vmcs
    write = ctx.insn.base_mnemonic == "wrmsr"
    _cpl0(ctx, "WRMSR" if write else "RDMSR")
    ecx = state.reg(Gpr.RCX) & 0xFFFF_FFFF
    ctx.decision = on_msr(vmcs, ctx.insn, ecx, write=write)
    if not state.msr_exists(ecx):
        raise GuestFault(Vector.GP, 0, why=f"MSR {ecx:#x} does not exist (this #GP comes after "
                                           "the bitmap check)")
    if not write:
        value = guest_tsc(vmcs, state.tsc) if ecx == Msr.IA32_TSC else state.read_msr(ecx)
        state.set_edx_eax(value)
        return
    value = state.edx_eax()
    if ecx == Msr.IA32_TSC:
        state.tsc = value
        ctx.tsc_written = True
        ctx.note(f"WRMSR IA32_TSC without an exit sets the physical TSC to {value:#x} (not "
                 "offset-adjusted; this is why VMMs intercept it)")
    elif ecx == Msr.IA32_EFER:
        if value & ~_EFER_WRITABLE:
            raise GuestFault(Vector.GP, 0, why=f"EFER reserved bits {value & ~_EFER_WRITABLE:#x}")
        state.efer = (value & ~Efer.LMA) | (state.efer & Efer.LMA)
    elif ecx == Msr.IA32_TSC_ADJUST:
        state.tsc += value - state.read_msr(ecx)
        state.write_msr(ecx, value)
        ctx.tsc_written = True
    elif ecx == Msr.X2APIC_EOI and Proc2Ctl.VIRTUAL_INTERRUPT_DELIVERY in vmcs.secondary:
        _virtual_eoi(ctx)
    else:
        state.write_msr(ecx, value)


def _virtual_eoi(ctx: ExecContext) -> None:
    """EOI virtualization (SDM 29.1.4): retire the highest in-service vector; a set EOI-exit
    bitmap bit then gives a trap-like EOI-induced exit (45) whose qualification is the vector."""
    state, vmcs = ctx.state, ctx.vcpu.vmcs
    if not state.in_service:
        ctx.note("virtual EOI with no interrupt in service")
        return
    vector = max(state.in_service)
    state.in_service.remove(vector)
    ctx.note(f"EOI virtualized by virtual-interrupt delivery (vector {vector:#x})")
    if vector in vmcs.eoi_exit_vectors:
        ctx.completed = True
        vm_exit(ExitReason.EOI_INDUCED, vector,
                decided_by=f"virtual-interrupt delivery and EOI-exit bitmap bit {vector:#x} = 1 "
                           "(trap-like, after the EOI)")


HANDLERS: dict[str, Callable[[ExecContext], None]] = {
    "clts": _clts, "lmsw": _lmsw, "smsw": _smsw,
    "in": _in_out, "out": _in_out,
    "insb": _string_io, "insw": _string_io, "insd": _string_io,
    "outsb": _string_io, "outsw": _string_io, "outsd": _string_io,
    "rdmsr": _msr, "wrmsr": _msr,
}


def control_register_handler(ctx: ExecContext) -> Callable[[ExecContext], None] | None:
    """MOV CR/DR share the `mov` mnemonic with ordinary moves; pick them by opcode."""
    raw = ctx.insn.raw
    opcode = raw[-3:-1] if len(raw) >= 3 else b""
    if ctx.insn.base_mnemonic != "mov" or len(opcode) != 2 or opcode[0] != 0x0F:
        return None
    if opcode[1] in (0x20, 0x22):
        return _mov_cr
    if opcode[1] in (0x21, 0x23):
        return _mov_dr
    return None

