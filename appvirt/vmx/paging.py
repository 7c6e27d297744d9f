"""Address translation: guest linear -> guest physical -> host physical, through the TLB.

The guest walk follows IA-32e paging (SDM Vol. 3A 4.5-4.8) as Bochs `translate_linear_long_mode`
does: every paging-structure entry is itself a guest-physical access translated through EPT (a
read, or a write when EPTP bit 6 enables EPT A/D), and the final guest-physical address is then
translated for the access itself. The EPT walk ports Bochs `translate_guest_physical` (paging.cc)
and SDM 28.3.3: misconfigurations (49) are checked entry by entry, permissions are ANDed, and the
violation qualification (48) is built from the access and the combined permissions (spec §4.6).
"""

from __future__ import annotations

from .controls import Cr0, Cr4, Efer, Proc2Ctl, Rflags, Vector
from .exits import vm_exit
from .faults import GuestFault
from .memory import (
    ADDR_MASK, EPT_A, EPT_D, EPT_PS, EPT_SUPPRESS_VE, PTE_A, PTE_D, PTE_NX, PTE_P, PTE_PS,
    PTE_RW, PTE_US,
)
from .paging_types import AccessKind, MemoryAccess
from .qualification import EptViolationQual
from .reasons import ExitReason
from .tlb import GuestPhysicalEntry, LinearEntry, TlbLookup
from .vcpu import Vcpu
from .vmcs import EptAccess

FLAT_WINDOW = 1 << 30                    # flat paging: GPA = linear mod 1 GiB
_GUEST_LEVEL = {4: "PML4E", 3: "PDPTE", 2: "PDE", 1: "PTE"}
_PFEC_P, _PFEC_W, _PFEC_U, _PFEC_RSVD, _PFEC_I = 1, 2, 4, 8, 16


def canonical(linear: int) -> bool:
    top = linear >> 47
    return top == 0 or top == (1 << 17) - 1


def _record(vcpu: Vcpu, access: MemoryAccess) -> None:
    vcpu.accesses.append(access)


# -- EPT ---------------------------------------------------------------------------------------

