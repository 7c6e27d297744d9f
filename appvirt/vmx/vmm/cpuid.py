"""CPUID as a VMM answers it: the host's values, filtered (KVM `kvm_emulate_cpuid`).

The VMM runs the leaf on the host, then hides what it does not virtualize: VMX (no nested
virtualization) and SMX, MONITOR/MWAIT (KVM hides them), sets the "hypervisor present" bit, and
answers the hypervisor leaves 0x40000000+ with its signature (Intel SDM Vol. 2A CPUID; Linux
arch/x86/kvm/cpuid.c).
"""

from __future__ import annotations

from dataclasses import dataclass

# A plausible host: a 64-bit Intel core with VMX, SMX, MONITOR, RDRAND, RDSEED, XSAVE.
HOST_CPUID: dict[tuple[int, int], tuple[int, int, int, int]] = {
    (0x0, 0): (0x20, 0x756E6547, 0x6C65746E, 0x49656E69),          # "GenuineIntel"
    (0x1, 0): (0x000806F8, 0x00100800, 0x7FFEFBFF, 0xBFEBFBFF),
    (0x7, 0): (0x2, 0xF3BFBFFB, 0x1BC1FF6E, 0xFC184410),
    (0xD, 0): (0x2E7, 0xA88, 0x2E8, 0x0),
    (0x80000000, 0): (0x80000008, 0, 0, 0),
    (0x80000001, 0): (0, 0, 0x121, 0x2C100800),
    (0x80000008, 0): (0x302E, 0, 0, 0),
}

ECX1_VMX = 1 << 5
ECX1_SMX = 1 << 6
ECX1_MONITOR = 1 << 3
ECX1_HYPERVISOR = 1 << 31


@dataclass(frozen=True, slots=True)
class CpuidAnswer:
    """The four registers a CPUID leaf returns, with what the VMM changed."""

    eax: int
    ebx: int
    ecx: int
    edx: int
    changes: tuple[str, ...]


def _regs(text: str) -> tuple[int, int, int]:
    raw = text.encode().ljust(12, b"\0")[:12]
    return tuple(int.from_bytes(raw[i:i + 4], "little") for i in (0, 4, 8))  # type: ignore[return-value]


def emulate_cpuid(leaf: int, subleaf: int, signature: str) -> CpuidAnswer:
    """Answer CPUID(leaf, subleaf) for the guest."""
    if 0x40000000 <= leaf <= 0x400000FF:
        if leaf == 0x40000000:
            ebx, ecx, edx = _regs(signature)
            return CpuidAnswer(0x40000001, ebx, ecx, edx,
                               (f"hypervisor leaf: signature {signature.rstrip(chr(0))!r}",))
        return CpuidAnswer(0, 0, 0, 0, ("hypervisor feature leaf: no paravirtual features",))
    key = (leaf, subleaf if leaf in (0x7, 0xD) else 0)
    eax, ebx, ecx, edx = HOST_CPUID.get(key, (0, 0, 0, 0))
    changes: list[str] = []
    if key not in HOST_CPUID:
        changes.append("leaf not in the host model: all zero")
    if leaf == 1:
        ecx = (ecx & ~(ECX1_VMX | ECX1_SMX | ECX1_MONITOR)) | ECX1_HYPERVISOR
        changes += ["VMX hidden (no nested virtualization)", "SMX hidden",
                    "MONITOR/MWAIT hidden", "hypervisor-present bit 31 of ECX set"]
    return CpuidAnswer(eax, ebx, ecx, edx, tuple(changes))
