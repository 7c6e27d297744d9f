"""Which exits an instruction *can* cause under some VMCS (the seed quiz's "exit possible?").

A static reading of spec §3/§4 per instruction, independent of any VMCS: the instruction's own
exit conditions, those of its memory accesses, and the ones every instruction shares (fetch and
boundary events), which are listed separately so that "possible: no" keeps its quiz meaning.
"""

from __future__ import annotations

from dataclasses import dataclass

from .decoder import Insn

ALWAYS = ("instruction fetch: #PF (0) through the exception bitmap or EPT violation/"
          "misconfiguration (48/49) if the code page is not mapped",
          "at the boundary: MTF (37), preemption timer (52), NMI window (8), NMI (0), interrupt "
          "window (7), external interrupt (1)")

_RULES: dict[str, str] = {
    "cpuid": "CPUID (10): always, at any CPL",
    "getsec": "GETSEC (11): always, unless CR4.SMXE = 0 (#UD instead)",
    "invd": "INVD (13): always at CPL 0 (#GP at CPL > 0, no exit)",
    "xsetbv": "XSETBV (55): always, at any CPL, unless CR4.OSXSAVE = 0 (#UD first)",
    "vmcall": "VMCALL (18): always",
    "vmfunc": "VMFUNC (59): when VM functions are enabled (else #UD)",
    "hlt": "HLT (12) if 'HLT exiting' = 1 (CPL > 0: #GP, no exit)",
    "invlpg": "INVLPG (14) if 'INVLPG exiting' = 1; qualification = linear address",
    "invpcid": "INVPCID (58) if 'INVLPG exiting' = 1 and 'enable INVPCID' = 1 (#UD if not enabled)",
    "rdpmc": "RDPMC (15) if 'RDPMC exiting' = 1",
    "rdtsc": "RDTSC (16) if 'RDTSC exiting' = 1; otherwise the offset/scaled TSC",
    "rdtscp": "RDTSCP (51) if 'RDTSC exiting' = 1; #UD first if 'enable RDTSCP' = 0",
    "monitor": "MONITOR (39) if 'MONITOR exiting' = 1 (#UD at CPL != 0)",
    "mwait": "MWAIT (36) if 'MWAIT exiting' = 1 (#UD at CPL != 0)",
    "pause": "PAUSE (40) if 'PAUSE exiting' = 1, or PAUSE-loop exiting at CPL 0",
    "wbinvd": "WBINVD (54) if 'WBINVD exiting' = 1",
    "wbnoinvd": "WBINVD (54) if 'WBINVD exiting' = 1",
    "rdrand": "RDRAND (57) if 'RDRAND exiting' = 1",
    "rdseed": "RDSEED (61) if 'RDSEED exiting' = 1",
    "clts": "CR_ACCESS (28) if CR0 mask.TS = 1 and read shadow.TS = 1",
    "lmsw": "CR_ACCESS (28) if LMSW changes a CR0 bit 3:0 owned by the guest/host mask",
    "smsw": "never by itself: SMSW reads the CR0 read shadow",
    "in": "IO_INSTRUCTION (30): 'use I/O bitmaps' = 1 and a covered port bit set (or wraparound), "
          "else 'unconditional I/O exiting' = 1; #GP first if CPL > IOPL and the TSS denies",
    "rdmsr": "MSR_READ (31): 'use MSR bitmaps' = 0, ECX outside both ranges, or ECX's read-bitmap "
             "bit set (CPL > 0: #GP, no exit)",
    "wrmsr": "MSR_WRITE (32): 'use MSR bitmaps' = 0, ECX outside both ranges, or ECX's "
             "write-bitmap bit set (CPL > 0: #GP, no exit)",
    "int3": "EXCEPTION_NMI (0) if exception-bitmap bit 3 (#BP)",
    "ud2": "EXCEPTION_NMI (0) if exception-bitmap bit 6 (#UD)",
    "int": "never by itself: software INT n does not exit (only faults during its delivery)",
}
for _name in ("out", "insb", "insw", "insd", "outsb", "outsw", "outsd"):
    _RULES[_name] = _RULES["in"]
