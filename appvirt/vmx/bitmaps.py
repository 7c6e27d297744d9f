"""The I/O bitmaps A and B and the 4 KiB MSR bitmap (SDM 24.6.4, 24.6.9; spec §4.2, §4.3).

Lookups return a `BitRef` naming the byte and bit consulted, so a result can say which bit
decided it ("MSR bitmap write-high byte 0xc10 bit 0").
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

PAGE = 4096
MSR_LOW_LAST = 0x00001FFF
MSR_HIGH_FIRST = 0xC0000000
MSR_HIGH_LAST = 0xC0001FFF


@dataclass(frozen=True, slots=True)
class BitRef:
    """One bit of a bitmap: what was looked up, and whether it was set."""

    bitmap: str
    byte: int
    bit: int
    value: bool

    def __str__(self) -> str:
        return f"{self.bitmap} byte {self.byte:#x} bit {self.bit} = {int(self.value)}"


def _set_bit(buf: bytearray, index: int, value: bool) -> None:
    if value:
        buf[index >> 3] |= 1 << (index & 7)
    else:
        buf[index >> 3] &= ~(1 << (index & 7)) & 0xFF


@dataclass(frozen=True, slots=True)
class IoBitmaps:
    """I/O bitmap A (ports 0x0000-0x7FFF) and B (0x8000-0xFFFF), one bit per port."""

    a: bytes = bytes(PAGE)
    b: bytes = bytes(PAGE)

    @classmethod
    def from_ports(cls, ports: Iterable[int], *, all_set: bool = False) -> IoBitmaps:
        """Bitmaps with the given ports set (or every port, then `ports` are left clear)."""
        a = bytearray(b"\xff" * PAGE if all_set else PAGE)
        b = bytearray(b"\xff" * PAGE if all_set else PAGE)
        for port in ports:
            _set_bit(a if port < 0x8000 else b, port & 0x7FFF, not all_set)
        return cls(bytes(a), bytes(b))

    def ref(self, port: int) -> BitRef:
        """The bit for one port (spec §4.2: `bm[(p & 0x7FFF) >> 3] >> (p & 7) & 1`)."""
        bm, name = (self.a, "I/O bitmap A") if port < 0x8000 else (self.b, "I/O bitmap B")
        offset = (port & 0x7FFF) >> 3
        return BitRef(name, offset, port & 7, bool(bm[offset] >> (port & 7) & 1))


class MsrRegion(enum.IntEnum):
    """The four 1 KiB regions of the MSR bitmap, by byte offset (spec §4.3 table)."""

    READ_LOW = 0x000
    READ_HIGH = 0x400
    WRITE_LOW = 0x800
    WRITE_HIGH = 0xC00


def msr_bit_position(msr: int, write: bool) -> tuple[MsrRegion, int, int] | None:
    """Region, byte offset in the page and bit for an MSR, or None outside both ranges."""
    if 0 <= msr <= MSR_LOW_LAST:
        region, index = (MsrRegion.WRITE_LOW if write else MsrRegion.READ_LOW), msr
    elif MSR_HIGH_FIRST <= msr <= MSR_HIGH_LAST:
        region, index = (MsrRegion.WRITE_HIGH if write else MsrRegion.READ_HIGH), msr - MSR_HIGH_FIRST
    else:
        return None
    return region, int(region) + (index >> 3), index & 7


@dataclass(frozen=True, slots=True)
class MsrBitmap:
    """The 4 KiB MSR bitmap: read-low, read-high, write-low, write-high (SDM 24.6.9)."""

    data: bytes = bytes(PAGE)

    @classmethod
    def build(cls, *, default_exit: bool, read_exit: Iterable[int] = (),
              read_pass: Iterable[int] = (), write_exit: Iterable[int] = (),
              write_pass: Iterable[int] = ()) -> MsrBitmap:
        """A bitmap starting all-ones (`default_exit`) or all-zeros, then adjusted per MSR.

        Raises:
            ValueError: an MSR outside both ranges was named (it always exits; no bit exists).
        """
        buf = bytearray(b"\xff" * PAGE if default_exit else PAGE)
        for msrs, write, value in ((read_exit, False, True), (read_pass, False, False),
                                   (write_exit, True, True), (write_pass, True, False)):
            for msr in msrs:
                pos = msr_bit_position(msr, write)
                if pos is None:
                    raise ValueError(f"MSR {msr:#x} is outside both bitmap ranges "
                                     "(0-0x1fff, 0xc0000000-0xc0001fff): it always exits")
                _, offset, bit = pos
                _set_bit(buf, offset * 8 + bit, value)
        return cls(bytes(buf))

    def ref(self, msr: int, write: bool) -> BitRef | None:
        """The bit consulted for RDMSR/WRMSR of `msr`, or None when out of range (spec §4.3)."""
        pos = msr_bit_position(msr, write)
        if pos is None:
            return None
        region, offset, bit = pos
        name = f"MSR bitmap {region.name.lower().replace('_', '-')}"
        return BitRef(name, offset, bit, bool(self.data[offset] >> bit & 1))

    def with_bit(self, msr: int, write: bool, value: bool) -> MsrBitmap:
        """A copy with one MSR's bit changed (the VMM opening or closing a pass-through)."""
        pos = msr_bit_position(msr, write)
        if pos is None:
            return self
        buf = bytearray(self.data)
        _set_bit(buf, pos[1] * 8 + pos[2], value)
        return MsrBitmap(bytes(buf))
