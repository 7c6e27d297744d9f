"""System instructions other than CR/DR/I/O/MSR access, in the SDM's check order.

For each: the faults that take priority over the exit (#UD, CPL #GP; spec §1 step 1), then the
exit generator (step 2), then memory accesses (step 3) and the architectural effect. Sources per
instruction: spec §3 and §4.7, Bochs proc_ctrl.cc, mwait.cc, rdrand.cc, protect_ctrl.cc, vmx.cc.
"""

from __future__ import annotations

from collections.abc import Callable

from .controls import Cr4, Msr, ProcCtl, Proc2Ctl, Vector
from .decoder import OperandKind
from .exits import (
    on_descriptor_table, on_hlt, on_invlpg, on_invpcid, on_monitor, on_mwait, on_pause,
    on_random, on_rdpmc, on_rdtsc, on_unconditional, on_vmx_instruction, on_wbinvd,
)
from .execctx import ExecContext
from .faults import GuestFault
from .guest import MASK64, ActivityState
from .paging_types import AccessKind
from .reasons import ExitReason
from .registers import REGISTER_NAMES, Gpr
from .vmcs import Vmcs

RANDOM_VALUE = 0x5EED_5EED_5EED_5EED      # deterministic stand-in for hardware entropy


def guest_tsc(vmcs: Vmcs, tsc: int) -> int:
    """What RDTSC/RDTSCP/RDMSR(0x10) return without an exit (SDM 25.3; spec §4.4)."""
    if ProcCtl.USE_TSC_OFFSETTING not in vmcs.proc:
        return tsc & MASK64
    if Proc2Ctl.USE_TSC_SCALING in vmcs.secondary:
        return (((tsc * vmcs.tsc_multiplier) >> 48) + vmcs.tsc_offset) & MASK64
    return (tsc + vmcs.tsc_offset) & MASK64


def _cpl0(ctx: ExecContext, what: str) -> None:
    if ctx.state.cpl > 0:
        raise GuestFault(Vector.GP, 0, why=f"{what} at CPL {ctx.state.cpl} (privileged; the #GP "
                                           "has priority over the VM exit)")


def _sec(ctx: ExecContext, flag: Proc2Ctl) -> bool:
    return flag in ctx.vcpu.vmcs.secondary


_VMX_REASONS = {
    "vmcall": ExitReason.VMCALL, "vmclear": ExitReason.VMCLEAR,
    "vmlaunch": ExitReason.VMLAUNCH, "vmptrld": ExitReason.VMPTRLD,
    "vmptrst": ExitReason.VMPTRST, "vmread": ExitReason.VMREAD,
    "vmresume": ExitReason.VMRESUME, "vmwrite": ExitReason.VMWRITE,
    "vmxoff": ExitReason.VMXOFF, "vmxon": ExitReason.VMXON, "invept": ExitReason.INVEPT,
    "invvpid": ExitReason.INVVPID,
}


def _vmx(ctx: ExecContext) -> None:
    reason = _VMX_REASONS[ctx.insn.base_mnemonic]
    info = None
    field = None
    if reason in (ExitReason.VMREAD, ExitReason.VMWRITE):
        field = ctx.state.reg(ctx.gpr(ctx.insn.modrm_reg))
    if reason not in (ExitReason.VMCALL, ExitReason.VMLAUNCH, ExitReason.VMRESUME,
                      ExitReason.VMXOFF):
        reg2 = ctx.insn.modrm_reg if reason in (ExitReason.VMREAD, ExitReason.VMWRITE,
                                                ExitReason.INVEPT, ExitReason.INVVPID) else 0
        info = ctx.insn.instruction_info(reg2=reg2).encode()
    ctx.decision = on_vmx_instruction(ctx.vcpu.vmcs, ctx.insn, reason,
                                      displacement=ctx.displacement(), info=info,
                                      vmcs_field=field)
    ctx.note("VMREAD/VMWRITE to the shadow VMCS is not modelled further")


def _cpuid(ctx: ExecContext) -> None:
    on_unconditional(ctx.insn, ExitReason.CPUID)


def _getsec(ctx: ExecContext) -> None:
    if not ctx.state.cr4 & Cr4.SMXE:
        raise GuestFault(Vector.UD, why="GETSEC with CR4.SMXE = 0")
    on_unconditional(ctx.insn, ExitReason.GETSEC)


