"""x86-64 decoding of guest instructions with capstone, from hex bytes or an objdump listing.

The simulator runs the listed instructions straight through, one after the other, each at its
own address; branches are decoded but not followed (a listing is a trace, not a program).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

import capstone
from capstone import x86 as cs_x86

from .errors import VmxInputError
from .qualification import AddressSize, InstructionInfo
from .registers import REGISTER_NAMES, SegReg

_INTEL = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
_INTEL.detail = True
_ATT = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
_ATT.syntax = capstone.CS_OPT_SYNTAX_ATT

_SEGMENTS = {"es": SegReg.ES, "cs": SegReg.CS, "ss": SegReg.SS, "ds": SegReg.DS,
             "fs": SegReg.FS, "gs": SegReg.GS}
MAX_INSN_LEN = 15


class OperandKind(enum.Enum):
    REG = "reg"
    IMM = "imm"
    MEM = "mem"


class Access(enum.IntFlag):
    """Operand access as capstone reports it (CS_AC_READ / CS_AC_WRITE)."""

    NONE = 0
    READ = 1
    WRITE = 2


@dataclass(frozen=True, slots=True)
class MemOperand:
    """A memory operand: segment override, base, index, scale and displacement."""

    segment: SegReg | None
    base: str | None
    index: str | None
    scale: int
    disp: int


@dataclass(frozen=True, slots=True)
class Operand:
    """One decoded operand (register name, immediate, or memory reference)."""

    kind: OperandKind
    size: int
    access: Access
    reg: str | None = None
    imm: int | None = None
    mem: MemOperand | None = None


@dataclass(frozen=True, slots=True)
class Insn:
    """A decoded instruction with the encoding details exit qualifications need."""

    address: int
    raw: bytes
    mnemonic: str
    op_str: str
    att: str
    operands: tuple[Operand, ...]
    prefixes: tuple[int, ...]
    rex: int
    modrm: int
    addr_size: int
    listing_text: str | None = None
    line: int | None = None

    @property
    def length(self) -> int:
        return len(self.raw)

    @property
    def next_rip(self) -> int:
        return self.address + len(self.raw)

    @property
    def base_mnemonic(self) -> str:
        """The mnemonic without `rep`/`repe`/`repne`/`lock` prefixes."""
        return self.mnemonic.split()[-1]

    @property
    def has_rep(self) -> bool:
        return self.mnemonic.startswith("rep")

    @property
    def modrm_reg(self) -> int:
        """ModRM.reg extended by REX.R (the CR/DR number of MOV CR/DR)."""
        return (self.modrm >> 3 & 7) | (self.rex >> 2 & 1) << 3

    @property
    def modrm_rm(self) -> int:
        """ModRM.rm extended by REX.B (the GPR of MOV CR/DR; `mod` is ignored)."""
        return (self.modrm & 7) | (self.rex & 1) << 3

    @property
    def register_form(self) -> bool:
        return self.modrm >> 6 == 3

    def mem_operand(self) -> Operand | None:
        return next((op for op in self.operands if op.kind is OperandKind.MEM), None)

    def text(self) -> str:
        return self.att

    def instruction_info(self, *, reg2: int = 0, operand_size: int = 0) -> InstructionInfo:
        """The generic instruction-information encoding (Bochs `gen_instruction_info`)."""
        mem = self.mem_operand()
        asize = {2: AddressSize.BITS16, 4: AddressSize.BITS32}.get(self.addr_size,
                                                                  AddressSize.BITS64)
        if mem is None or mem.mem is None:
            # Register form: reg1 and bit 10 only; address size is undefined (Bochs).
            return InstructionInfo(reg1=self.modrm_rm, address_size=AddressSize.BITS16,
                                   register_operand=True, operand_size=operand_size,
                                   index_invalid=False, base_invalid=False, reg2=reg2)
        m = mem.mem
        base = REGISTER_NAMES.get(m.base or "")
        index = REGISTER_NAMES.get(m.index or "")
        return InstructionInfo(
            scale={1: 0, 2: 1, 4: 2, 8: 3}.get(m.scale, 0), address_size=asize,
            operand_size=operand_size, segment=effective_segment(m),
            index=int(index.gpr) if index else 0, index_invalid=index is None,
            base=int(base.gpr) if base else 0, base_invalid=base is None, reg2=reg2)


def effective_segment(mem: MemOperand) -> SegReg:
    """The segment of a memory operand: the override, else SS for RSP/RBP bases, else DS."""
    if mem.segment is not None:
        return mem.segment
    base = REGISTER_NAMES.get(mem.base or "")
    if base is not None and base.gpr in (4, 5):
        return SegReg.SS
    return SegReg.DS


def normalise_att(text: str) -> str:
    """AT&T text with immediates in hex and single spaces (capstone prints big ones in decimal)."""
    def hexify(m: re.Match[str]) -> str:
        return f"${int(m.group(1), 0):#x}"
    return " ".join(re.sub(r"\$(0x[0-9a-fA-F]+|[0-9]+)\b", hexify, text).split())


def _operands(ci: capstone.CsInsn) -> tuple[Operand, ...]:
    out = []
    for op in ci.operands:
        access = Access(op.access & 3)
        if op.type == cs_x86.X86_OP_REG:
            out.append(Operand(OperandKind.REG, op.size, access, reg=ci.reg_name(op.reg)))
        elif op.type == cs_x86.X86_OP_IMM:
            out.append(Operand(OperandKind.IMM, op.size, access, imm=op.imm))
        elif op.type == cs_x86.X86_OP_MEM:
            seg = _SEGMENTS.get(ci.reg_name(op.mem.segment)) if op.mem.segment else None
            mem = MemOperand(seg, ci.reg_name(op.mem.base) if op.mem.base else None,
                             ci.reg_name(op.mem.index) if op.mem.index else None,
                             op.mem.scale, op.mem.disp)
            out.append(Operand(OperandKind.MEM, op.size, access, mem=mem))
    return tuple(out)


def decode_one(data: bytes, address: int, *, listing_text: str | None = None,
               line: int | None = None) -> Insn | None:
    """Decode the first instruction of `data`, or None when the bytes are not one."""
    ci = next(_INTEL.disasm(data[:MAX_INSN_LEN], address), None)
    if ci is None:
        return None
    att = next(_ATT.disasm(bytes(ci.bytes), address), None)
    att_text = normalise_att(f"{att.mnemonic} {att.op_str}") if att else ci.mnemonic
    return Insn(address, bytes(ci.bytes), ci.mnemonic, ci.op_str, att_text, _operands(ci),
                tuple(ci.prefix), ci.rex, ci.modrm, ci.addr_size, listing_text, line)


def parse_hex(text: str) -> bytes:
    """Bytes from hex text: `0f 30`, `0f30`, `0x0f,0x30` and `\\x0f\\x30` are all accepted.

    Raises:
        VmxInputError: the text is not an even number of hex digits.
    """
    cleaned = re.sub(r"0x|\\x|[\s,:]", "", text.strip(), flags=re.IGNORECASE)
    if not cleaned or not re.fullmatch(r"[0-9a-fA-F]+", cleaned) or len(cleaned) % 2:
        raise VmxInputError(f"--bytes: expected pairs of hex digits such as '0f 30', got {text!r}")
    return bytes.fromhex(cleaned)


def decode_bytes(data: bytes, address: int = 0x1000) -> list[Insn]:
    """Decode a run of instruction bytes placed at `address`.

    Raises:
        VmxInputError: some bytes do not decode as a complete x86-64 instruction.
    """
    out: list[Insn] = []
    offset = 0
    while offset < len(data):
        insn = decode_one(data[offset:], address + offset)
        if insn is None:
            rest = data[offset:offset + MAX_INSN_LEN].hex(" ")
            raise VmxInputError(f"bytes at offset {offset} ({rest}) are not a complete x86-64 "
                                "instruction")
        out.append(insn)
        offset += insn.length
    return out


_LINE = re.compile(r"^\s*([0-9a-fA-F]+):\s*(.*)$")
_HEXBYTE = re.compile(r"^[0-9a-fA-F]{2}$")


def _normalise_mnemonic(text: str) -> str:
    word = text.split()[0].lower() if text.split() else ""
    return word.rstrip("qlwb") if len(word) > 3 else word


def parse_listing(text: str, filename: str = "<listing>") -> list[Insn]:
    """Decode an objdump-style listing (`701: 55   push %rbp`).

    Lines that are not `address: bytes [text]` are skipped; a line with bytes and no text
    continues the previous instruction (objdump wraps long encodings). Each instruction's bytes
    must decode to exactly one instruction.

    Raises:
        VmxInputError: file:line, the bytes, and what they decode to instead.
    """
    entries: list[list] = []  # [line, address, bytes, text]
    for lineno, raw_line in enumerate(text.splitlines(), start=1):
        m = _LINE.match(raw_line.replace("\t", " "))
        if not m:
            continue
        tokens = m.group(2).split()
        nbytes = 0
        while nbytes < len(tokens) and _HEXBYTE.match(tokens[nbytes]):
            nbytes += 1
        if nbytes == 0:
            continue
        data = bytes.fromhex("".join(tokens[:nbytes]))
        asm = " ".join(tokens[nbytes:])
        if not asm and entries:
            entries[-1][2] += data
            continue
        entries.append([lineno, int(m.group(1), 16), data, asm])
    if not entries:
        raise VmxInputError(f"{filename}: no 'address: bytes instruction' lines found")
    out: list[Insn] = []
    for lineno, address, data, asm in entries:
        insn = decode_one(data, address, listing_text=asm or None, line=lineno)
        where = f"{filename}:{lineno}"
        if insn is None:
            raise VmxInputError(f"{where}: bytes '{data.hex(' ')}' are not a complete x86-64 "
                                f"instruction (listing says '{asm}'); check for a missing byte")
        if insn.length != len(data):
            raise VmxInputError(
                f"{where}: bytes '{data.hex(' ')}' decode to '{insn.att}' ({insn.length} bytes) "
                f"plus {len(data) - insn.length} stray byte(s), not one instruction "
                f"(listing says '{asm}'); check the listing for a misprinted byte")
        out.append(insn)
    return out


def listing_mismatch(insn: Insn) -> str | None:
    """A note when the listing's mnemonic differs from what the bytes decode to."""
    if not insn.listing_text:
        return None
    listed = _normalise_mnemonic(insn.listing_text)
    decoded = _normalise_mnemonic(insn.att.split()[-1] if insn.att.startswith("rep") else insn.att)
    if listed and decoded and listed != decoded and not insn.att.startswith(listed):
        return f"listing says '{insn.listing_text}' but the bytes decode to '{insn.att}'"
    return None
