"""The VMCS as a frozen record: controls, bitmaps, shadows, TSC fields, EPT and MSR areas.

Only the fields that decide exits or that VM entry and exit use are modelled (SDM ch. 24; spec
§2). The VMM changes the VMCS by building a new record (`dataclasses.replace`), as KVM rewrites
fields with VMWRITE between exits.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .bitmaps import IoBitmaps, MsrBitmap
from .controls import Cr0, Cr4, EntryCtl, ExitCtl, PinCtl, ProcCtl, Proc2Ctl

TSC_MULTIPLIER_ONE = 1 << 48   # 16.48 fixed point (spec §4.4)


class EptAccess(enum.IntFlag):
    """EPT entry permission bits 2:0 (SDM 28.3.2)."""

    NONE = 0
    R = 1
    W = 2
    X = 4


class EptMemoryType(enum.IntEnum):
    """EPT memory types (bits 5:3 of a leaf; bits 2:0 of the EPTP)."""

    UC = 0
    WC = 1
    WT = 4
    WP = 5
    WB = 6


@dataclass(frozen=True, slots=True)
class EptRange:
    """A guest-physical range the VMM maps at VM entry (`access` NONE leaves it absent).

    `memory_type` is a raw 3-bit value so that illegal types (2, 3, 7) can be described to
    provoke an EPT misconfiguration (spec §4.6).
    """

    guest_physical: int
    size: int
    host_physical: int
    access: EptAccess = EptAccess.R | EptAccess.W | EptAccess.X
    memory_type: int = EptMemoryType.WB


@dataclass(frozen=True, slots=True)
class MmioRange:
    """A device range the VMM maps with deliberately misconfigured entries (KVM's MMIO SPTEs).

    `fast` marks an ioeventfd-style doorbell completed in the kernel (KVM_FAST_MMIO_BUS).
    """

    guest_physical: int
    size: int
    name: str
    fast: bool = False


@dataclass(frozen=True, slots=True)
class Memslot:
    """Guest RAM backed by the VMM: guest-physical range and its host-physical base."""

    guest_physical: int
    size: int
    host_physical: int


@dataclass(frozen=True, slots=True)
class EptConfig:
    """EPTP attributes plus the VMM's description of the EPT paging structures.

    With no `ranges` and no `memslots`, the simulator identity-maps the first 64 GiB RWX.
    """

    memory_type: int = EptMemoryType.WB
    walk_length: int = 4
    accessed_dirty: bool = False
    ranges: tuple[EptRange, ...] = ()
    mmio: tuple[MmioRange, ...] = ()
    memslots: tuple[Memslot, ...] = ()
    map_on_demand: bool = True


@dataclass(frozen=True, slots=True)
class CrShadowing:
    """A guest/host mask and read shadow pair (CR0 at 0x6000/0x6004, CR4 at 0x6002/0x6006)."""

    mask: int = 0
    shadow: int = 0


@dataclass(frozen=True, slots=True)
class MsrEntry:
    """One 16-byte entry of an MSR-load area: u32 index, u32 reserved, u64 data (SDM 24.7.2)."""

    index: int
    value: int = 0


@dataclass(frozen=True, slots=True)
class MsrAreas:
    """The VM-exit MSR-store, VM-exit MSR-load and VM-entry MSR-load areas."""

    exit_store: tuple[int, ...] = ()
    exit_load: tuple[MsrEntry, ...] = ()
    entry_load: tuple[MsrEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class HostState:
    """The host-state area fields VM exit loads (SDM 24.5)."""

    cr0: int = int(Cr0.PE | Cr0.MP | Cr0.ET | Cr0.NE | Cr0.WP | Cr0.PG)
    cr3: int = 0x1000
    cr4: int = int(Cr4.PAE | Cr4.PGE | Cr4.OSFXSR | Cr4.OSXMMEXCPT | Cr4.VMXE | Cr4.OSXSAVE)
    rip: int = 0xFFFFFFFF81000000
    rsp: int = 0xFFFFC90000004000
    efer: int = 0xD01


@dataclass(frozen=True, slots=True)
class VmxCapabilities:
    """What the simulated processor reports in its IA32_VMX_* capability MSRs.

    Attributes:
        ept_execute_only: IA32_VMX_EPT_VPID_CAP bit 0 (X-only EPT entries allowed).
        ept_accessed_dirty: bit 21 (EPTP bit 6 may be set).
        ept_advanced_exit_info: bit 22 (EPT-violation qualification bits 9-11).
        pages_1g: bit 17 (1-GiB EPT pages).
        maxphyaddr: CPUID.80000008H:EAX[7:0].
        preemption_timer_rate: IA32_VMX_MISC[4:0] (timer ticks at TSC >> rate).
        cr3_target_max: IA32_VMX_MISC[24:16].
    """

    ept_execute_only: bool = True
    ept_accessed_dirty: bool = True
    ept_advanced_exit_info: bool = False
    pages_1g: bool = True
    maxphyaddr: int = 46
    preemption_timer_rate: int = 5
    cr3_target_max: int = 4


@dataclass(frozen=True, slots=True)
class Vmcs:
    """The virtual-machine control structure, as far as exits and transitions need it."""

    name: str = "vmcs"
    pin: PinCtl = PinCtl(0)
    proc: ProcCtl = ProcCtl(0)
    proc2: Proc2Ctl = Proc2Ctl(0)
    exit_ctl: ExitCtl = ExitCtl.HOST_ADDRESS_SPACE_SIZE
    entry_ctl: EntryCtl = EntryCtl.IA32E_MODE_GUEST
    exception_bitmap: int = 0
    pfec_mask: int = 0
    pfec_match: int = 0
    io_bitmaps: IoBitmaps = field(default_factory=IoBitmaps)
    msr_bitmap: MsrBitmap = field(default_factory=MsrBitmap)
    cr0: CrShadowing = CrShadowing()
    cr4: CrShadowing = CrShadowing()
    cr3_target_count: int = 0
    cr3_targets: tuple[int, ...] = ()
    tsc_offset: int = 0
    tsc_multiplier: int = TSC_MULTIPLIER_ONE
    preemption_timer: int = 0
    tpr_threshold: int = 0
    ple_gap: int = 128
    ple_window: int = 4096
    vpid: int = 1
    eoi_exit_vectors: frozenset[int] = frozenset()
    ept: EptConfig = EptConfig()
    msr_areas: MsrAreas = MsrAreas()
    host: HostState = HostState()
    caps: VmxCapabilities = VmxCapabilities()
    hypervisor_signature: str = "KVMKVMKVM\0\0\0"
    source: str = ""

    @property
    def secondary(self) -> Proc2Ctl:
        """Secondary controls in effect: all 0 unless primary bit 31 is set (SDM 24.6.2)."""
        if ProcCtl.ACTIVATE_SECONDARY_CONTROLS in self.proc:
            return self.proc2
        return Proc2Ctl(0)

    def ept_enabled(self) -> bool:
        return Proc2Ctl.ENABLE_EPT in self.secondary

    def vpid_enabled(self) -> bool:
        return Proc2Ctl.ENABLE_VPID in self.secondary

    def eptp(self, pml4_address: int) -> int:
        """The EPT pointer: 2:0 memory type, 5:3 walk length-1, 6 A/D enable (SDM 24.6.11)."""
        return (pml4_address | (self.ept.memory_type & 7) | ((self.ept.walk_length - 1) & 7) << 3
                | self.ept.accessed_dirty << 6)

    def exception_intercepted(self, vector: int) -> bool:
        """Bit `vector` of the exception bitmap (for #PF see `faults.pf_exits`)."""
        return bool(self.exception_bitmap >> vector & 1)
