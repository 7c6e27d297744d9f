"""Modes meeting each other: passthrough holes, private trees next to overlay ones, hidden
names inside other modes."""

from __future__ import annotations

import errno
import os
import stat

import pytest
from overlay_helpers import OverlayFactory, UPPER, create_file, ls, names, read

from appvirt.errors import GuestErrno
from appvirt.overlay import Layer
from appvirt.policy.model import FileMode

H, P, X = FileMode.HIDDEN, FileMode.PRIVATE, FileMode.PASSTHROUGH


def test_every_passthrough_operation_reaches_the_host(make_ov: OverlayFactory,
                                                       lower: bytes) -> None:
    ov = make_ov([("/tmp", X)])
    with open(lower + b"/tmp/f", "wb") as f:
        f.write(b"0123456789")
    ov.chmod(b"/tmp/f", 0o600)
    ov.utimens(b"/tmp/f", 7, 8)
    ov.truncate(b"/tmp/f", 4)
    ov.setxattr(b"/tmp/f", b"user.k", b"v", 0)
    ov.symlink(b"f", b"/tmp/s")
    ov.link(b"/tmp/f", b"/tmp/g")
    ov.mknod(b"/tmp/p", stat.S_IFIFO | 0o600)
    st = os.lstat(lower + b"/tmp/f")
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_mtime_ns == 8 and st.st_size == 4
    assert st.st_nlink == 2 and os.getxattr(lower + b"/tmp/f", b"user.k") == b"v"
    ov.removexattr(b"/tmp/f", b"user.k")
    assert os.listxattr(lower + b"/tmp/f") == []
    assert ls(lower + b"/tmp") == [b"f", b"g", b"p", b"s"]
    assert ov.entry(b"/tmp/s").layer is Layer.HOST and ov.readlink(b"/tmp/s") == b"f"
    assert names(ov, b"/tmp") == [b"f", b"g", b"p", b"s"]
    assert not os.path.exists(UPPER + b"/tmp")          # nothing in the upper layer
    ov.rename(b"/tmp/g", b"/tmp/s")
    assert ls(lower + b"/tmp") == [b"f", b"p", b"s"]


def test_a_hidden_name_inside_a_passthrough_directory(make_ov: OverlayFactory) -> None:
    ov = make_ov([("/home", X), ("/home/user/.ssh", H)])
    assert names(ov, b"/home/user") == [b"doc.txt"]
    with pytest.raises(GuestErrno) as ei:
        ov.mkdir(b"/home/user/.ssh", 0o700)
    assert ei.value.errno == errno.EACCES


def test_renames_between_private_and_overlay_paths(make_ov: OverlayFactory, lower: bytes) -> None:
    ov = make_ov([("/home/user", P)])
    ov.rename(b"/etc/hosts", b"/home/user/hosts")
    assert read(ov, b"/home/user/hosts") == b"127.0.0.1 localhost\n"
    assert ov.lstat(b"/etc/hosts") is None
    ov.mkdir(b"/home/user/dir", 0o755)
    create_file(ov, b"/home/user/dir/f", b"f")
    ov.rename(b"/home/user/dir", b"/etc/dir")
    assert read(ov, b"/etc/dir/f") == b"f" and names(ov, b"/home/user") == [b"hosts"]
    with open(lower + b"/etc/hosts", "rb") as f:
        assert f.read() == b"127.0.0.1 localhost\n"


def test_private_content_shows_when_the_policy_changes(make_ov: OverlayFactory) -> None:
    """The mode is the policy's: the same upper layer under an overlay rule merges again."""
    private = make_ov([("/home/user", P)])
    create_file(private, b"/home/user/mine", b"m")
    merged = make_ov()
    assert names(merged, b"/home/user") == [b".ssh", b"doc.txt", b"mine"]


def test_a_private_root_over_a_host_file_is_an_opaque_directory(make_ov: OverlayFactory,
                                                                 lower: bytes) -> None:
    ov = make_ov([("/etc/hosts", P)])
    st = ov.lstat(b"/etc/hosts")
    assert st is not None and stat.S_ISDIR(st.st_mode) and names(ov, b"/etc/hosts") == []
    assert os.path.isfile(UPPER + b"/etc/hosts/.wh..wh..opq")
    assert os.path.isfile(lower + b"/etc/hosts")
