"""Sparse physical memories and the builders that lay out paging structures in them.

Two memories exist: the guest's (indexed by guest-physical address, holding the guest's page
tables and data) and the host's (holding the EPT paging structures). Guest data is kept by GPA;
the GPA->HPA mapping decides only which host address is reported and cached, so two GPAs aliasing
one host page are not modelled.

Entry formats: IA-32e paging (SDM Vol. 3A 4.5, Tables 4-14..4-20) and EPT (SDM 28.3.2).
"""

from __future__ import annotations

from dataclasses import dataclass

from .vmcs import EptAccess, EptConfig, EptRange, Memslot, MmioRange, VmxCapabilities

PAGE_4K = 1 << 12
PAGE_2M = 1 << 21
PAGE_1G = 1 << 30
ADDR_MASK = 0x000F_FFFF_FFFF_F000

# IA-32e paging entry bits.
PTE_P = 1 << 0
PTE_RW = 1 << 1
PTE_US = 1 << 2
PTE_A = 1 << 5
PTE_D = 1 << 6
PTE_PS = 1 << 7
PTE_NX = 1 << 63

# EPT entry bits.
EPT_PS = 1 << 7
EPT_A = 1 << 8
EPT_D = 1 << 9
EPT_SUPPRESS_VE = 1 << 63

EPT_TABLES_BASE = 0x3F00_0000_0000     # host-physical home of the EPT structures