def ept_translate(vcpu: Vcpu, gpa: int, kind: AccessKind, *, linear: int | None,
                  page_walk: bool, user_page: bool = False, writable_page: bool = False,
                  nx_page: bool = False, purpose: str = "") -> tuple[int, int]:
    """Translate a guest-physical address through EPT; return (hpa, page size).

    Raises:
        VmExitSignal: EPT violation (48) or misconfiguration (49).
        GuestFault: #VE, when "EPT-violation #VE" converts the violation (spec §4.6).
    """
    vmcs = vcpu.vmcs
    if not vmcs.ept_enabled() or vcpu.ept is None:
        return gpa, 1 << 12
    ept = vcpu.ept
    linear_valid = linear is not None
    write = kind is AccessKind.WRITE or (vmcs.ept.accessed_dirty and page_walk and linear_valid)
    if kind is AccessKind.FETCH and not page_walk:
        need = EptAccess.X
    elif write:
        need = EptAccess.W
    else:
        need = EptAccess.R

    cached = vcpu.tlb.lookup_gpa(ept.pml4, gpa)
    vcpu.lookups.append(TlbLookup(purpose or kind.value, "guest-physical", gpa,
                                  gpa & ~0xFFF, cached is not None))
    if cached is not None and (cached.access & need) == need and (not write or cached.dirty
                                                                    or not vmcs.ept.accessed_dirty):
        return cached.hpa + (gpa - cached.gpa), cached.size

    table, combined = ept.pml4, 7
    entries: list[tuple[int, int]] = []
    reserved = ((1 << 52) - 1) & ~((1 << vmcs.caps.maxphyaddr) - 1)
    reason: ExitReason | None = None
    leaf_entry, size = 0, 1 << 12
    for level in (4, 3, 2, 1):
        slot = table + ((gpa >> (12 + 9 * (level - 1))) & 0x1FF) * 8
        entry = ept.memory.read(slot, 8)
        _record(vcpu, MemoryAccess(f"EPT {_GUEST_LEVEL[level]} read", False, 8, hpa=slot))
        entries.append((slot, entry))
        perms = entry & 7
        leaf_entry = entry
        if perms == 0:
            reason = ExitReason.EPT_VIOLATION
            break
        if perms & 3 == EptAccess.W or (perms == EptAccess.X and not vmcs.caps.ept_execute_only):
            reason = ExitReason.EPT_MISCONFIG
            break
        if entry & reserved:
            reason = ExitReason.EPT_MISCONFIG
            break
        is_leaf = level == 1 or bool(entry & EPT_PS)
        if is_leaf:
            if level == 4 or (level == 3 and not vmcs.caps.pages_1g):
                reason = ExitReason.EPT_MISCONFIG
                break
            size = 1 << (12 + 9 * (level - 1))
            if (entry >> 3 & 7) in (2, 3, 7) or (entry & ADDR_MASK) & (size - 1):
                reason = ExitReason.EPT_MISCONFIG
                break
            combined &= perms
            break
        if entry >> 3 & 0xF:               # bits 6:3 reserved in non-leaf entries
            reason = ExitReason.EPT_MISCONFIG
            break
        combined &= perms
        table = entry & ADDR_MASK

    if reason is None and (need & combined) != need:
        reason = ExitReason.EPT_VIOLATION
    if reason is ExitReason.EPT_MISCONFIG:
        vm_exit(ExitReason.EPT_MISCONFIG, 0, guest_physical_address=gpa,
                decided_by=f"EPT entry {leaf_entry:#x} for guest-physical {gpa:#x} is "
                           "misconfigured (e.g. writable but not readable, or an illegal type)")
    if reason is ExitReason.EPT_VIOLATION:
        combined &= leaf_entry & 7
        qual = EptViolationQual(
            read=need == EptAccess.R, write=need == EptAccess.W, fetch=need == EptAccess.X,
            readable=bool(combined & 1), writable=bool(combined & 2),
            executable=bool(combined & 4), linear_valid=linear_valid,
            final_translation=linear_valid and not page_walk,
            user_linear=vmcs.caps.ept_advanced_exit_info and linear_valid and not page_walk and user_page,
            writable_page=vmcs.caps.ept_advanced_exit_info and linear_valid and not page_walk and writable_page,
            xd_page=vmcs.caps.ept_advanced_exit_info and linear_valid and not page_walk and nx_page)
        what = "not present" if not leaf_entry & 7 else f"allows {EptAccess(combined)!r}"
        # Convertible unless the entry's suppress-#VE bit is set, present or not (Bochs).
        if Proc2Ctl.EPT_VIOLATION_VE in vmcs.secondary and not leaf_entry & EPT_SUPPRESS_VE:
            raise GuestFault(Vector.VE, why=f"EPT violation at {gpa:#x} converted to #VE")
        vm_exit(ExitReason.EPT_VIOLATION, qual.encode(), guest_physical_address=gpa,
                guest_linear_address=linear,
                decided_by=f"enable EPT = 1 and the EPT entry for guest-physical {gpa:#x} is "
                           f"{what}; the {need.name} access needs {need.name}")

    base = leaf_entry & ADDR_MASK & ~(size - 1)
    hpa = base + (gpa & (size - 1))
    if vmcs.ept.accessed_dirty:                       # Bochs update_ept_access_dirty
        for i, (slot, entry) in enumerate(entries):
            is_leaf = i == len(entries) - 1
            new = entry | EPT_A | (EPT_D if is_leaf and write else 0)
            if new != entry:
                ept.memory.write(slot, 8, new)
                _record(vcpu, MemoryAccess("EPT accessed/dirty update", True, 8, hpa=slot))
    vcpu.tlb.fill_gpa(GuestPhysicalEntry(ept.pml4, gpa & ~(size - 1), size, base,
                                         EptAccess(combined), write))
    return hpa, size


