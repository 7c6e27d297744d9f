"""Copy-up: atomic (a failure or a crash never shows a partial file), sparse holes, extended
attributes, owners and times, on pyfakefs and on the real temporary file system."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from overlay_helpers import OverlayFactory, UPPER, ls, mode_of, names, read

from appvirt.errors import GuestErrno
from appvirt.overlay import Layer, Overlay
from appvirt.overlay import copy as copy_mod


def _failing_copy(monkeypatch: pytest.MonkeyPatch, *, cleanup: bool) -> None:
    """Make the data copy write half the file and then fail (disk full, I/O error)."""
    def half_then_fail(fd_in: int, fd_out: int, size: int) -> None:
        os.write(fd_out, os.read(fd_in, max(1, size // 2)))
        raise OSError(errno.EIO, "I/O error")
    monkeypatch.setattr(copy_mod, "copy_data", half_then_fail)
    if not cleanup:                       # as if the process died before cleaning up
        monkeypatch.setattr(copy_mod, "discard", lambda p: None)


def test_a_failed_copy_up_leaves_nothing_visible(ov: Overlay, lower: bytes,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _failing_copy(monkeypatch, cleanup=True)
    with pytest.raises(GuestErrno) as ei:
        ov.copy_up(b"/etc/app/conf")
    assert ei.value.errno == errno.EIO
    e = ov.entry(b"/etc/app/conf")
    assert e is not None and e.layer is Layer.LOWER and read(ov, b"/etc/app/conf") == b"a=1\n"
    assert ls(UPPER + b"/etc/app") == []                 # no partial file, no temporary
    assert names(ov, b"/etc/app") == [b"conf", b"sub"]


def test_a_crash_mid_copy_leaves_only_an_invisible_temporary(
        make_ov: OverlayFactory, lower: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    ov = make_ov()
    _failing_copy(monkeypatch, cleanup=False)
    with pytest.raises(GuestErrno):
        ov.copy_up(b"/etc/app/conf")
    left = ls(UPPER + b"/etc/app")
    assert len(left) == 1 and left[0].startswith(b".wh..wh..tmp.")   # the partial copy
    assert names(ov, b"/etc/app") == [b"conf", b"sub"]
    assert read(ov, b"/etc/app/conf") == b"a=1\n"
    assert ov.to_guest(UPPER + b"/etc/app/" + left[0]) is None
    monkeypatch.undo()
    again = make_ov()                                    # the next run cleans up
    assert ls(UPPER + b"/etc/app") == []
    assert names(again, b"/etc/app") == [b"conf", b"sub"]
    again.copy_up(b"/etc/app/conf")
    assert read(again, b"/etc/app/conf") == b"a=1\n"


def test_an_interrupted_delete_resolves_to_the_object(make_ov: OverlayFactory) -> None:
    """A whiteout next to a present object (killed between the two steps of a create or a
    delete) gives way to the object when the overlay is next loaded."""
    ov = make_ov()
    ov.copy_up(b"/etc/hosts")
    with open(UPPER + b"/etc/.wh.hosts", "wb"):
        pass
    again = make_ov()
    assert read(again, b"/etc/hosts") == b"127.0.0.1 localhost\n"
    assert ls(UPPER + b"/etc") == [b"hosts"]


def test_symlinks_fifos_and_directories_copy_up_as_themselves(ov: Overlay,
                                                              lower: bytes) -> None:
    os.mknod(lower + b"/etc/fifo", stat.S_IFIFO | 0o640)
    up = ov.copy_up(b"/etc/link")
    assert stat.S_ISLNK(os.lstat(up).st_mode) and os.readlink(up) in (b"hosts", "hosts")
    assert stat.S_ISFIFO(os.lstat(ov.copy_up(b"/etc/fifo")).st_mode)
    up_dir = ov.copy_up(b"/etc/app")
    assert os.path.isdir(up_dir) and ls(up_dir) == []    # the directory, not its content
    assert names(ov, b"/etc/app") == [b"conf", b"sub"]


# ---- on the real file system (pyfakefs models neither holes nor security xattrs)
@pytest.fixture
def real(tmp_path: Path) -> tuple[Path, Overlay]:
    lower = tmp_path / "lower"
    (lower / "data").mkdir(parents=True)
    return lower, Overlay(tmp_path / "upper", mode_of=mode_of(),
                          lower_root=os.fsencode(lower))


def test_sparse_holes_survive_copy_up(real: tuple[Path, Overlay]) -> None:
    lower, ov = real
    big = lower / "data" / "sparse.img"
    with open(big, "wb") as f:
        f.write(b"head" * 1024)
        f.seek(64 << 20)                                  # a 64 MiB hole
        f.write(b"tail" * 1024)
    st = os.lstat(big)
    if st.st_blocks * 512 >= st.st_size:
        pytest.skip("this file system does not make sparse files")
    up = ov.copy_up(b"/data/sparse.img")
    ust = os.lstat(up)
    assert ust.st_size == st.st_size
    assert ust.st_blocks * 512 < 1 << 20, "the hole was filled in"
    with open(up, "rb") as a, open(big, "rb") as b:
        assert a.read(4096) == b.read(4096)
        a.seek(64 << 20)
        b.seek(64 << 20)
        assert a.read() == b.read() == b"tail" * 1024
        a.seek(32 << 20)
        assert a.read(16) == bytes(16)


def test_sparse_file_ending_in_a_hole(real: tuple[Path, Overlay]) -> None:
    lower, ov = real
    f = lower / "data" / "trailing"
    with open(f, "wb") as out:
        out.write(b"x")
        out.truncate(8 << 20)
    up = ov.copy_up(b"/data/trailing")
    assert os.lstat(up).st_size == 8 << 20
    with open(up, "rb") as a:
        assert a.read(2) == b"x\0"


def test_xattrs_survive_copy_up(real: tuple[Path, Overlay]) -> None:
    lower, ov = real
    f = lower / "data" / "attrs"
    f.write_bytes(b"content")
    try:
        os.setxattr(f, "user.appvirt.test", b"\x00\xffbinary")
    except OSError as e:
        pytest.skip(f"user xattrs unsupported here: {e.strerror}")
    trusted = True
    try:
        os.setxattr(f, "trusted.appvirt", b"root only")
    except OSError:
        trusted = False                                   # not root: skipped by copy-up too
    up = ov.copy_up(b"/data/attrs")
    assert os.getxattr(up, "user.appvirt.test") == b"\x00\xffbinary"
    if trusted:
        assert os.getxattr(up, "trusted.appvirt") == b"root only"
    ov.setxattr(b"/data/attrs", b"user.more", b"1", 0)
    assert "user.more" not in os.listxattr(f)


def test_times_mode_and_owner_survive_copy_up(real: tuple[Path, Overlay]) -> None:
    lower, ov = real
    f = lower / "data" / "owned"
    f.write_bytes(b"x")
    os.chmod(f, 0o4750)
    os.utime(f, ns=(1_234_567_891, 9_876_543_211))
    owner = (os.getuid(), os.getgid())
    if os.geteuid() == 0:
        os.chown(f, 4321, 8765)
        os.chmod(f, 0o4750)                               # chown dropped the setuid bit
        owner = (4321, 8765)
    up = ov.copy_up(b"/data/owned")
    st = os.lstat(up)
    assert (st.st_uid, st.st_gid) == owner
    assert stat.S_IMODE(st.st_mode) == 0o4750
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_234_567_891, 9_876_543_211)
