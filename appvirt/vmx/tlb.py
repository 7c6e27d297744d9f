"""A TLB model tagged by VPID, PCID and EPTRTA (SDM 28.4 "Caching translation information").

Two kinds of entries are kept (SDM 28.4.1):
- linear mappings (EPT off) and combined mappings (EPT on): linear page -> host-physical page,
  tagged by VPID, PCID and, for combined mappings, the EPTP (EPTRTA);
- guest-physical mappings: guest-physical page -> host-physical page, tagged by EPTRTA, made by
  EPT walks (of guest page-table entries as well as of data).

Modelling choices: one unified TLB (no separate ITLB/DTLB/STLB) and no paging-structure caches;
entries are evicted only by invalidation, never by capacity.
"""

from __future__ import annotations

from dataclasses import dataclass

from .vmcs import EptAccess


def _size(size: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            return f"{size >> shift} {unit}"
    return f"{size} B"


@dataclass(frozen=True, slots=True)
class TlbTag:
    """VPID, PCID and EPTRTA (None for linear mappings made with EPT off)."""

    vpid: int
    pcid: int
    eptrta: int | None


@dataclass(frozen=True, slots=True)
class LinearEntry:
    """A linear or combined mapping."""

    tag: TlbTag
    linear: int
    size: int
    gpa: int
    hpa: int
    writable: bool
    user: bool
    nx: bool
    dirty: bool
    global_page: bool = False

    def describe(self) -> str:
        kind = "combined" if self.tag.eptrta is not None else "linear"
        return (f"{kind}: linear {self.linear:#x} -> host-physical {self.hpa:#x} "
                f"(guest-physical {self.gpa:#x}, {_size(self.size)}, VPID {self.tag.vpid}, "
                f"PCID {self.tag.pcid}{', EPTP' if self.tag.eptrta is not None else ''})")


@dataclass(frozen=True, slots=True)
class GuestPhysicalEntry:
    """A guest-physical mapping (EPT only)."""

    eptrta: int
    gpa: int
    size: int
    hpa: int
    access: EptAccess
    dirty: bool

    def describe(self) -> str:
        return (f"guest-physical: {self.gpa:#x} -> host-physical {self.hpa:#x} "
                f"({_size(self.size)}, EPTP tag)")


@dataclass(frozen=True, slots=True)
class TlbLookup:
    """One TLB lookup made by an instruction: what for, which address, hit or miss."""

    purpose: str
    kind: str
    address: int
    page: int
    hit: bool

    def describe(self) -> str:
        return (f"{self.purpose}: {self.kind} {self.address:#x} (page {self.page:#x}) "
                f"{'hit' if self.hit else 'miss'}")


_SIZES = (1 << 12, 1 << 21, 1 << 30)


class Tlb:
    """The cached translations of one logical processor."""

    def __init__(self) -> None:
        self._linear: dict[tuple[TlbTag, int], LinearEntry] = {}
        self._gpa: dict[tuple[int, int], GuestPhysicalEntry] = {}

    def lookup_linear(self, tag: TlbTag, linear: int) -> LinearEntry | None:
        for size in _SIZES:
            entry = self._linear.get((tag, linear & ~(size - 1)))
            if entry is not None and entry.size == size:
                return entry
        return None

    def fill_linear(self, entry: LinearEntry) -> None:
        self._linear[(entry.tag, entry.linear)] = entry

    def lookup_gpa(self, eptrta: int, gpa: int) -> GuestPhysicalEntry | None:
        for size in _SIZES:
            entry = self._gpa.get((eptrta, gpa & ~(size - 1)))
            if entry is not None and entry.size == size:
                return entry
        return None

    def fill_gpa(self, entry: GuestPhysicalEntry) -> None:
        self._gpa[(entry.eptrta, entry.gpa)] = entry

    # -- invalidation (SDM 28.4.3) -----------------------------------------------------------
    def invalidate_address(self, vpid: int, linear: int) -> int:
        """INVLPG: every linear/combined mapping of the page for this VPID, all PCIDs."""
        doomed = [k for k, e in self._linear.items()
                  if e.tag.vpid == vpid and e.linear <= linear < e.linear + e.size]
        for key in doomed:
            del self._linear[key]
        return len(doomed)

    def invalidate_non_global(self, vpid: int, pcid: int) -> int:
        """MOV to CR3: non-global mappings of the VPID and PCID."""
        doomed = [k for k, e in self._linear.items()
                  if e.tag.vpid == vpid and e.tag.pcid == pcid and not e.global_page]
        for key in doomed:
            del self._linear[key]
        return len(doomed)

    def invalidate_vpid(self, vpid: int) -> int:
        """VM entry/exit with VPIDs off invalidate VPID 0's linear and combined mappings."""
        doomed = [k for k, e in self._linear.items() if e.tag.vpid == vpid]
        for key in doomed:
            del self._linear[key]
        return len(doomed)

    def invalidate_eptrta(self, eptrta: int) -> int:
        """INVEPT single-context: combined and guest-physical mappings of one EPTP."""
        lin = [k for k, e in self._linear.items() if e.tag.eptrta == eptrta]
        gpa = [k for k in self._gpa if k[0] == eptrta]
        for key in lin:
            del self._linear[key]
        for gkey in gpa:
            del self._gpa[gkey]
        return len(lin) + len(gpa)

    def invalidate_gpa(self, eptrta: int, gpa: int) -> None:
        """Drop a guest-physical mapping after the VMM changed its EPT entry."""
        for key in [k for k, e in self._gpa.items()
                    if k[0] == eptrta and e.gpa <= gpa < e.gpa + e.size]:
            del self._gpa[key]

    def linear_entries(self) -> list[LinearEntry]:
        return sorted(self._linear.values(), key=lambda e: (e.tag.vpid, e.linear))

    def gpa_entries(self) -> list[GuestPhysicalEntry]:
        return sorted(self._gpa.values(), key=lambda e: e.gpa)

    def describe(self) -> list[str]:
        return [e.describe() for e in self.linear_entries()] + [
            e.describe() for e in self.gpa_entries()]