# -- guest paging ------------------------------------------------------------------------------

def _pf(address: int, code: int, why: str) -> GuestFault:
    return GuestFault(Vector.PF, code, address=address, why=why)


def translate(vcpu: Vcpu, linear: int, kind: AccessKind, *, size: int = 1,
              purpose: str = "", stack: bool = False) -> tuple[int, int]:
    """Translate one access that does not cross a page; return (gpa, hpa).

    Raises:
        GuestFault: #GP/#SS for a non-canonical address, #PF from the guest walk.
        VmExitSignal: EPT violation or misconfiguration on a walk or the final access.
    """
    state, vmcs = vcpu.state, vcpu.vmcs
    purpose = purpose or kind.value
    if not canonical(linear):
        raise GuestFault(Vector.SS if stack else Vector.GP, 0,
                         why=f"non-canonical address {linear:#x}")
    user = state.cpl == 3
    tag = vcpu.tag()
    hit = vcpu.tlb.lookup_linear(tag, linear)
    vcpu.lookups.append(TlbLookup(purpose, "linear", linear, linear & ~0xFFF, hit is not None))
    if hit is not None and _allowed(vcpu, hit.writable, hit.user, hit.nx, kind, user) \
            and (kind is not AccessKind.WRITE or hit.dirty):
        gpa, hpa = hit.gpa + (linear - hit.linear), hit.hpa + (linear - hit.linear)
        _record(vcpu, MemoryAccess(purpose, kind is AccessKind.WRITE, size, linear, gpa, hpa))
        return gpa, hpa

    if vcpu.flat_paging or not state.paging():
        gpa = linear % FLAT_WINDOW if vcpu.flat_paging else linear
        gsize, writable, user_page, nx = 1 << 12, True, True, False
    else:
        gpa, gsize, writable, user_page, nx = _walk(vcpu, linear, kind, user)
    hpa, esize = ept_translate(vcpu, gpa, kind, linear=linear, page_walk=False,
                               user_page=user_page, writable_page=writable, nx_page=nx,
                               purpose=purpose)
    _record(vcpu, MemoryAccess(purpose, kind is AccessKind.WRITE, size, linear, gpa, hpa))
    page = min(gsize, esize)
    vcpu.tlb.fill_linear(LinearEntry(tag, linear & ~(page - 1), page, gpa & ~(page - 1),
                                     hpa & ~(page - 1), writable, user_page, nx,
                                     kind is AccessKind.WRITE))
    return gpa, hpa


def _allowed(vcpu: Vcpu, writable: bool, user_page: bool, nx: bool, kind: AccessKind,
             user: bool) -> bool:
    state = vcpu.state
    if kind is AccessKind.WRITE and not writable and (user or state.cr0 & Cr0.WP):
        return False
    if user and not user_page:
        return False
    if not user and user_page:
        if kind is AccessKind.FETCH and state.cr4 & Cr4.SMEP:
            return False
        if kind is not AccessKind.FETCH and state.cr4 & Cr4.SMAP and not state.rflags & Rflags.AC:
            return False
    if kind is AccessKind.FETCH and nx and state.efer & Efer.NXE:
        return False
    return True


