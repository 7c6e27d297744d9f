"""The virtual clock under real ptrace: every way a program reads time, set time, rates."""

from __future__ import annotations

import subprocess
import time

import pytest

from ..conftest import PYTHON, write_policy

pytestmark = pytest.mark.integration


@pytest.fixture
def static_clock(tmp_path):
    exe = tmp_path / "clock-static"
    r = subprocess.run(["cc", "-O2", "-static", "-o", str(exe), "demo_apps/clock.c"],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        pytest.skip(f"no static libc to link with: {r.stderr.strip()[:200]}")
    return str(exe)


def test_every_reader_sees_2030_and_a_set_time_persists(appvirt, tmp_path, static_clock):
    policy = write_policy(tmp_path / "t.yaml", "app: clock-test\ntime: '@2030-01-01 00:00:00'\n")
    host_before = time.time()
    r = appvirt("run", "--policy", policy, "--", "sh", "-c",
                f"date -u +%Y; python3 -c 'import time; print(time.gmtime(time.time()).tm_year)';"
                f" {static_clock}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["2030", "2030", "2030", "2030", "2030"]
    r = appvirt("run", "--policy", policy, "--", "date", "-s", "2040-01-01 00:00:00")
    assert r.returncode == 0, r.stderr
    r = appvirt("run", "--policy", policy, "--", "date", "-u", "+%Y")
    assert r.stdout.strip() == "2040"                    # a second run still sees it
    assert abs(time.time() - host_before) < 120           # the host clock did not move
    reg = appvirt("reg", "clock-test", "get", "machine/clock", "offset_ns")
    assert reg.returncode == 0 and int(reg.stdout.split()[-1]) > 10 * 365 * 86400 * 10**9


def test_the_host_clock_cannot_be_set_without_a_time_section(appvirt):
    r = appvirt("run", "--", "date", "-s", "2040-01-01")
    assert r.returncode == 1 and "Operation not permitted" in r.stderr


def test_a_rate_speeds_up_sleeps_and_the_clock(appvirt, tmp_path):
    policy = write_policy(tmp_path / "t.yaml", "time: 'x10'\n")
    t0 = time.monotonic()
    r = appvirt("run", "--policy", policy, "--", "python3", "-c",
                "import time; a = time.time(); m = time.monotonic(); time.sleep(3); "
                "print(round(time.time() - a), round(time.monotonic() - m))")
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["3", "3"]                 # the program saw 3 seconds pass
    assert elapsed < 2.5                                  # in about 0.3 real seconds


def test_without_a_time_section_time_calls_are_not_traced(appvirt):
    r = appvirt("run", "--stats", "--", PYTHON, "-c",
                "import time\nfor _ in range(10000): time.time()")
    line = next(x for x in r.stderr.splitlines() if "ptrace stops" in x)
    assert "clock_gettime" not in line and "gettimeofday" not in line


CLOCKS = ("import sys, time\n"
          "real = [time.clock_gettime_ns(time.CLOCK_REALTIME) for _ in range(50)]\n"
          "mono = [time.clock_gettime_ns(time.CLOCK_MONOTONIC) for _ in range(300)]\n"
          "print(real[0] // 10**9, mono[0], mono[-1] >= mono[0])")


@pytest.mark.parametrize("spec,stops", [("'+1d'", "realtime"), ("'+1d x2'", "all")])
def test_without_a_rate_only_the_realtime_clocks_stop(appvirt, tmp_path, spec, stops):
    """A virtual clock without a rate changes the realtime clocks only: the monotonic ones are
    the host's and read without a stop (with a rate they run at it, and stop); the program
    sees the day ahead either way."""
    policy = write_policy(tmp_path / "t.yaml", f"time: {spec}\n")
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    r = appvirt("run", "--stats", "--policy", policy, "--", PYTHON, "-c", CLOCKS)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    assert r.returncode == 0, r.stderr
    seconds, mono, rising = r.stdout.split()
    assert abs(int(seconds) - (time.time() + 86400)) < 120 and rising == "True"
    if stops == "realtime":
        assert before <= int(mono) <= after              # the host's own monotonic clock
    line = next(x for x in r.stderr.splitlines() if "ptrace stops" in x)
    count = int(line.split("clock_gettime ")[1].split(",")[0])
    assert (50 <= count < 300) if stops == "realtime" else count >= 350, line


def test_the_stored_rate_is_the_clocks_and_the_filters(appvirt, tmp_path):
    """A rate the app's store keeps (machine/clock rate_ppm) is the one the clock runs at, the
    policy's 'x1' notwithstanding: the monotonic clock stops and runs at it too."""
    policy = write_policy(tmp_path / "t.yaml", "app: rate-kept\ntime: '+1d'\n")
    r = appvirt("reg", "rate-kept", "set", "--create", "--type", "integer", "machine/clock",
                "rate_ppm", "3000000")
    assert r.returncode == 0, r.stderr
    r = appvirt("run", "--policy", policy, "--", "python3", "-c",
                "import time; a = time.time(); m = time.monotonic(); time.sleep(2); "
                "print(round(time.time() - a), round(time.monotonic() - m))")
    assert r.returncode == 0, r.stderr
    # Both clocks saw the sleep's 2 s (with the policy's rate the sleep ran unscaled while
    # the realtime clock ran at 3x: "6 2").
    assert r.stdout.split() == ["2", "2"]
