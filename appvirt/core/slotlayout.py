"""Where the read-only slot area sits in every tracee, and how it is divided.

One memfd, sealed against writes, is mapped PROT_READ|MAP_SHARED at the same fixed address in
every sandboxed process; the tracer writes checked arguments through its own writable mapping
and points the syscall's registers at them (threats #11-#13). The address is fixed so that the
seccomp filter can refuse, in the kernel, any mapping call that would unmap, move or replace it.

After the slots come one trampoline per slot (trampoline.py: code and the registers it puts
back), in the same memfd, mapped executable too where the kernel lets a memfd be; right after
the area, each process has its own private result cells, which the trampolines write. The
guarded range covers all three.
"""

SLOT_BASE = 0x6FFF_0000_0000      # between PIE images (0x55..-0x56..) and the mmap base (0x7f..)
SLOT_SIZE = 3 * 4096              # two PATH_MAX paths and a struct area per thread
SLOT_COUNT = 4096                 # live threads the sandbox can have at once
TRAMP_STRIDE = 256                # one slot's trampoline: code, then its data (trampoline.py)
TRAMP_BASE = SLOT_BASE + SLOT_SIZE * SLOT_COUNT
AREA_SIZE = (SLOT_SIZE + TRAMP_STRIDE) * SLOT_COUNT
AREA_END = SLOT_BASE + AREA_SIZE
CELL_BASE = AREA_END              # private, read-write: each process's own cells, one 8-byte
CELL_STRIDE = TRAMP_STRIDE        # cell per slot, as far from its trampoline as every other
CELLS_SIZE = CELL_STRIDE * SLOT_COUNT
GUARDED_END = CELL_BASE + CELLS_SIZE
# High 32-bit words of addresses from which a mapping call could reach the area (the area fits
# in one 4 GiB window; a range starting in the window below can still run into it).
WINDOW_HIGH_WORDS = frozenset({(SLOT_BASE >> 32) - 1, SLOT_BASE >> 32})

assert (GUARDED_END - 1) >> 32 == SLOT_BASE >> 32
assert AREA_END % 4096 == 0 and CELLS_SIZE % 4096 == 0


def overlaps(addr: int, length: int) -> bool:
    """Whether [addr, addr+length) touches the slot area or the cells after it (length 0
    counts as one byte)."""
    return addr < GUARDED_END and addr + max(length, 1) > SLOT_BASE