def _invd(ctx: ExecContext) -> None:
    _cpl0(ctx, "INVD")
    on_unconditional(ctx.insn, ExitReason.INVD)


def _xsetbv(ctx: ExecContext) -> None:
    # "#UD due to CR4.OSXSAVE=0 has priority over the intercept" (KVM kvm_emulate_xsetbv).
    if not ctx.state.cr4 & Cr4.OSXSAVE:
        raise GuestFault(Vector.UD, why="XSETBV with CR4.OSXSAVE = 0")
    on_unconditional(ctx.insn, ExitReason.XSETBV)


def _vmfunc(ctx: ExecContext) -> None:
    if not _sec(ctx, Proc2Ctl.ENABLE_VM_FUNCTIONS):
        raise GuestFault(Vector.UD, why="VMFUNC with 'enable VM functions' = 0")
    on_unconditional(ctx.insn, ExitReason.VMFUNC)


def _hlt(ctx: ExecContext) -> None:
    _cpl0(ctx, "HLT")
    ctx.decision = on_hlt(ctx.vcpu.vmcs, ctx.insn)
    ctx.state.activity = ActivityState.HLT


def _invlpg(ctx: ExecContext) -> None:
    _cpl0(ctx, "INVLPG")
    op = ctx.insn.mem_operand()
    linear = ctx.linear(op) if op is not None else 0
    ctx.decision = on_invlpg(ctx.vcpu.vmcs, ctx.insn, linear)
    dropped = ctx.vcpu.tlb.invalidate_address(ctx.vcpu.tag().vpid, linear)
    ctx.note(f"INVLPG {linear:#x} invalidated {dropped} TLB entr{'y' if dropped == 1 else 'ies'}")


def _invpcid(ctx: ExecContext) -> None:
    if not _sec(ctx, Proc2Ctl.ENABLE_INVPCID):
        raise GuestFault(Vector.UD, why="INVPCID with 'enable INVPCID' = 0")
    _cpl0(ctx, "INVPCID")
    ctx.decision = on_invpcid(ctx.vcpu.vmcs, ctx.insn, ctx.displacement())
    op = ctx.insn.mem_operand()
    if op is not None:
        ctx.stage(op, AccessKind.READ, "INVPCID descriptor read")
    ctx.vcpu.tlb.invalidate_vpid(ctx.vcpu.tag().vpid)


def _rdpmc(ctx: ExecContext) -> None:
    if ctx.state.cpl > 0 and not ctx.state.cr4 & Cr4.PCE:
        raise GuestFault(Vector.GP, 0, why="RDPMC at CPL > 0 with CR4.PCE = 0")
    ctx.decision = on_rdpmc(ctx.vcpu.vmcs, ctx.insn)
    if ctx.state.reg(Gpr.RCX) & 0xFFFF_FFFF >= 8:
        raise GuestFault(Vector.GP, 0, why="RDPMC of a counter that does not exist")
    ctx.state.set_edx_eax(0)


def _rdtsc(ctx: ExecContext) -> None:
    rdtscp = ctx.insn.base_mnemonic == "rdtscp"
    if rdtscp and not _sec(ctx, Proc2Ctl.ENABLE_RDTSCP):
        raise GuestFault(Vector.UD, why="RDTSCP with 'enable RDTSCP' = 0 (this #UD beats everything)")
    if ctx.state.cr4 & Cr4.TSD and ctx.state.cpl > 0:
        raise GuestFault(Vector.GP, 0, why="RDTSC with CR4.TSD = 1 at CPL > 0")
    ctx.decision = on_rdtsc(ctx.vcpu.vmcs, ctx.insn, rdtscp=rdtscp)
    ctx.state.set_edx_eax(guest_tsc(ctx.vcpu.vmcs, ctx.state.tsc))
    if rdtscp:
        ctx.state.set_reg(Gpr.RCX, ctx.state.msrs.get(Msr.IA32_TSC_AUX, 0) & 0xFFFF_FFFF)


def _monitor(ctx: ExecContext) -> None:
    if ctx.state.cpl != 0:
        raise GuestFault(Vector.UD, why="MONITOR at CPL != 0")
    ctx.decision = on_monitor(ctx.vcpu.vmcs, ctx.insn)
    ctx.state.monitor_armed = True


