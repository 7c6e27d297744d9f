"""The VM-exit record, the `vm_exit()` sink, and Bochs-style generators for instruction exits.

Each generator mirrors one Bochs `VMexit_*` helper (bochs/cpu/vmexit.cc) and KVM's re-statement
in `nested_vmx_l1_wants_exit()` (arch/x86/kvm/vmx/nested.c): test the control, build the
qualification, call the one sink. The sink raises `VmExitSignal`, the Python form of Bochs's
longjmp out of the middle of an instruction (spec §9, §11). When there is no exit a generator
returns the sentence that says why, so every row can name its deciding condition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NoReturn

from .bitmaps import BitRef
from .controls import Cr0, ProcCtl, Proc2Ctl
from .decoder import Insn
from .qualification import (
    AddressQual, CrAccessQual, CrAccessType, DrAccessQual, DrDirection, InterruptionInfo,
    IoDirection, IoQual, MwaitQual, decode_qualification, fields_of,
)
from .reasons import LENGTH_DEFINED_REASONS, TRAP_LIKE_REASONS, ExitReason, ExitReasonField
from .registers import Gpr
from .vmcs import Vmcs


@dataclass(frozen=True, slots=True)
class VmExit:
    """One VM exit and its exit-information fields (SDM 27.2; spec §5).

    Fields the SDM leaves undefined for this exit are None (instruction length for #PF, EPT
    violations and interrupts, for instance); tests must not assert on them.
    """

    reason: ExitReason
    qualification: int = 0
    decided_by: str = ""
    instruction_length: int | None = None
    instruction_info: int | None = None
    guest_linear_address: int | None = None
    guest_physical_address: int | None = None
    interruption_info: InterruptionInfo | None = None
    interruption_error_code: int | None = None
    idt_vectoring_info: InterruptionInfo | None = None
    idt_vectoring_error_code: int | None = None
    entry_failure: bool = False
    guest_rip: int = 0
    bits: tuple[BitRef, ...] = field(default=())

    @property
    def trap_like(self) -> bool:
        return self.reason in TRAP_LIKE_REASONS

    @property
    def reason_field(self) -> ExitReasonField:
        return ExitReasonField(int(self.reason), entry_failure=self.entry_failure)

    def qualification_fields(self) -> dict[str, Any]:
        return decode_qualification(self.reason, self.qualification,
                                    interruption=self.interruption_info)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view with raw values and decoded fields."""
        out: dict[str, Any] = {
            "reason": int(self.reason), "reason_name": self.reason.name,
            "exit_reason_field": self.reason_field.encode(),
            "qualification": self.qualification,
            "qualification_fields": self.qualification_fields(),
            "decided_by": self.decided_by,
            "instruction_length": self.instruction_length,
            "instruction_info": self.instruction_info,
            "guest_linear_address": self.guest_linear_address,
            "guest_physical_address": self.guest_physical_address,
            "guest_rip": self.guest_rip,
        }
        if self.interruption_info is not None:
            out["interruption_info"] = self.interruption_info.encode()
            out["interruption_info_fields"] = fields_of(self.interruption_info)
            out["interruption_error_code"] = self.interruption_error_code
        if self.idt_vectoring_info is not None:
            out["idt_vectoring_info"] = self.idt_vectoring_info.encode()
            out["idt_vectoring_error_code"] = self.idt_vectoring_error_code
        return out


class VmExitSignal(Exception):
    """Raised by `vm_exit()` to leave an instruction half-way, as Bochs longjmps."""

    def __init__(self, exit: VmExit) -> None:
        super().__init__(f"VM exit {exit.reason.name}")
        self.exit = exit


def vm_exit(reason: ExitReason, qualification: int = 0, *, decided_by: str,
            insn: Insn | None = None, **fields: Any) -> NoReturn:
    """The one sink: record the exit information and leave the instruction.

    The instruction length is written only for the fault-like instruction exits for which the
    SDM defines it (27.2.4); callers pass it explicitly for software exceptions.
    """
    if "instruction_length" not in fields:
        fields["instruction_length"] = (insn.length if insn is not None
                                        and reason in LENGTH_DEFINED_REASONS else None)
    raise VmExitSignal(VmExit(reason, qualification, decided_by, **fields))


def _ctl(vmcs: Vmcs, flag: ProcCtl) -> bool:
    return flag in vmcs.proc