for _name in ("vmclear", "vmlaunch", "vmptrld", "vmptrst", "vmread", "vmresume", "vmwrite",
              "vmxoff", "vmxon", "invept", "invvpid"):
    _RULES[_name] = f"{_name.upper()}: always (VMX instruction; VMREAD/VMWRITE may be shadowed)"
for _name in ("lgdt", "lidt", "sgdt", "sidt"):
    _RULES[_name] = "GDTR_IDTR (46) if 'descriptor-table exiting' = 1"
for _name in ("lldt", "ltr", "sldt", "str"):
    _RULES[_name] = "LDTR_TR (47) if 'descriptor-table exiting' = 1"

_STACK_WRITE = frozenset({"push", "pushfq", "call"})
_STACK_READ = frozenset({"pop", "popfq", "ret", "leave"})


@dataclass(frozen=True, slots=True)
class PossibleExits:
    """Exit conditions of one instruction under *some* VMCS."""

    own: tuple[str, ...]
    memory: tuple[str, ...]
    always: tuple[str, ...] = ALWAYS

    @property
    def possible(self) -> bool:
        """The quiz's "exit possible": by the instruction itself or its data accesses."""
        return bool(self.own or self.memory)


def _cr_rule(insn: Insn) -> str:
    to_cr = insn.raw[-2] in (0x22, 0x23)
    if insn.raw[-2] in (0x21, 0x23):
        return "DR_ACCESS (29) if 'MOV-DR exiting' = 1 (checked before the CPL #GP, per Bochs)"
    cr = insn.modrm_reg
    if not to_cr:
        if cr in (0, 4):
            return ""
        if cr == 3:
            return "CR_ACCESS (28) if 'CR3-store exiting' = 1"
        if cr == 8:
            return "CR_ACCESS (28) if 'CR8-store exiting' = 1"
        return ""
    if cr in (0, 4):
        return (f"CR_ACCESS (28) if the CR{cr} guest/host mask has a bit where the source "
                "differs from the read shadow")
    if cr == 3:
        return ("CR_ACCESS (28) if 'CR3-load exiting' = 1 and the value is not one of the first "
                "CR3-target-count targets (count 0: every write exits)")
    if cr == 8:
        return "CR_ACCESS (28) if 'CR8-load exiting' = 1; with TPR shadow, TPR below threshold (43)"
    return ""


def possible_exits(insn: Insn) -> PossibleExits:
    """The exit conditions of `insn` (spec §3, §4.5-§4.7)."""
    m = insn.base_mnemonic
    own: list[str] = []
    memory: list[str] = []
    if m == "mov" and len(insn.raw) >= 3 and insn.raw[-3] == 0x0F and insn.raw[-2] in (0x20, 0x21, 0x22, 0x23):
        rule = _cr_rule(insn)
        if rule:
            own.append(rule)
    elif m in _RULES and not _RULES[m].startswith("never"):
        own.append(_RULES[m])
    mem = insn.mem_operand()
    lea_like = m in ("lea", "invlpg", "nop") or m.startswith("prefetch")
    accesses = []
    if mem is not None and not lea_like:
        accesses.append("memory operand")
    if m in _STACK_WRITE:
        accesses.append("stack write")
    if m in _STACK_READ:
        accesses.append("stack read")
    if m.startswith(("movs", "stos", "lods", "ins", "outs")) and "memory operand" not in accesses:
        accesses.append("string operand")
    for what in accesses:
        memory.append(f"{what}: #PF (0) if the page is not present or protected and the "
                      "exception bitmap bit 14 / PFEC mask-match select it")
        memory.append(f"{what}: EPT violation (48) or misconfiguration (49) for its "
                      "guest-physical address or for a guest page-table entry on the walk")
    return PossibleExits(tuple(own), tuple(memory))
