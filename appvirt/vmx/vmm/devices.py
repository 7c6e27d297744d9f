"""Port-I/O devices of the simulated user-space VMM (the QEMU side of KVM_EXIT_IO).

CMOS RTC at 0x70/0x71 (MC146818: index register, BCD time registers), the PCI reset-control
register at 0xCF9 (writes with bit 2 set reset the machine), the 8042 keyboard controller at
0x60/0x64 (command 0xFE pulses the reset line), a 16550 UART at 0x3F8-0x3FF, and the primary
ATA channel at 0x1F0-0x1F7/0x3F6 (PIO disk access).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class PortAccess:
    """What a device did with one port access."""

    device: str
    value: int
    effect: str
    reset: bool = False


class PortDevice(Protocol):
    name: str

    def read(self, port: int, size: int) -> PortAccess: ...

    def write(self, port: int, size: int, value: int) -> PortAccess: ...


def _bcd(n: int) -> int:
    return (n // 10) << 4 | n % 10


def _from_bcd(b: int) -> int:
    return (b >> 4) * 10 + (b & 0xF)


@dataclass
class CmosRtc:
    """MC146818 RTC behind the CMOS index (0x70) and data (0x71) ports."""

    epoch: float = 1_700_000_000.0
    index: int = 0
    nmi_disabled: bool = False
    ram: dict[int, int] = field(default_factory=lambda: {0x0A: 0x26, 0x0B: 0x02, 0x0D: 0x80})
    name: str = "CMOS RTC"

    _FIELDS = {0x00: "second", 0x02: "minute", 0x04: "hour", 0x07: "day", 0x08: "month",
               0x09: "year"}

    def _now(self) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(self.epoch, _dt.timezone.utc)

    def read(self, port: int, size: int) -> PortAccess:
        if port == 0x70:
            return PortAccess(self.name, self.index, "read the index register")
        now = self._now()
        values = {0x00: now.second, 0x02: now.minute, 0x04: now.hour, 0x06: now.isoweekday() % 7 + 1,
                  0x07: now.day, 0x08: now.month, 0x09: now.year % 100, 0x32: now.year // 100}
        if self.index in values:
            value = _bcd(values[self.index])
            return PortAccess(self.name, value, f"read RTC register {self.index:#x} "
                                                f"({self._FIELDS.get(self.index, 'date')}) = {value:#x} (BCD)")
        value = self.ram.get(self.index, 0)
        return PortAccess(self.name, value, f"read CMOS byte {self.index:#x} = {value:#x}")

    def write(self, port: int, size: int, value: int) -> PortAccess:
        value &= 0xFF
        if port == 0x70:
            self.index, self.nmi_disabled = value & 0x7F, bool(value & 0x80)
            return PortAccess(self.name, value, f"select CMOS register {self.index:#x}"
                                                + (" (NMI disabled)" if self.nmi_disabled else ""))
        if self.index in self._FIELDS:
            now = self._now()
            name = self._FIELDS[self.index]
            number = _from_bcd(value) + (2000 if name == "year" else 0)
            changed = now.replace(**{name: number})
            self.epoch = changed.timestamp()
            return PortAccess(self.name, value, f"set RTC {name} to {_from_bcd(value)} (the host "
                                                "clock is untouched)")
        self.ram[self.index] = value
        return PortAccess(self.name, value, f"write CMOS byte {self.index:#x} = {value:#x}")


@dataclass
class ResetControl:
    """PCI reset-control register 0xCF9: bit 2 (RST_CPU) triggers a reset, 0x06/0x0E."""

    name: str = "reset control (0xCF9)"
    last: int = 0

    def read(self, port: int, size: int) -> PortAccess:
        return PortAccess(self.name, self.last, "read reset control")

    def write(self, port: int, size: int, value: int) -> PortAccess:
        self.last = value & 0xFF
        if value & 0x04:
            kind = "full (cold) reset" if value & 0x08 else "system reset"
            return PortAccess(self.name, value, f"{kind} requested: the VMM resets the VM",
                              reset=True)
        return PortAccess(self.name, value, "reset type selected, no reset yet")


@dataclass
class KeyboardController:
    """8042 at 0x60 (data) / 0x64 (status/command); command 0xFE pulses the CPU reset line."""

    name: str = "8042 keyboard controller"

    def read(self, port: int, size: int) -> PortAccess:
        if port == 0x64:
            return PortAccess(self.name, 0x1C, "read status: input buffer empty, system flag set")
        return PortAccess(self.name, 0x00, "read data port")

    def write(self, port: int, size: int, value: int) -> PortAccess:
        if port == 0x64 and value & 0xFF == 0xFE:
            return PortAccess(self.name, value, "command 0xFE: pulse the reset line; the VMM "
                                                "resets the VM", reset=True)
        return PortAccess(self.name, value, f"{'command' if port == 0x64 else 'data'} "
                                            f"{value & 0xFF:#x} accepted")


@dataclass
class SerialPort:
    """16550 UART at 0x3F8: THR writes go to the console, LSR reads say 'ready'."""

    base: int = 0x3F8
    output: bytearray = field(default_factory=bytearray)
    name: str = "16550 UART (COM1)"

    def read(self, port: int, size: int) -> PortAccess:
        if port == self.base + 5:
            return PortAccess(self.name, 0x60, "read LSR: transmitter empty")
        return PortAccess(self.name, 0, f"read register {port - self.base}")

    def write(self, port: int, size: int, value: int) -> PortAccess:
        if port == self.base:
            self.output.append(value & 0xFF)
            return PortAccess(self.name, value, f"transmit byte {value & 0xFF:#04x}")
        return PortAccess(self.name, value, f"write register {port - self.base} = {value:#x}")


@dataclass
class AtaChannel:
    """Primary ATA channel: command block 0x1F0-0x1F7, control 0x3F6 (PIO sector transfer)."""

    name: str = "ATA primary channel"
    sectors_read: int = 0

    def read(self, port: int, size: int) -> PortAccess:
        if port == 0x1F7:
            return PortAccess(self.name, 0x58, "read status: DRDY, DSC, DRQ")
        if port == 0x1F0:
            return PortAccess(self.name, 0, f"read {size} byte(s) of sector data")
        return PortAccess(self.name, 0, f"read register {port:#x}")

    def write(self, port: int, size: int, value: int) -> PortAccess:
        if port == 0x1F7:
            self.sectors_read += value & 0xFF == 0x20
            return PortAccess(self.name, value, f"command {value & 0xFF:#x}"
                                                + (" (READ SECTORS)" if value & 0xFF == 0x20 else ""))
        return PortAccess(self.name, value, f"write register {port:#x} = {value & 0xFF:#x}")


class PortBus:
    """Maps port numbers to devices; unclaimed ports read as all ones, writes are dropped."""

    def __init__(self) -> None:
        self.rtc = CmosRtc()
        self.reset = ResetControl()
        self.kbc = KeyboardController()
        self.serial = SerialPort()
        self.ata = AtaChannel()
        self._map: dict[int, PortDevice] = {0x70: self.rtc, 0x71: self.rtc, 0xCF9: self.reset,
                                            0x60: self.kbc, 0x64: self.kbc, 0x3F6: self.ata}
        for port in range(0x3F8, 0x400):
            self._map[port] = self.serial
        for port in range(0x1F0, 0x1F8):
            self._map[port] = self.ata

    def device(self, port: int) -> PortDevice | None:
        return self._map.get(port)

    def access(self, port: int, size: int, *, write: bool, value: int = 0) -> PortAccess:
        dev = self._map.get(port)
        if dev is None:
            if write:
                return PortAccess("none", value, f"no device at port {port:#x}: write dropped")
            return PortAccess("none", (1 << (8 * size)) - 1,
                              f"no device at port {port:#x}: reads as all ones")
        return dev.write(port, size, value) if write else dev.read(port, size)