def _sec(vmcs: Vmcs, flag: Proc2Ctl) -> bool:
    return flag in vmcs.secondary


# -- unconditional --------------------------------------------------------------------------

def on_unconditional(insn: Insn, reason: ExitReason, qualification: int = 0,
                     **fields: Any) -> NoReturn:
    """CPUID, GETSEC, INVD, XSETBV, VMCALL and the VMX instructions (SDM 25.1.2)."""
    vm_exit(reason, qualification, insn=insn,
            decided_by=f"{reason.name} exits unconditionally in VMX non-root operation",
            **fields)


def on_vmx_instruction(vmcs: Vmcs, insn: Insn, reason: ExitReason, *, displacement: int,
                       info: int | None, vmcs_field: int | None = None) -> str:
    """VMX instructions; VMREAD/VMWRITE honour VMCS shadowing (Bochs `Vmexit_Vmread`)."""
    if (reason in (ExitReason.VMREAD, ExitReason.VMWRITE)
            and _sec(vmcs, Proc2Ctl.VMCS_SHADOWING) and vmcs_field is not None
            and vmcs_field <= 0x7FFF):
        return ("VMCS shadowing = 1 and the field's VMREAD/VMWRITE bitmap bit is clear: "
                "the access goes to the shadow VMCS")
    if reason in (ExitReason.VMCALL, ExitReason.VMLAUNCH, ExitReason.VMRESUME,
                  ExitReason.VMXOFF):
        on_unconditional(insn, reason)
    on_unconditional(insn, reason, displacement, instruction_info=info)


# -- simple controls --------------------------------------------------------------------------

def on_hlt(vmcs: Vmcs, insn: Insn) -> str:
    """HLT (Bochs `VMexit_HLT`)."""
    if _ctl(vmcs, ProcCtl.HLT_EXITING):
        vm_exit(ExitReason.HLT, insn=insn, decided_by="primary control HLT_EXITING = 1")
    return "HLT_EXITING = 0: the guest enters the HLT activity state"


def on_invlpg(vmcs: Vmcs, insn: Insn, linear: int) -> str:
    """INVLPG: qualification = linear address of the operand (Bochs `VMexit_INVLPG`)."""
    if _ctl(vmcs, ProcCtl.INVLPG_EXITING):
        vm_exit(ExitReason.INVLPG, AddressQual(linear).encode(), insn=insn,
                decided_by="primary control INVLPG_EXITING = 1")
    return "INVLPG_EXITING = 0"


def on_invpcid(vmcs: Vmcs, insn: Insn, displacement: int) -> str:
    """INVPCID exits on INVLPG exiting (with enable INVPCID; SDM 25.1.3, KVM nested.c)."""
    if _ctl(vmcs, ProcCtl.INVLPG_EXITING):
        vm_exit(ExitReason.INVPCID, displacement, insn=insn,
                instruction_info=insn.instruction_info(reg2=insn.modrm_reg).encode(),
                decided_by="INVLPG_EXITING = 1 and ENABLE_INVPCID = 1")
    return "INVLPG_EXITING = 0"


def on_rdpmc(vmcs: Vmcs, insn: Insn) -> str:
    if _ctl(vmcs, ProcCtl.RDPMC_EXITING):
        vm_exit(ExitReason.RDPMC, insn=insn, decided_by="primary control RDPMC_EXITING = 1")
    return "RDPMC_EXITING = 0"


def on_rdtsc(vmcs: Vmcs, insn: Insn, *, rdtscp: bool) -> str:
    """RDTSC/RDTSCP (Bochs `VMexit_RDTSC`: reason 16 or 51 by opcode)."""
    if _ctl(vmcs, ProcCtl.RDTSC_EXITING):
        vm_exit(ExitReason.RDTSCP if rdtscp else ExitReason.RDTSC, insn=insn,
                decided_by="primary control RDTSC_EXITING = 1")
    return "RDTSC_EXITING = 0: the guest reads the offset/scaled TSC"


def on_monitor(vmcs: Vmcs, insn: Insn) -> str:
    if _ctl(vmcs, ProcCtl.MONITOR_EXITING):
        vm_exit(ExitReason.MONITOR_INSTRUCTION, insn=insn,
                decided_by="primary control MONITOR_EXITING = 1")
    return "MONITOR_EXITING = 0"


