"""The app's virtual clock, in libfaketime's syntax.

    @2030-01-01 00:00:00   start there, then run (each run starts there again)
    2030-01-01 00:00:00    frozen at that instant
    +2d, -90m, +1h30m      an offset from the real time (s, m, h, d, y units)
    x10, x0.5              a rate; may follow any of the above: "@2030-01-01 x2", "+1d x0.5"

With a rate, CLOCK_MONOTONIC and CLOCK_BOOTTIME run at the same rate from the start of the
run, and sleeps and timeouts are scaled, so a program sees a consistent time; without one the
monotonic clocks are the host's. A time set inside (date -s) moves only this clock and is kept
in the app's store, so later runs see it.
"""

import enum
import re
import time
from collections.abc import Callable
from typing import NamedTuple

NS = 1_000_000_000
CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_PROCESS_CPUTIME_ID, CLOCK_THREAD_CPUTIME_ID = 0, 1, 2, 3
CLOCK_MONOTONIC_RAW, CLOCK_REALTIME_COARSE, CLOCK_MONOTONIC_COARSE = 4, 5, 6
CLOCK_BOOTTIME, CLOCK_REALTIME_ALARM, CLOCK_BOOTTIME_ALARM, CLOCK_TAI = 7, 8, 9, 11
REALTIME_CLOCKS = frozenset({CLOCK_REALTIME, CLOCK_REALTIME_COARSE, CLOCK_REALTIME_ALARM,
                             CLOCK_TAI})
STEADY_CLOCKS = frozenset({CLOCK_MONOTONIC, CLOCK_MONOTONIC_RAW, CLOCK_MONOTONIC_COARSE,
                           CLOCK_BOOTTIME, CLOCK_BOOTTIME_ALARM})


class ClockSpecError(ValueError):
    pass


class SpecKind(enum.Enum):
    REAL = "real"          # only a rate, or nothing
    START = "start"        # @date
    FROZEN = "frozen"      # date
    OFFSET = "offset"      # +/-duration


class ClockSpec(NamedTuple):
    kind: SpecKind
    value_ns: int = 0      # START/FROZEN: ns since the epoch; OFFSET: ns to add
    rate: float = 1.0

    @property
    def virtual(self) -> bool:
        return self.kind is not SpecKind.REAL or self.rate != 1.0


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "y": 365 * 86400}
_DATE = re.compile(r"^(\d{4})-(\d\d)-(\d\d)(?:[ T](\d\d):(\d\d)(?::(\d\d))?)?$")
_OFFSET = re.compile(r"^([+-])((?:\d+(?:\.\d+)?[smhdy]?)+)$")


def _date_ns(text: str) -> int:
    import calendar         # here: only dates need it, and it costs every start-up time
    m = _DATE.match(text)
    if not m:
        raise ClockSpecError(f"{text!r} is not a date: use YYYY-MM-DD[ HH:MM[:SS]] (UTC)")
    y, mo, d, h, mi, s = (int(x) if x else 0 for x in m.groups())
    try:
        return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) * NS if 1 <= mo <= 12 and \
            1 <= d <= 31 and h < 24 and mi < 60 and s < 61 else _bad(text)
    except (ValueError, OverflowError):
        return _bad(text)


def _bad(text: str) -> int:
    raise ClockSpecError(f"{text!r} is not a valid date")


def _offset_ns(sign: str, body: str) -> int:
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)([smhdy]?)", body):
        total += float(number) * _UNITS[unit or "s"]
    return int(total * NS) * (-1 if sign == "-" else 1)


def parse_clock_spec(text: str) -> ClockSpec:
    """Parse libfaketime's syntax (see the module docstring); ClockSpecError if malformed."""
    text = " ".join(text.split())
    rate = 1.0
    m = re.search(r"(?:^| )x(\d+(?:\.\d+)?)$", text)
    if m:
        rate = float(m.group(1))
        if not 0 < rate <= 1e6:
            raise ClockSpecError(f"rate x{m.group(1)} must be above 0")
        text = text[:m.start()].strip()
    if not text:
        return ClockSpec(SpecKind.REAL, 0, rate)
    if text.startswith("@"):
        return ClockSpec(SpecKind.START, _date_ns(text[1:].strip()), rate)
    if text[0] in "+-":
        m = _OFFSET.match(text.replace(" ", ""))
        if not m:
            raise ClockSpecError(f"{text!r} is not an offset: use e.g. +2d, -90m, +1h30m")
        return ClockSpec(SpecKind.OFFSET, _offset_ns(m.group(1), m.group(2)), rate)
    return ClockSpec(SpecKind.FROZEN, _date_ns(text), rate)