def _mwait(ctx: ExecContext) -> None:
    if ctx.state.cpl != 0:
        raise GuestFault(Vector.UD, why="MWAIT at CPL != 0")
    ctx.decision = on_mwait(ctx.vcpu.vmcs, ctx.insn, ctx.state.monitor_armed)
    if ctx.state.monitor_armed:
        ctx.note("MWAIT waits for a store to the monitored line or an interrupt")
    ctx.state.monitor_armed = False


def _pause(ctx: ExecContext) -> None:
    s = ctx.state
    ctx.decision, s.first_pause_tsc, s.last_pause_tsc = on_pause(
        ctx.vcpu.vmcs, ctx.insn, cpl=s.cpl, tsc=s.tsc, first=s.first_pause_tsc,
        last=s.last_pause_tsc)


def _wbinvd(ctx: ExecContext) -> None:
    _cpl0(ctx, ctx.insn.base_mnemonic.upper())
    ctx.decision = on_wbinvd(ctx.vcpu.vmcs, ctx.insn)


def _random(ctx: ExecContext) -> None:
    op = ctx.insn.operands[0]
    ref = REGISTER_NAMES[op.reg or ""]
    ctx.decision = on_random(ctx.vcpu.vmcs, ctx.insn, seed=ctx.insn.base_mnemonic == "rdseed",
                             dest=ref.gpr, size=ref.size)
    ctx.state.write(ref, RANDOM_VALUE)
    ctx.state.rflags |= 1                                   # CF = 1: a value was returned


_DESC = {"sgdt": (ExitReason.GDTR_IDTR, 0, False), "sidt": (ExitReason.GDTR_IDTR, 1, False),
         "lgdt": (ExitReason.GDTR_IDTR, 2, True), "lidt": (ExitReason.GDTR_IDTR, 3, True),
         "sldt": (ExitReason.LDTR_TR, 0, False), "str": (ExitReason.LDTR_TR, 1, False),
         "lldt": (ExitReason.LDTR_TR, 2, True), "ltr": (ExitReason.LDTR_TR, 3, True)}


def _descriptor(ctx: ExecContext) -> None:
    m = ctx.insn.base_mnemonic
    reason, identity, load = _DESC[m]
    if load:
        _cpl0(ctx, m.upper())
    elif ctx.state.cpl > 0 and ctx.state.cr4 & Cr4.UMIP:
        raise GuestFault(Vector.GP, 0, why=f"{m.upper()} at CPL > 0 with CR4.UMIP = 1")
    ctx.decision = on_descriptor_table(ctx.vcpu.vmcs, ctx.insn, reason, identity,
                                       ctx.displacement())
    op = ctx.insn.operands[0]
    s = ctx.state
    if load:
        value = ctx.read_operand(op)
        if m == "lgdt":
            s.gdtr_base = value >> 16 & MASK64
        elif m == "lidt":
            s.idtr_base = value >> 16 & MASK64
        elif m == "lldt":
            s.ldtr = value & 0xFFFF
        else:
            s.tr = value & 0xFFFF
    else:
        stored = {"sgdt": s.gdtr_base << 16 | 0xFFFF, "sidt": s.idtr_base << 16 | 0xFFF,
                  "sldt": s.ldtr, "str": s.tr}[m]
        if op.kind is OperandKind.MEM:
            ctx.write_operand(op, stored)
        else:
            ctx.write_operand(op, stored & 0xFFFF)


HANDLERS: dict[str, Callable[[ExecContext], None]] = {
    "cpuid": _cpuid, "getsec": _getsec, "invd": _invd, "xsetbv": _xsetbv, "vmfunc": _vmfunc,
    "hlt": _hlt, "invlpg": _invlpg, "invpcid": _invpcid, "rdpmc": _rdpmc, "rdtsc": _rdtsc,
    "rdtscp": _rdtsc, "monitor": _monitor, "mwait": _mwait, "pause": _pause,
    "wbinvd": _wbinvd, "wbnoinvd": _wbinvd, "rdrand": _random, "rdseed": _random,
    **{name: _vmx for name in _VMX_REASONS},
    **{name: _descriptor for name in _DESC},
}