def on_mwait(vmcs: Vmcs, insn: Insn, armed: bool) -> str:
    """MWAIT: qualification bit 0 = monitor armed (Bochs `VMexit_MWAIT`)."""
    if _ctl(vmcs, ProcCtl.MWAIT_EXITING):
        vm_exit(ExitReason.MWAIT_INSTRUCTION, MwaitQual(armed).encode(), insn=insn,
                decided_by="primary control MWAIT_EXITING = 1")
    return "MWAIT_EXITING = 0"


def on_pause(vmcs: Vmcs, insn: Insn, *, cpl: int, tsc: int, first: int, last: int) -> tuple[str, int, int]:
    """PAUSE exiting, then PAUSE-loop exiting at CPL 0 (Bochs `VMexit_PAUSE`).

    Returns the explanation and the updated (first, last) PAUSE timestamps.
    """
    if _ctl(vmcs, ProcCtl.PAUSE_EXITING):
        vm_exit(ExitReason.PAUSE_INSTRUCTION, insn=insn,
                decided_by="primary control PAUSE_EXITING = 1")
    if _sec(vmcs, Proc2Ctl.PAUSE_LOOP_EXITING) and cpl == 0:
        if tsc - last > vmcs.ple_gap:
            first = tsc
        elif tsc - first > vmcs.ple_window:
            vm_exit(ExitReason.PAUSE_INSTRUCTION, insn=insn,
                    decided_by=f"PAUSE_LOOP_EXITING = 1: loop of {tsc - first} cycles exceeds "
                               f"PLE_Window {vmcs.ple_window} with gaps <= PLE_Gap {vmcs.ple_gap}")
        return "PAUSE_LOOP_EXITING = 1 but the loop is shorter than PLE_Window", first, tsc
    return "PAUSE_EXITING = 0 (and no PAUSE-loop exiting at this CPL)", first, last


def on_wbinvd(vmcs: Vmcs, insn: Insn) -> str:
    if _sec(vmcs, Proc2Ctl.WBINVD_EXITING):
        vm_exit(ExitReason.WBINVD, insn=insn, decided_by="secondary control WBINVD_EXITING = 1")
    return "WBINVD_EXITING = 0"


def on_random(vmcs: Vmcs, insn: Insn, *, seed: bool, dest: Gpr, size: int) -> str:
    """RDRAND/RDSEED: info bits 6:3 destination, 12:11 operand size (Bochs rdrand.cc)."""
    flag, reason = ((Proc2Ctl.RDSEED_EXITING, ExitReason.RDSEED) if seed
                    else (Proc2Ctl.RDRAND_EXITING, ExitReason.RDRAND))
    if _sec(vmcs, flag):
        info = (int(dest) << 3) | {2: 0, 4: 1, 8: 2}[size] << 11
        vm_exit(reason, insn=insn, instruction_info=info,
                decided_by=f"secondary control {flag.name} = 1")
    return f"{flag.name} = 0"


def on_descriptor_table(vmcs: Vmcs, insn: Insn, reason: ExitReason, identity: int,
                        displacement: int) -> str:
    """LGDT/LIDT/SGDT/SIDT (46) and LLDT/LTR/SLDT/STR (47) (Bochs protect_ctrl.cc)."""
    if _sec(vmcs, Proc2Ctl.DESCRIPTOR_TABLE_EXITING):
        info = insn.instruction_info(reg2=identity).encode()
        vm_exit(reason, 0 if insn.register_form else displacement, insn=insn,
                instruction_info=info,
                decided_by="secondary control DESCRIPTOR_TABLE_EXITING = 1")
    return "DESCRIPTOR_TABLE_EXITING = 0"


# -- control registers (spec §4.1) -----------------------------------------------------------