class StoredClock(NamedTuple):
    """What the app's store remembers (machine/clock), written when the program sets time."""

    offset_ns: int | None = None
    rate_ppm: int | None = None
    frozen_at_ns: int | None = None


def _host_now(clock_id: int) -> int:
    return time.clock_gettime_ns(clock_id)


class VirtualClock:
    """One run's clock, shared by every process of the app."""

    def __init__(self, spec: ClockSpec, stored: StoredClock,
                 host: Callable[[int], int] = _host_now) -> None:
        self.host = host
        self.changes = 0                 # how many times the program set it (set_realtime)
        self.rate = stored.rate_ppm / 1e6 if stored.rate_ppm else spec.rate
        self._start_real = host(CLOCK_REALTIME)
        self._start_steady = {c: host(c) for c in (CLOCK_MONOTONIC, CLOCK_BOOTTIME)}
        self.frozen: int | None = None
        if stored.frozen_at_ns is not None:
            self.frozen = stored.frozen_at_ns
        elif stored.offset_ns is not None:          # the program set the time in an earlier run
            self._start_virtual = self._start_real + stored.offset_ns
        elif spec.kind is SpecKind.START:
            self._start_virtual = spec.value_ns
        elif spec.kind is SpecKind.FROZEN:
            self.frozen = spec.value_ns
        else:
            self._start_virtual = self._start_real + (
                spec.value_ns if spec.kind is SpecKind.OFFSET else 0)

    def now(self, clock_id: int) -> int:
        """The virtual reading of a clock in ns (other clocks: the host's)."""
        if clock_id in REALTIME_CLOCKS:
            if self.frozen is not None:
                return self.frozen
            real = self.host(CLOCK_REALTIME)
            v = self._start_virtual + int((real - self._start_real) * self.rate)
            # TAI keeps the host's own TAI-UTC difference
            return v + (self.host(CLOCK_TAI) - real) if clock_id == CLOCK_TAI else v
        if clock_id in STEADY_CLOCKS and self.rate != 1.0:
            base = CLOCK_BOOTTIME if clock_id in (CLOCK_BOOTTIME, CLOCK_BOOTTIME_ALARM) \
                else CLOCK_MONOTONIC
            start = self._start_steady[base]
            return start + int((self.host(clock_id) - start) * self.rate)
        return self.host(clock_id)

    def set_realtime(self, ns: int) -> StoredClock:
        """The program set the time: move this clock only; returns what to store."""
        real = self.host(CLOCK_REALTIME)
        self.frozen = None
        self._start_real, self._start_virtual = real, ns
        self.changes += 1
        return StoredClock(offset_ns=ns - real,
                           rate_ppm=int(self.rate * 1e6) if self.rate != 1.0 else None)

    def state(self) -> tuple[int | None, int, int, int, int, float]:
        """What now() computes from: the frozen reading (or None), the real and virtual
        readings at the start, the monotonic and boot clocks' starts, the rate (the compiled
        loop answers time calls from it, tracer/_fastpath_clock.c)."""
        return (self.frozen, self._start_real, getattr(self, "_start_virtual", 0),
                self._start_steady[CLOCK_MONOTONIC], self._start_steady[CLOCK_BOOTTIME],
                self.rate)

    def real_duration(self, virtual_ns: int) -> int:
        """How long to really wait for a virtual duration (a sleep, a timeout)."""
        return int(virtual_ns / self.rate) if self.rate != 1.0 else virtual_ns

    def real_deadline(self, clock_id: int, virtual_ns: int) -> int:
        """The host reading of clock_id at which the virtual clock reaches virtual_ns."""
        remaining = max(0, virtual_ns - self.now(clock_id))
        base = CLOCK_REALTIME if clock_id in REALTIME_CLOCKS else clock_id
        return self.host(base) + self.real_duration(remaining)
