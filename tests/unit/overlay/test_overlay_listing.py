"""Merged listings at scale, and the overlay persisting between runs."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from overlay_helpers import (OverlayFactory, UPPER, create_file, mode_of, names, read, view_tree,
                             write_file)

from appvirt.overlay import Overlay


@pytest.mark.slow
def test_ten_thousand_entry_merged_listing(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    big = lower / "big"
    big.mkdir(parents=True)
    for i in range(7000):                               # lower: f0000..f6999
        (big / f"f{i:04d}").write_bytes(b"")
    for i in range(0, 6000, 50):
        (big / f"d{i:04d}").mkdir()                      # 120 lower directories
    ov = Overlay(tmp_path / "upper", mode_of=mode_of(), lower_root=os.fsencode(lower))
    for i in range(6700, 7000):                          # upper copies shadowing lower names
        write_file(ov, b"/big/f%04d" % i, b"up", append=False)
    for i in range(7000, 10000):                         # upper-only names
        create_file(ov, b"/big/f%04d" % i, b"up")
    for i in range(0, 1000, 10):                         # 100 whiteouts
        ov.unlink(b"/big/f%04d" % i)
    for i in range(0, 6000, 500):                        # 12 directories replaced by files
        ov.rmdir(b"/big/d%04d" % i)
        create_file(ov, b"/big/d%04d" % i, b"was a dir")
    listing = ov.listdir(b"/big")
    got = [d.name for d in listing]
    want = sorted({b"f%04d" % i for i in range(10000)}
                  - {b"f%04d" % i for i in range(0, 1000, 10)}
                  | {b"d%04d" % i for i in range(0, 6000, 50)})
    assert got == want and len(got) == 10000 - 100 + 120
    dtypes = {d.name: d.d_type for d in listing}
    assert dtypes[b"d0050"] == stat.S_IFDIR >> 12 and dtypes[b"d0500"] == stat.S_IFREG >> 12
    assert dtypes[b"f0001"] == stat.S_IFREG >> 12
    assert ov.listdir(b"/big") == listing                  # stable
    inos = {d.name: d.ino for d in listing}
    assert inos[b"f6800"] == ov.lstat(b"/big/f6800").st_ino          # the upper copy
    assert inos[b"f6800"] != os.lstat(big / "f6800").st_ino
    assert inos[b"f0001"] == os.lstat(big / "f0001").st_ino          # the lower file
    assert read(ov, b"/big/f6800") == b"up" and read(ov, b"/big/f0001") == b""
    assert len(os.listdir(big)) == 7120                    # the host is as it was


def test_a_second_run_sees_the_first_runs_changes(make_ov: OverlayFactory) -> None:
    first = make_ov()
    create_file(first, b"/etc/new", b"persisted")
    first.unlink(b"/etc/hosts")
    first.rename(b"/etc/app", b"/etc/app2")
    first.mkdir(b"/etc/app", 0o700)
    first.link(b"/etc/passwd", b"/etc/passwd.lnk")
    first.symlink(b"new", b"/etc/new.lnk")
    before = view_tree(first)
    second = make_ov()
    assert second._ix == first._ix
    assert view_tree(second) == before
    assert names(second, b"/etc") == [b"app", b"app2", b"link", b"new", b"new.lnk", b"passwd",
                                      b"passwd.lnk"]
    assert second.lstat(b"/etc/passwd").st_ino == second.lstat(b"/etc/passwd.lnk").st_ino
    assert names(second, b"/etc/app") == []


def test_the_upper_layer_mirrors_the_guest_tree(make_ov: OverlayFactory) -> None:
    ov = make_ov()
    create_file(ov, b"/etc/app/sub/new", b"x")
    ov.unlink(b"/etc/app/conf")
    found = sorted(os.fsencode(os.path.join(d, n))[len(UPPER):]
                   for d, ds, fs in os.walk(os.fsdecode(UPPER)) for n in ds + fs)
    assert found == [b"/etc", b"/etc/app", b"/etc/app/.wh.conf", b"/etc/app/sub",
                     b"/etc/app/sub/new"]
