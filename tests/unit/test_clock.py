"""The virtual clock against a fake host clock (no sleeping), and the time handlers."""

from __future__ import annotations

import errno
import struct

import pytest
from hypothesis import given, strategies as st

from appvirt.core.action import Allow, Deny, Emulate, Rewrite
from appvirt.policy import load_policy_text
from appvirt.testing import FakeContext, handle, make_stop
from appvirt.virt.clock import (CLOCK_BOOTTIME, CLOCK_MONOTONIC, CLOCK_PROCESS_CPUTIME_ID,
                                CLOCK_REALTIME, NS, ClockSpecError, SpecKind, StoredClock,
                                VirtualClock, parse_clock_spec)

Y2030 = 1893456000 * NS


class FakeHost:
    """A host clock the test moves by hand."""

    def __init__(self, real: int = 1_800_000_000 * NS, mono: int = 1000 * NS) -> None:
        self.real, self.mono = real, mono

    def __call__(self, clock_id: int) -> int:
        return self.real if clock_id in (0, 5, 8, 11) else self.mono

    def advance(self, ns: int) -> None:
        self.real += ns
        self.mono += ns


@pytest.mark.parametrize("text, kind, value, rate", [
    ("@2030-01-01 00:00:00", SpecKind.START, Y2030, 1.0),
    ("2030-01-01", SpecKind.FROZEN, Y2030, 1.0),
    ("+2d", SpecKind.OFFSET, 2 * 86400 * NS, 1.0),
    ("-90m", SpecKind.OFFSET, -90 * 60 * NS, 1.0),
    ("+1h30m", SpecKind.OFFSET, 5400 * NS, 1.0),
    ("x10", SpecKind.REAL, 0, 10.0),
    ("@2030-01-01 x0.5", SpecKind.START, Y2030, 0.5),
])
def test_libfaketime_syntax(text, kind, value, rate):
    spec = parse_clock_spec(text)
    assert (spec.kind, spec.value_ns, spec.rate) == (kind, value, rate)


@pytest.mark.parametrize("bad", ["2030-13-01", "tomorrow", "+2w", "x0", "@", "2030-02-30 25:00"])
def test_bad_specs(bad):
    with pytest.raises(ClockSpecError):
        parse_clock_spec(bad)


def test_start_runs_from_the_date_and_frozen_does_not_move():
    host = FakeHost()
    start = VirtualClock(parse_clock_spec("@2030-01-01"), StoredClock(), host)
    frozen = VirtualClock(parse_clock_spec("2030-01-01"), StoredClock(), host)
    host.advance(5 * NS)
    assert start.now(CLOCK_REALTIME) == Y2030 + 5 * NS
    assert frozen.now(CLOCK_REALTIME) == Y2030
    assert start.now(CLOCK_MONOTONIC) == host.mono       # no rate: monotonic untouched


@given(st.floats(min_value=0.01, max_value=100), st.integers(min_value=0, max_value=10**12))
def test_a_rate_scales_realtime_and_monotonic_alike(rate, elapsed):
    host = FakeHost()
    clock = VirtualClock(parse_clock_spec(f"+1d x{rate}"), StoredClock(), host)
    r0, m0, b0 = (clock.now(c) for c in (CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_BOOTTIME))
    host.advance(elapsed)
    dr = clock.now(CLOCK_REALTIME) - r0
    dm = clock.now(CLOCK_MONOTONIC) - m0
    assert abs(dr - dm) <= 1 and abs(dr - elapsed * rate) <= 1 + elapsed * rate * 1e-9
    assert clock.now(CLOCK_BOOTTIME) - b0 == dm
    # integer ns: a virtual ns is 1/rate real ns, so the way back may miss by that much
    assert abs(clock.real_duration(dr) - elapsed) <= 1 + 1 / rate + elapsed * 1e-9


def test_setting_moves_only_the_virtual_clock_and_is_kept():
    host = FakeHost()
    clock = VirtualClock(parse_clock_spec("@2030-01-01"), StoredClock(), host)
    saved = clock.set_realtime(Y2030 + 10 * 365 * 86400 * NS)
    host.advance(3 * NS)
    assert clock.now(CLOCK_REALTIME) == Y2030 + 10 * 365 * 86400 * NS + 3 * NS
    assert host.real == 1_800_000_003 * NS                 # the host clock did not move
    later = VirtualClock(parse_clock_spec("@2030-01-01"), saved, host)   # a later run
    assert later.now(CLOCK_REALTIME) == host.real + saved.offset_ns


def test_absolute_deadlines_convert_to_the_host_clock():
    host = FakeHost()
    clock = VirtualClock(parse_clock_spec("@2030-01-01 x2"), StoredClock(), host)
    deadline = clock.now(CLOCK_REALTIME) + 10 * NS      # 10 virtual seconds from now
    assert clock.real_deadline(CLOCK_REALTIME, deadline) == host.real + 5 * NS


POLICY = load_policy_text("time: '@2030-01-01 00:00:00'\n", "p.yaml")
NO_SET = load_policy_text("time: {clock: '@2030-01-01', set: deny}\n", "p.yaml")
HOST = load_policy_text("{}\n", "p.yaml")


def _ctx(policy=POLICY, spec="@2030-01-01 00:00:00"):
    ctx = FakeContext(policy)
    ctx.clock = VirtualClock(parse_clock_spec(spec), StoredClock(), FakeHost())
    return ctx


def test_queries_are_answered_from_the_clock():
    ctx = _ctx()
    s = make_stop("clock_gettime", CLOCK_REALTIME, 0x1000)
    assert handle(s, ctx).writes == ((0x1000, struct.pack("<qq", 1893456000, 0)),)
    s = make_stop("clock_gettime", CLOCK_PROCESS_CPUTIME_ID, 0x1000)
    assert isinstance(handle(s, ctx), Allow)        # CPU time is the kernel's
    s = make_stop("gettimeofday", 0x2000, 0)
    assert handle(s, ctx).writes == ((0x2000, struct.pack("<qq", 1893456000, 0)),)
    s = make_stop("time", 0)
    assert handle(s, ctx).result == 1893456000


def test_setting_needs_the_policy():
    ctx = _ctx()
    ctx.memory[0x3000] = struct.pack("<qq", 2208988800, 0)          # 2040-01-01
    s = make_stop("clock_settime", CLOCK_REALTIME, 0x3000)
    assert isinstance(handle(s, ctx), Emulate) and ctx.clock_sets == [2208988800 * NS]
    for policy in (NO_SET, HOST):
        other = _ctx(policy)
        other.memory[0x3000] = ctx.memory[0x3000]
        action = s.entry.handler(s, other)
        assert isinstance(action, Deny) and action.errno == errno.EPERM
        assert other.clock_sets == []
    bad = make_stop("clock_settime", CLOCK_MONOTONIC, 0x3000)
    assert handle(bad, ctx).errno == errno.EINVAL


def test_sleeps_scale_with_a_rate():
    ctx = _ctx(load_policy_text("time: 'x10'\n", "p.yaml"), "x10")
    ctx.memory[0x4000] = struct.pack("<qq", 2, 0)
    s = make_stop("nanosleep", 0x4000, 0)
    action = handle(s, ctx)
    assert isinstance(action, Rewrite)
    assert action.args[0][1].data == struct.pack("<qq", 0, 200_000_000)
    s = make_stop("poll", 0x5000, 1, 1000)
    assert dict(handle(s, ctx).args) == {2: 100}