def on_cr_mask_write(vmcs: Vmcs, insn: Insn, cr: int, value: int, current: int,
                     gpr: Gpr) -> tuple[int, str]:
    """MOV to CR0/CR4: exit iff mask & (src ^ shadow) != 0; else merge host-owned bits.

    Returns the value the register takes and why no exit happened (Bochs `VMexit_CR0_Write`).
    """
    sh = vmcs.cr0 if cr == 0 else vmcs.cr4
    diff = sh.mask & (value ^ sh.shadow)
    if diff:
        vm_exit(ExitReason.CR_ACCESS, CrAccessQual(cr, CrAccessType.MOV_TO_CR, gpr).encode(),
                insn=insn, decided_by=f"CR{cr} guest/host mask {sh.mask:#x} & (source {value:#x} "
                                      f"^ read shadow {sh.shadow:#x}) = {diff:#x} != 0")
    merged = (current & sh.mask) | (value & ~sh.mask)
    if sh.mask == 0:
        return merged, f"CR{cr} guest/host mask = 0: the guest owns every bit"
    return merged, (f"CR{cr} mask-owned bits of the source equal the read shadow; host-owned "
                    "bits keep their current value")


def on_cr3_write(vmcs: Vmcs, insn: Insn, value: int, gpr: Gpr) -> str:
    """MOV to CR3 (Bochs `VMexit_CR3_Write`): only the first `count` targets count."""
    if not _ctl(vmcs, ProcCtl.CR3_LOAD_EXITING):
        return "CR3_LOAD_EXITING = 0"
    targets = vmcs.cr3_targets[:vmcs.cr3_target_count]
    if value in targets:
        return (f"CR3_LOAD_EXITING = 1 but {value:#x} is CR3-target value "
                f"{targets.index(value)} (count {vmcs.cr3_target_count})")
    vm_exit(ExitReason.CR_ACCESS, CrAccessQual(3, CrAccessType.MOV_TO_CR, gpr).encode(),
            insn=insn, decided_by=f"CR3_LOAD_EXITING = 1 and {value:#x} is not among the first "
                                  f"{vmcs.cr3_target_count} CR3-target values")


def on_cr_read(vmcs: Vmcs, insn: Insn, cr: int, gpr: Gpr) -> str:
    """MOV from CR3/CR8 (Bochs `VMexit_CR3_Read`/`VMexit_CR8_Read`)."""
    flag = ProcCtl.CR3_STORE_EXITING if cr == 3 else ProcCtl.CR8_STORE_EXITING
    if _ctl(vmcs, flag):
        vm_exit(ExitReason.CR_ACCESS, CrAccessQual(cr, CrAccessType.MOV_FROM_CR, gpr).encode(),
                insn=insn, decided_by=f"primary control {flag.name} = 1")
    return f"{flag.name} = 0"


def on_cr8_write(vmcs: Vmcs, insn: Insn, gpr: Gpr) -> str:
    if _ctl(vmcs, ProcCtl.CR8_LOAD_EXITING):
        vm_exit(ExitReason.CR_ACCESS, CrAccessQual(8, CrAccessType.MOV_TO_CR, gpr).encode(),
                insn=insn, decided_by="primary control CR8_LOAD_EXITING = 1")
    return "CR8_LOAD_EXITING = 0"


def on_clts(vmcs: Vmcs, insn: Insn) -> tuple[bool, str]:
    """CLTS exits iff mask.TS & shadow.TS; returns whether CR0.TS is cleared (Bochs)."""
    mask_ts, shadow_ts = vmcs.cr0.mask & Cr0.TS, vmcs.cr0.shadow & Cr0.TS
    if mask_ts and shadow_ts:
        vm_exit(ExitReason.CR_ACCESS, CrAccessQual(0, CrAccessType.CLTS).encode(), insn=insn,
                decided_by="CR0 mask.TS = 1 and read shadow.TS = 1")
    if mask_ts:
        return False, "CR0 mask.TS = 1, shadow.TS = 0: no exit and CR0.TS is not cleared"
    return True, "CR0 mask.TS = 0: the guest owns TS"


def on_lmsw(vmcs: Vmcs, insn: Insn, msw: int, current_cr0: int,
            linear: int | None) -> tuple[int, str]:
    """LMSW touches bits 3:0 and never clears PE (SDM 25.1.3; Bochs `VMexit_LMSW`)."""
    mask = vmcs.cr0.mask & 0xF
    shadow = vmcs.cr0.shadow
    if (mask & msw & 1 and not shadow & 1) or (mask & shadow & 0xE) != (mask & msw & 0xE):
        qual = CrAccessQual(0, CrAccessType.LMSW, lmsw_memory=linear is not None,
                            lmsw_data=msw & 0xFFFF)
        vm_exit(ExitReason.CR_ACCESS, qual.encode(), insn=insn, guest_linear_address=linear,
                decided_by=f"LMSW source {msw & 0xF:#x} changes CR0 bits owned by mask {mask:#x}")
    new_low = (current_cr0 & mask) | (msw & ~mask & 0xF)
    new_low |= current_cr0 & 1          # LMSW cannot clear PE
    return (current_cr0 & ~0xF) | (new_low & 0xF), "LMSW changes no host-owned CR0 bit"


