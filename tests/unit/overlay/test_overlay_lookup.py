"""Lookups in the merged view: fall-through, listings, reserved names, modes, to_guest."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from overlay_helpers import OverlayFactory, UPPER, create_file, ls, names, read

from appvirt.errors import GuestErrno
from appvirt.overlay import Entry, Layer, Overlay
from appvirt.policy.model import FileMode

H, P, R, X, O = (FileMode.HIDDEN, FileMode.PRIVATE, FileMode.READONLY, FileMode.PASSTHROUGH,
                 FileMode.OVERLAY)


def test_reads_fall_through_to_the_lower_layer(ov: Overlay) -> None:
    e = ov.entry(b"/etc/hosts")
    assert isinstance(e, Entry) and e.layer is Layer.LOWER and e.host == b"/lower/etc/hosts"
    assert e.st.st_size == len(b"127.0.0.1 localhost\n")
    assert ov.host_for_read(b"/etc/hosts") == b"/lower/etc/hosts"
    assert read(ov, b"/etc/hosts") == b"127.0.0.1 localhost\n"
    assert ov.lstat(b"/") is not None and stat.S_ISDIR(ov.lstat(b"/").st_mode)


def test_absent_names(ov: Overlay) -> None:
    assert ov.lstat(b"/nope") is None and ov.entry(b"/etc/nope/deeper") is None
    for call in (ov.host_for_read, ov.readlink, ov.listdir):
        with pytest.raises(GuestErrno) as ei:
            call(b"/nope")
        assert ei.value.errno == errno.ENOENT
    with pytest.raises(GuestErrno) as ei:
        ov.listdir(b"/etc/hosts")
    assert ei.value.errno == errno.ENOTDIR


def test_where_read_answers_from_the_index(ov: Overlay) -> None:
    create_file(ov, b"/etc/new", b"n")
    ov.unlink(b"/etc/passwd")
    assert ov.where_read(b"/etc/new") == ov.host_for_read(b"/etc/new") == ov.upper(b"/etc/new")
    assert ov.where_read(b"/etc/hosts") == ov.host_for_read(b"/etc/hosts")
    assert ov.where_read(b"/nope") == ov.lower(b"/nope")    # the caller's call finds ENOENT
    for gone in (b"/etc/passwd", b"/etc/passwd/x"):             # whited out, or below it
        with pytest.raises(GuestErrno) as ei:
            ov.where_read(gone)
        assert ei.value.errno == errno.ENOENT


def test_readlink_does_not_follow(ov: Overlay) -> None:
    st = ov.lstat(b"/etc/link")
    assert st is not None and stat.S_ISLNK(st.st_mode)
    assert ov.readlink(b"/etc/link") == b"hosts"
    with pytest.raises(GuestErrno) as ei:
        ov.readlink(b"/etc/hosts")
    assert ei.value.errno == errno.EINVAL


def test_listing_merges_layers(ov: Overlay) -> None:
    create_file(ov, b"/etc/new", b"n")
    ov.unlink(b"/etc/passwd")
    ov.chmod(b"/etc/hosts", 0o600)                     # upper copy of a lower name
    listing = ov.listdir(b"/etc")
    assert [d.name for d in listing] == [b"app", b"hosts", b"link", b"new"]
    types = {d.name: d.d_type for d in listing}
    assert types == {b"app": 4, b"hosts": 8, b"link": 10, b"new": 8}
    hosts = next(d for d in listing if d.name == b"hosts")
    assert hosts.ino == ov.lstat(b"/etc/hosts").st_ino == os.lstat(UPPER + b"/etc/hosts").st_ino


def test_reserved_names_are_invisible_and_cannot_be_made(ov: Overlay, lower: bytes) -> None:
    with open(lower + b"/etc/.wh.hosts", "wb"):
        pass                                          # a host file with a reserved name
    ov.unlink(b"/etc/passwd")                         # makes /state/upper/etc/.wh.passwd
    assert b".wh.hosts" not in names(ov, b"/etc") and b".wh.passwd" not in names(ov, b"/etc")
    assert ov.lstat(b"/etc/.wh.passwd") is None and ov.lstat(b"/etc/.wh.hosts") is None
    for make in (lambda g: ov.mkdir(g, 0o755), lambda g: ov.symlink(b"x", g),
                 lambda g: ov.prepare_create(g), lambda g: ov.mknod(g, stat.S_IFIFO | 0o644),
                 lambda g: ov.rename(b"/etc/hosts", g), lambda g: ov.link(b"/etc/hosts", g)):
        with pytest.raises(GuestErrno) as ei:
            make(b"/etc/.wh.x")
        assert ei.value.errno == errno.EPERM
    assert ov.lstat(b"/etc/hosts") is not None        # the failed rename moved nothing


def test_hidden_paths_do_not_exist(make_ov: OverlayFactory) -> None:
    ov = make_ov([("/home/user/.ssh", H)])
    assert ov.mode(b"/home/user/.ssh/id") is H
    assert ov.lstat(b"/home/user/.ssh") is None and ov.lstat(b"/home/user/.ssh/id") is None
    assert names(ov, b"/home/user") == [b"doc.txt"]
    for call, err in ((lambda: ov.unlink(b"/home/user/.ssh/id"), errno.ENOENT),
                      (lambda: ov.host_for_read(b"/home/user/.ssh/id"), errno.ENOENT),
                      (lambda: ov.copy_up(b"/home/user/.ssh/id"), errno.ENOENT),
                      (lambda: ov.rename(b"/home/user/.ssh", b"/home/user/s"), errno.ENOENT),
                      (lambda: ov.mkdir(b"/home/user/.ssh", 0o700), errno.EACCES),
                      (lambda: ov.prepare_create(b"/home/user/.ssh/new"), errno.EACCES),
                      (lambda: ov.rename(b"/home/user/doc.txt", b"/home/user/.ssh"),
                       errno.EACCES)):
        with pytest.raises(GuestErrno) as ei:
            call()
        assert ei.value.errno == err
    assert ov.to_guest(b"/lower/home/user/.ssh/id") is None


def test_hidden_host_paths_and_the_upper_layer_never_show(lower: bytes) -> None:
    upper = lower + b"/var/appvirt/apps/x/upper"     # the state dir inside the guest's "/"
    ov = Overlay(upper, mode_of=lambda p: O, lower_root=lower,
                 hidden_host=(lower + b"/usr", lower + b"/var/appvirt"))
    assert b"usr" not in names(ov, b"/") and ov.lstat(b"/usr/bin/tool") is None
    assert ov.lstat(b"/var/appvirt") is None and ov.lstat(b"/var/appvirt/apps/x/upper") is None
    assert ov.mode(b"/usr/bin") is H
    create_file(ov, b"/etc/new", b"n")
    assert ov.to_guest(upper + b"/etc/new") == b"/etc/new"
    assert ov.to_guest(lower + b"/var/appvirt/apps/x/upper/etc/new") == b"/etc/new"
    assert ov.to_guest(lower + b"/usr/bin/tool") is None


def test_passthrough_is_the_host_itself(make_ov: OverlayFactory, lower: bytes) -> None:
    ov = make_ov([("/tmp", X)])
    assert ov.prepare_create(b"/tmp/f") == lower + b"/tmp/f"
    with open(lower + b"/tmp/f", "wb") as f:
        f.write(b"on the host")
    ov.created(b"/tmp/f")
    e = ov.entry(b"/tmp/f")
    assert e is not None and e.layer is Layer.HOST and e.host == lower + b"/tmp/f"
    ov.mkdir(b"/tmp/d", 0o750)
    assert stat.S_IMODE(os.lstat(lower + b"/tmp/d").st_mode) == 0o750
    ov.rename(b"/tmp/f", b"/tmp/d/g")
    assert os.path.exists(lower + b"/tmp/d/g") and not os.path.exists(lower + b"/tmp/f")
    assert ov.copy_up(b"/tmp/d/g") == lower + b"/tmp/d/g"
    for call in (lambda: ov.rename(b"/tmp/d/g", b"/etc/g"),
                 lambda: ov.rename(b"/etc/hosts", b"/tmp/hosts"),
                 lambda: ov.link(b"/etc/hosts", b"/tmp/hosts"),
                 lambda: ov.link(b"/tmp/d/g", b"/etc/g")):
        with pytest.raises(GuestErrno) as ei:
            call()
        assert ei.value.errno == errno.EXDEV
    ov.unlink(b"/tmp/d/g")
    ov.rmdir(b"/tmp/d")
    assert ls(lower + b"/tmp") == []
    assert not os.path.exists(UPPER + b"/tmp/d")


def test_readonly_sees_earlier_changes_and_refuses_new_ones(make_ov: OverlayFactory) -> None:
    first = make_ov()
    create_file(first, b"/etc/earlier", b"from a run with overlay mode")
    ov = make_ov([("/etc", R)])
    assert read(ov, b"/etc/earlier") == b"from a run with overlay mode"
    assert b"hosts" in names(ov, b"/etc")
    calls = [lambda: ov.unlink(b"/etc/hosts"), lambda: ov.mkdir(b"/etc/new", 0o755),
             lambda: ov.chmod(b"/etc/hosts", 0o600), lambda: ov.copy_up(b"/etc/hosts"),
             lambda: ov.prepare_create(b"/etc/new"), lambda: ov.rename(b"/etc/hosts", b"/x"),
             lambda: ov.rename(b"/empty", b"/etc/empty"), lambda: ov.truncate(b"/etc/hosts", 0),
             lambda: ov.setxattr(b"/etc/hosts", b"user.k", b"v", 0),
             lambda: ov.rmdir(b"/etc/app/sub"), lambda: ov.symlink(b"t", b"/etc/s"),
             lambda: ov.link(b"/etc/hosts", b"/hosts2"), lambda: ov.link(b"/usr/bin/tool",
                                                                          b"/etc/tool"),
             lambda: ov.utimens(b"/etc/hosts", 1, 2), lambda: ov.chown(b"/etc/hosts", -1, -1)]
    for call in calls:
        with pytest.raises(GuestErrno) as ei:
            call()
        assert ei.value.errno == errno.EROFS
    with pytest.raises(GuestErrno) as ei:
        ov.mkdir(b"/etc/app", 0o755)
    assert ei.value.errno == errno.EEXIST
    assert not os.path.exists(UPPER + b"/etc/hosts")


def test_private_paths_start_empty(make_ov: OverlayFactory, lower: bytes) -> None:
    ov = make_ov([("/home/user", P)])
    st = ov.lstat(b"/home/user")
    assert st is not None and stat.S_ISDIR(st.st_mode)
    assert ov.entry(b"/home/user").layer is Layer.UPPER
    assert names(ov, b"/home/user") == [] and ov.lstat(b"/home/user/doc.txt") is None
    assert names(ov, b"/home") == [b"user"]
    create_file(ov, b"/home/user/doc.txt", b"mine")
    ov.mkdir(b"/home/user/.config", 0o700)
    assert names(ov, b"/home/user") == [b".config", b"doc.txt"]
    assert read(ov, b"/home/user/doc.txt") == b"mine"
    with open(lower + b"/home/user/doc.txt", "rb") as f:
        assert f.read() == b"doc\n"
    with pytest.raises(GuestErrno) as ei:
        ov.rmdir(b"/home/user")                       # busy before not empty, as a mount
    assert ei.value.errno == errno.EBUSY
    ov.unlink(b"/home/user/doc.txt")
    ov.rmdir(b"/home/user/.config")
    assert not os.path.exists(UPPER + b"/home/user/.wh.doc.txt")   # no lower to hide
    with pytest.raises(GuestErrno) as ei:
        ov.rmdir(b"/home/user")
    assert ei.value.errno == errno.EBUSY
    with pytest.raises(GuestErrno) as ei:
        ov.rename(b"/home/user", b"/home/other")
    assert ei.value.errno == errno.EBUSY


def test_private_root_missing_on_the_host(make_ov: OverlayFactory) -> None:
    ov = make_ov([("/home/newapp", P), ("/opt/app", P)])
    st = ov.lstat(b"/home/newapp")
    assert st is not None and stat.S_ISDIR(st.st_mode) and names(ov, b"/home/newapp") == []
    assert ov.lstat(b"/opt/app") is None               # its parent is not there either
    ov.mkdir(b"/opt", 0o755)
    assert ov.lstat(b"/opt/app") is not None


def test_to_guest(ov: Overlay, lower: bytes) -> None:
    assert ov.to_guest(lower + b"/etc/hosts") == b"/etc/hosts"
    assert ov.to_guest(lower) == b"/"
    p = ov.copy_up(b"/etc/hosts")
    assert p == UPPER + b"/etc/hosts" and ov.to_guest(p) == b"/etc/hosts"
    assert ov.to_guest(UPPER) == b"/"
    assert ov.to_guest(b"/elsewhere/file") is None
    assert ov.to_guest(UPPER + b"/etc/.wh..wh..tmp.1.2") is None
    assert ov.to_guest(UPPER + b"/etc/.wh.passwd") is None


def test_to_guest_knows_the_real_path_of_a_symlinked_state_dir(tmp_path: Path) -> None:
    """The kernel names open files by real paths (/proc/PID/fd/N)."""
    (tmp_path / "real-home").mkdir()
    (tmp_path / "home").symlink_to("real-home")
    lower = tmp_path / "lower"
    (lower / "etc").mkdir(parents=True)
    (lower / "etc" / "f").write_bytes(b"x")
    ov = Overlay(tmp_path / "home" / "upper", mode_of=lambda p: O,
                 lower_root=os.fsencode(lower), hidden_host=(os.fsencode(tmp_path / "home"),))
    up = ov.copy_up(b"/etc/f")
    assert up == os.fsencode(tmp_path / "real-home" / "upper" / "etc" / "f")
    assert ov.to_guest(os.fsencode(os.path.realpath(up))) == b"/etc/f"