class PhysicalMemory:
    """Byte-addressed sparse memory; unwritten bytes read as zero (fresh RAM)."""

    def __init__(self) -> None:
        self._pages: dict[int, bytearray] = {}

    def read(self, address: int, size: int) -> int:
        return int.from_bytes(self.read_bytes(address, size), "little")

    def read_bytes(self, address: int, size: int) -> bytes:
        out = bytearray()
        while size:
            page, offset = address & ~0xFFF, address & 0xFFF
            chunk = min(size, PAGE_4K - offset)
            data = self._pages.get(page)
            out += data[offset:offset + chunk] if data is not None else bytes(chunk)
            address, size = address + chunk, size - chunk
        return bytes(out)

    def write(self, address: int, size: int, value: int) -> None:
        self.write_bytes(address, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))

    def write_bytes(self, address: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            page, offset = address & ~0xFFF, address & 0xFFF
            chunk = min(len(data) - pos, PAGE_4K - offset)
            buf = self._pages.setdefault(page, bytearray(PAGE_4K))
            buf[offset:offset + chunk] = data[pos:pos + chunk]
            address, pos = address + chunk, pos + chunk


class _TableAllocator:
    """Hands out zeroed 4 KiB table pages from a base address upwards."""

    def __init__(self, base: int) -> None:
        self.next = base

    def page(self) -> int:
        address, self.next = self.next, self.next + PAGE_4K
        return address


# -- guest paging ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class GuestPage:
    """One guest mapping from the compact description (state file `paging.pages`)."""

    linear: int
    physical: int = 0
    size: int = PAGE_4K
    present: bool = True
    writable: bool = True
    user: bool = False
    executable: bool = True
    accessed: bool = False
    dirty: bool = False


def build_guest_page_tables(memory: PhysicalMemory, pages: tuple[GuestPage, ...],
                            tables_at: int) -> int:
    """Lay out 4-level guest page tables for `pages` in guest memory; return CR3.

    Non-leaf entries are present, writable and user so that the leaf decides permissions; their
    accessed bits start clear, so the first walk through them writes memory (SDM 4.8).
    """
    alloc = _TableAllocator(tables_at)
    pml4 = alloc.page()
    for page in pages:
        level_of_leaf = {PAGE_4K: 1, PAGE_2M: 2, PAGE_1G: 3}[page.size]
        table = pml4
        for level in range(4, level_of_leaf, -1):
            slot = table + ((page.linear >> (12 + 9 * (level - 1))) & 0x1FF) * 8
            entry = memory.read(slot, 8)
            if not entry & PTE_P:
                child = alloc.page()
                entry = child | PTE_P | PTE_RW | PTE_US
                memory.write(slot, 8, entry)
            table = entry & ADDR_MASK
        slot = table + ((page.linear >> (12 + 9 * (level_of_leaf - 1))) & 0x1FF) * 8
        if not page.present:
            memory.write(slot, 8, 0)
            continue
        leaf = (page.physical & ADDR_MASK & ~(page.size - 1)) | PTE_P
        leaf |= (PTE_RW if page.writable else 0) | (PTE_US if page.user else 0)
        leaf |= (0 if page.executable else PTE_NX) | (PTE_A if page.accessed else 0)
        leaf |= (PTE_D if page.dirty else 0) | (PTE_PS if level_of_leaf > 1 else 0)
        memory.write(slot, 8, leaf)
    return pml4


# -- EPT -------------------------------------------------------------------------------------

_LEVEL_SIZE = {1: PAGE_4K, 2: PAGE_2M, 3: PAGE_1G}
IDENTITY_DEFAULT_SIZE = 64 * PAGE_1G


class EptTables:
    """The VMM's EPT paging structures in host memory, built from an `EptConfig`."""

    def __init__(self, config: EptConfig, caps: VmxCapabilities,
                 memory: PhysicalMemory | None = None) -> None:
        self.memory = memory or PhysicalMemory()
        self.caps = caps
        self.config = config
        self._alloc = _TableAllocator(EPT_TABLES_BASE)
        self.pml4 = self._alloc.page()
        ranges = config.ranges
        if not ranges and not config.memslots:
            ranges = (EptRange(0, IDENTITY_DEFAULT_SIZE, 0),)
        for r in ranges:
            self.map_range(r.guest_physical, r.size, r.host_physical, r.access, r.memory_type)
        for m in config.mmio:
            self.map_mmio(m)

    def memslot_for(self, gpa: int) -> Memslot | None:
        for slot in self.config.memslots:
            if slot.guest_physical <= gpa < slot.guest_physical + slot.size:
                return slot
        return None

    def mmio_for(self, gpa: int) -> MmioRange | None:
        for region in self.config.mmio:
            if region.guest_physical <= gpa < region.guest_physical + region.size:
                return region
        return None

    def map_mmio(self, region: MmioRange) -> None:
        """KVM marks MMIO with W+X and no R, an EPT misconfiguration (spec §4.6)."""
        for gpa in range(region.guest_physical, region.guest_physical + region.size, PAGE_4K):
            self.set_raw_leaf(gpa, int(EptAccess.W | EptAccess.X))

    def map_range(self, gpa: int, size: int, hpa: int, access: EptAccess,
                  memory_type: int) -> None:
        """Map [gpa, gpa+size) to hpa with the largest pages alignment allows."""
        end = gpa + size
        while gpa < end:
            for level in (3, 2, 1):
                step = _LEVEL_SIZE[level]
                if level == 3 and not self.caps.pages_1g:
                    continue
                if gpa % step == 0 and hpa % step == 0 and end - gpa >= step:
                    break
            value = 0
            if access:
                value = (hpa & ADDR_MASK) | int(access) | (memory_type & 7) << 3
                value |= EPT_PS if level > 1 else 0
            self._install(gpa, level, value)
            gpa, hpa = gpa + step, hpa + step

    def set_raw_leaf(self, gpa: int, bits: int, hpa: int | None = None) -> None:
        """Install a 4 KiB leaf with raw permission/type bits (misconfigurations included)."""
        base = gpa if hpa is None else hpa
        self._install(gpa & ~0xFFF, 1, (base & ADDR_MASK) | bits)

    def _install(self, gpa: int, level: int, value: int) -> None:
        table = self.pml4
        for current in range(4, level, -1):
            slot = table + ((gpa >> (12 + 9 * (current - 1))) & 0x1FF) * 8
            entry = self.memory.read(slot, 8)
            if current <= 3 and entry & EPT_PS:
                entry = self._split(slot, entry, current)
            elif not entry & 7:
                entry = self._alloc.page() | 7
                self.memory.write(slot, 8, entry)
            table = entry & ADDR_MASK
        self.memory.write(table + ((gpa >> (12 + 9 * (level - 1))) & 0x1FF) * 8, 8, value)

    def _split(self, slot: int, entry: int, level: int) -> int:
        """Replace a large leaf by a table of 512 smaller leaves with the same attributes."""
        child = self._alloc.page()
        step = _LEVEL_SIZE[level - 1]
        base = entry & ADDR_MASK & ~(_LEVEL_SIZE[level] - 1)
        attrs = entry & 0xFFF & ~(EPT_PS if level - 1 == 1 else 0)
        for i in range(512):
            self.memory.write(child + i * 8, 8, (base + i * step) | attrs)
        new = child | 7
        self.memory.write(slot, 8, new)
        return new