def on_dr_access(vmcs: Vmcs, insn: Insn, dr: int, gpr: Gpr, *, read: bool) -> str:
    """MOV DR (Bochs `VMexit_DR_Access`, checked before the CPL/CR4.DE/DR7.GD faults)."""
    if _ctl(vmcs, ProcCtl.MOV_DR_EXITING):
        qual = DrAccessQual(dr, DrDirection.MOV_FROM_DR if read else DrDirection.MOV_TO_DR, gpr)
        vm_exit(ExitReason.DR_ACCESS, qual.encode(), insn=insn,
                decided_by="primary control MOV_DR_EXITING = 1")
    return "MOV_DR_EXITING = 0"


# -- I/O (spec §4.2) and MSRs (spec §4.3) ----------------------------------------------------

def on_io(vmcs: Vmcs, insn: Insn, *, port: int, size: int, is_in: bool, string: bool = False,
          rep: bool = False, immediate: bool = False, linear: int | None = None,
          info: int | None = None) -> str:
    """IN/OUT/INS/OUTS (Bochs `VMexit_IO`; KVM `nested_vmx_check_io_bitmaps`)."""
    qual = IoQual(size, IoDirection.IN if is_in else IoDirection.OUT, port, string, rep,
                  immediate).encode()
    ports = f"{port:#x}" if size == 1 else f"{port:#x}-{port + size - 1:#x}"
    if ProcCtl.USE_IO_BITMAPS in vmcs.proc:
        if port + size > 0x10000:
            vm_exit(ExitReason.IO_INSTRUCTION, qual, insn=insn, guest_linear_address=linear,
                    instruction_info=info,
                    decided_by=f"use I/O bitmaps = 1 and a {size}-byte access at {port:#x} "
                               "wraps past 0xffff (always exits)")
        refs = tuple(vmcs.io_bitmaps.ref(p) for p in range(port, port + size))
        hit = [r for r in refs if r.value]
        if hit:
            vm_exit(ExitReason.IO_INSTRUCTION, qual, insn=insn, guest_linear_address=linear,
                    instruction_info=info, bits=refs,
                    decided_by=f"use I/O bitmaps = 1 and {hit[0]} (port "
                               f"{port + refs.index(hit[0]):#x} of {ports})")
        return (f"use I/O bitmaps = 1 and the bits for ports {ports} are clear "
                "(unconditional I/O exiting is ignored)")
    if ProcCtl.UNCONDITIONAL_IO_EXITING in vmcs.proc:
        vm_exit(ExitReason.IO_INSTRUCTION, qual, insn=insn, guest_linear_address=linear,
                instruction_info=info,
                decided_by="use I/O bitmaps = 0 and UNCONDITIONAL_IO_EXITING = 1")
    return "use I/O bitmaps = 0 and UNCONDITIONAL_IO_EXITING = 0: the access reaches the port"


def on_msr(vmcs: Vmcs, insn: Insn, msr: int, *, write: bool) -> str:
    """RDMSR/WRMSR: the bitmap check precedes the "MSR exists" #GP (Bochs `VMexit_MSR`)."""
    reason = ExitReason.MSR_WRITE if write else ExitReason.MSR_READ
    if ProcCtl.USE_MSR_BITMAPS not in vmcs.proc:
        vm_exit(reason, 0, insn=insn, decided_by="use MSR bitmaps = 0: every RDMSR/WRMSR exits")
    ref = vmcs.msr_bitmap.ref(msr, write)
    if ref is None:
        vm_exit(reason, 0, insn=insn,
                decided_by=f"ECX {msr:#x} is outside both MSR-bitmap ranges (always exits)")
    if ref.value:
        vm_exit(reason, 0, insn=insn, bits=(ref,), decided_by=f"use MSR bitmaps = 1 and {ref}")
    return f"use MSR bitmaps = 1 and {ref}"