def _walk(vcpu: Vcpu, linear: int, kind: AccessKind, user: bool) -> tuple[int, int, bool, bool, bool]:
    """The 4-level guest walk; returns (gpa, page size, writable, user, nx)."""
    state = vcpu.state
    code = (_PFEC_W if kind is AccessKind.WRITE else 0) | (_PFEC_U if user else 0)
    if kind is AccessKind.FETCH and (state.efer & Efer.NXE or state.cr4 & Cr4.SMEP):
        code |= _PFEC_I
    reserved = ((1 << 52) - 1) & ~((1 << vcpu.vmcs.caps.maxphyaddr) - 1)
    if not state.efer & Efer.NXE:
        reserved |= PTE_NX
    table = state.cr3 & ADDR_MASK
    writable, user_page, nx = True, True, False
    slots: list[tuple[int, int, int]] = []
    size = 1 << 12
    for level in (4, 3, 2, 1):
        slot_gpa = table + ((linear >> (12 + 9 * (level - 1))) & 0x1FF) * 8
        slot_hpa, _ = ept_translate(vcpu, slot_gpa, AccessKind.READ, linear=linear,
                                    page_walk=True, purpose=f"guest {_GUEST_LEVEL[level]} fetch")
        entry = vcpu.guest_memory.read(slot_gpa, 8)
        _record(vcpu, MemoryAccess(f"guest {_GUEST_LEVEL[level]} read", False, 8,
                                   gpa=slot_gpa, hpa=slot_hpa))
        if not entry & PTE_P:
            raise _pf(linear, code, f"guest {_GUEST_LEVEL[level]} for {linear:#x} not present")
        leaf = level == 1 or (level in (2, 3) and bool(entry & PTE_PS))
        bad = entry & reserved or (level == 4 and entry & PTE_PS)
        if bad:
            raise _pf(linear, code | _PFEC_P | _PFEC_RSVD,
                      f"reserved bit set in guest {_GUEST_LEVEL[level]}")
        slots.append((slot_gpa, slot_hpa, entry))
        writable &= bool(entry & PTE_RW)
        user_page &= bool(entry & PTE_US)
        nx |= bool(entry & PTE_NX)
        if leaf:
            size = 1 << (12 + 9 * (level - 1))
            break
        table = entry & ADDR_MASK
    if not _allowed(vcpu, writable, user_page, nx, kind, user):
        raise _pf(linear, code | _PFEC_P, f"guest page at {linear:#x} does not allow this "
                                          f"{kind.value}")
    for i, (slot_gpa, slot_hpa, entry) in enumerate(slots):   # SDM 4.8: set A, and D on writes
        is_leaf = i == len(slots) - 1
        new = entry | PTE_A | (PTE_D if is_leaf and kind is AccessKind.WRITE else 0)
        if new != entry:
            vcpu.guest_memory.write(slot_gpa, 8, new)
            flag = "accessed/dirty" if new & ~entry & PTE_D else "accessed"
            _record(vcpu, MemoryAccess(f"set {flag} bit in guest {_GUEST_LEVEL[4 - i]}", True,
                                       8, gpa=slot_gpa, hpa=slot_hpa))
    leaf_entry = slots[-1][2]
    base = leaf_entry & ADDR_MASK & ~(size - 1)
    return base + (linear & (size - 1)), size, writable, user_page, nx


def translate_range(vcpu: Vcpu, linear: int, size: int, kind: AccessKind, *,
                    purpose: str = "", stack: bool = False) -> list[tuple[int, int]]:
    """Translate an access that may cross a page boundary: [(gpa, length)] pieces."""
    pieces = []
    while size > 0:
        chunk = min(size, 0x1000 - (linear & 0xFFF))
        gpa, _ = translate(vcpu, linear & 0xFFFF_FFFF_FFFF_FFFF, kind, size=chunk,
                           purpose=purpose, stack=stack)
        pieces.append((gpa, chunk))
        linear, size = linear + chunk, size - chunk
    return pieces


def read_pieces(vcpu: Vcpu, pieces: list[tuple[int, int]]) -> int:
    data = b"".join(vcpu.guest_memory.read_bytes(gpa, n) for gpa, n in pieces)
    return int.from_bytes(data, "little")


def write_pieces(vcpu: Vcpu, pieces: list[tuple[int, int]], value: int) -> None:
    total = sum(n for _, n in pieces)
    data = (value & ((1 << (8 * total)) - 1)).to_bytes(total, "little")
    pos = 0
    for gpa, n in pieces:
        vcpu.guest_memory.write_bytes(gpa, data[pos:pos + n])
        pos += n
