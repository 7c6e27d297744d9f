"""Every mutation through the overlay: the view changes, the host does not, errors are the
kernel's."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

import pytest
from overlay_helpers import UPPER, create_file, ls, names, read, write_file

from appvirt.errors import GuestErrno
from appvirt.overlay import Layer, Overlay, hostio

EXCHANGE, NOREPLACE, WHITEOUT = (hostio.RENAME_EXCHANGE, hostio.RENAME_NOREPLACE,
                                 hostio.RENAME_WHITEOUT)


def errno_of(call: Callable[[], object]) -> int:
    with pytest.raises(GuestErrno) as ei:
        call()
    return ei.value.errno


def host_bytes(p: bytes) -> bytes:
    with open(p, "rb") as f:
        return f.read()


def test_copy_up_keeps_content_and_metadata(ov: Overlay, lower: bytes) -> None:
    os.chmod(lower + b"/etc/app/conf", 0o640)
    os.utime(lower + b"/etc/app/conf", ns=(1_000_000_123, 2_000_000_456))
    os.utime(lower + b"/etc/app", ns=(3_000_000_001, 4_000_000_002))
    os.chmod(lower + b"/etc/app", 0o750)
    os.setxattr(lower + b"/etc/app/conf", b"user.origin", b"host")
    up = ov.copy_up(b"/etc/app/conf")
    assert up == UPPER + b"/etc/app/conf"
    st = os.lstat(up)
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_123, 2_000_000_456)
    assert os.getxattr(up, b"user.origin") == b"host"
    assert host_bytes(up) == b"a=1\n"
    dst = os.lstat(UPPER + b"/etc/app")                # the parent, copied and unchanged
    assert stat.S_IMODE(dst.st_mode) == 0o750 and dst.st_mtime_ns == 4_000_000_002
    assert ov.entry(b"/etc/app/conf").layer is Layer.UPPER
    assert ov.copy_up(b"/etc/app/conf") == up          # already there: nothing to do
    assert names(ov, b"/etc/app") == [b"conf", b"sub"]   # the rest still falls through


def test_copy_up_for_truncation_copies_no_content(ov: Overlay) -> None:
    up = ov.copy_up(b"/etc/hosts", truncate=True)
    assert os.lstat(up).st_size == 0
    assert stat.S_IMODE(os.lstat(up).st_mode) == stat.S_IMODE(ov.lstat(b"/etc/hosts").st_mode)


def test_writes_land_in_the_upper_copy(ov: Overlay, lower: bytes) -> None:
    write_file(ov, b"/etc/hosts", b"10.0.0.1 box\n", append=True)
    assert read(ov, b"/etc/hosts") == b"127.0.0.1 localhost\n10.0.0.1 box\n"
    assert host_bytes(lower + b"/etc/hosts") == b"127.0.0.1 localhost\n"
    write_file(ov, b"/etc/passwd", b"x", append=False)
    assert read(ov, b"/etc/passwd") == b"x"


def test_unlink_of_a_lower_file_leaves_a_whiteout(ov: Overlay, lower: bytes) -> None:
    ov.unlink(b"/etc/hosts")
    assert ov.lstat(b"/etc/hosts") is None and b"hosts" not in names(ov, b"/etc")
    assert os.path.isfile(UPPER + b"/etc/.wh.hosts")
    assert os.path.isfile(lower + b"/etc/hosts")
    assert errno_of(lambda: ov.unlink(b"/etc/hosts")) == errno.ENOENT
    create_file(ov, b"/etc/hosts", b"new")            # re-created: the whiteout goes
    assert read(ov, b"/etc/hosts") == b"new" and not os.path.exists(UPPER + b"/etc/.wh.hosts")


def test_unlink_of_an_upper_only_file_leaves_nothing(ov: Overlay) -> None:
    create_file(ov, b"/etc/mine", b"m")
    ov.unlink(b"/etc/mine")
    assert ov.lstat(b"/etc/mine") is None
    assert ls(UPPER + b"/etc") == []


def test_unlink_and_rmdir_errors(ov: Overlay) -> None:
    assert errno_of(lambda: ov.unlink(b"/etc/app")) == errno.EISDIR
    assert errno_of(lambda: ov.rmdir(b"/etc/hosts")) == errno.ENOTDIR
    assert errno_of(lambda: ov.rmdir(b"/etc/app")) == errno.ENOTEMPTY
    assert errno_of(lambda: ov.rmdir(b"/")) == errno.EBUSY
    assert errno_of(lambda: ov.rmdir(b"/nope")) == errno.ENOENT
    ov.unlink(b"/etc/link")                            # a symlink itself, not its target
    assert ov.lstat(b"/etc/hosts") is not None


def test_rmdir_then_mkdir_is_opaque(ov: Overlay, lower: bytes) -> None:
    ov.unlink(b"/etc/app/sub/deep")
    ov.rmdir(b"/etc/app/sub")
    ov.unlink(b"/etc/app/conf")
    ov.rmdir(b"/etc/app")
    assert ov.lstat(b"/etc/app") is None and os.path.isfile(UPPER + b"/etc/.wh.app")
    ov.mkdir(b"/etc/app", 0o700)
    assert names(ov, b"/etc/app") == [] and ov.lstat(b"/etc/app/conf") is None
    assert ov.lstat(b"/etc/app/sub/deep") is None
    assert os.path.isfile(UPPER + b"/etc/app/.wh..wh..opq")
    assert not os.path.exists(UPPER + b"/etc/.wh.app")
    assert stat.S_IMODE(ov.lstat(b"/etc/app").st_mode) == 0o700
    assert os.path.isfile(lower + b"/etc/app/sub/deep")


def test_mkdir_errors_and_modes(ov: Overlay) -> None:
    ov.mkdir(b"/etc/d", 0o1750)
    assert stat.S_IMODE(ov.lstat(b"/etc/d").st_mode) == 0o1750
    assert errno_of(lambda: ov.mkdir(b"/etc/d", 0o755)) == errno.EEXIST
    assert errno_of(lambda: ov.mkdir(b"/etc/hosts", 0o755)) == errno.EEXIST
    assert errno_of(lambda: ov.mkdir(b"/nope/d", 0o755)) == errno.ENOENT
    assert errno_of(lambda: ov.mkdir(b"/etc/hosts/d", 0o755)) == errno.ENOTDIR
    assert errno_of(lambda: ov.mkdir(b"/", 0o755)) == errno.EEXIST


def test_rename_of_a_lower_file(ov: Overlay, lower: bytes) -> None:
    ov.rename(b"/etc/hosts", b"/etc/hosts.bak")
    assert ov.lstat(b"/etc/hosts") is None
    assert read(ov, b"/etc/hosts.bak") == b"127.0.0.1 localhost\n"
    assert os.path.isfile(UPPER + b"/etc/.wh.hosts")
    assert host_bytes(lower + b"/etc/hosts") == b"127.0.0.1 localhost\n"
    assert not os.path.exists(lower + b"/etc/hosts.bak")
    ov.rename(b"/etc/hosts.bak", b"/etc/passwd")       # over a lower file
    assert read(ov, b"/etc/passwd") == b"127.0.0.1 localhost\n"
    assert names(ov, b"/etc") == [b"app", b"link", b"passwd"]


def test_rename_of_a_lower_directory_copies_the_tree(ov: Overlay, lower: bytes) -> None:
    write_file(ov, b"/etc/app/conf", b"changed", append=False)   # a merged directory
    ov.rename(b"/etc/app", b"/srv")
    assert ov.lstat(b"/etc/app") is None and names(ov, b"/etc") == [b"hosts", b"link",
                                                                      b"passwd"]
    assert names(ov, b"/srv") == [b"conf", b"sub"]
    assert read(ov, b"/srv/conf") == b"changed" and read(ov, b"/srv/sub/deep") == b"deep\n"
    assert os.path.isfile(UPPER + b"/etc/.wh.app") and not os.path.exists(
        UPPER + b"/etc/app")
    assert ls(lower + b"/etc/app") == [b"conf", b"sub"]
    assert host_bytes(lower + b"/etc/app/conf") == b"a=1\n"
    ov.mkdir(b"/etc/app", 0o755)                        # the old name is free and opaque
    assert names(ov, b"/etc/app") == []


def test_rename_of_an_upper_directory_is_a_plain_rename(ov: Overlay) -> None:
    ov.mkdir(b"/data", 0o755)
    create_file(ov, b"/data/f", b"f")
    ino = os.lstat(UPPER + b"/data").st_ino
    ov.rename(b"/data", b"/data2")
    assert os.lstat(UPPER + b"/data2").st_ino == ino
    assert read(ov, b"/data2/f") == b"f" and ov.lstat(b"/data") is None
    assert not os.path.exists(UPPER + b"/.wh.data")    # nothing below to hide


def test_rename_over_an_empty_lower_directory(ov: Overlay) -> None:
    ov.mkdir(b"/data", 0o755)
    create_file(ov, b"/data/f", b"f")
    ov.rename(b"/data", b"/empty")
    assert names(ov, b"/empty") == [b"f"]
    assert os.path.isfile(UPPER + b"/empty/.wh..wh..opq")


def test_rename_errors(ov: Overlay) -> None:
    assert errno_of(lambda: ov.rename(b"/etc", b"/etc/app/x")) == errno.EINVAL
    assert errno_of(lambda: ov.rename(b"/etc/app/sub", b"/etc")) == errno.ENOTEMPTY
    assert errno_of(lambda: ov.rename(b"/etc/app", b"/etc/hosts")) == errno.ENOTDIR
    assert errno_of(lambda: ov.rename(b"/etc/hosts", b"/etc/app")) == errno.EISDIR
    assert errno_of(lambda: ov.rename(b"/empty", b"/etc/app")) == errno.ENOTEMPTY
    assert errno_of(lambda: ov.rename(b"/nope", b"/x")) == errno.ENOENT
    assert errno_of(lambda: ov.rename(b"/etc/hosts", b"/nope/x")) == errno.ENOENT
    assert errno_of(lambda: ov.rename(b"/etc/hosts", b"/etc/passwd", NOREPLACE)) == errno.EEXIST
    assert errno_of(lambda: ov.rename(b"/etc/hosts", b"/x", EXCHANGE)) == errno.ENOENT
    assert errno_of(lambda: ov.rename(b"/etc/hosts", b"/x", WHITEOUT)) == errno.EINVAL
    assert errno_of(lambda: ov.rename(b"/etc/hosts", b"/x", EXCHANGE | NOREPLACE)) \
        == errno.EINVAL
    assert errno_of(lambda: ov.rename(b"/", b"/x")) == errno.EBUSY
    ov.rename(b"/etc/hosts", b"/etc/hosts")            # the same name: nothing happens
    assert not os.path.exists(UPPER + b"/etc")


def test_rename_exchange(ov: Overlay) -> None:
    ov.rename(b"/etc/hosts", b"/etc/app", EXCHANGE)
    assert read(ov, b"/etc/app") == b"127.0.0.1 localhost\n"
    assert names(ov, b"/etc/hosts") == [b"conf", b"sub"]
    assert read(ov, b"/etc/hosts/sub/deep") == b"deep\n"
    ov.rename(b"/etc/hosts", b"/etc/app", EXCHANGE)
    assert read(ov, b"/etc/hosts") == b"127.0.0.1 localhost\n"
    assert names(ov, b"/etc/app") == [b"conf", b"sub"]


def test_hard_link_of_a_lower_file_is_a_real_link(ov: Overlay, lower: bytes) -> None:
    ov.link(b"/etc/hosts", b"/etc/hosts2")
    a, b = ov.entry(b"/etc/hosts"), ov.entry(b"/etc/hosts2")
    assert a.layer is b.layer is Layer.UPPER
    assert a.st.st_ino == b.st.st_ino and a.st.st_nlink == 2
    write_file(ov, b"/etc/hosts2", b"via the link", append=False)
    assert read(ov, b"/etc/hosts") == b"via the link"
    assert host_bytes(lower + b"/etc/hosts") == b"127.0.0.1 localhost\n"
    assert errno_of(lambda: ov.link(b"/etc/app", b"/etc/app2")) == errno.EPERM
    assert errno_of(lambda: ov.link(b"/etc/hosts", b"/etc/passwd")) == errno.EEXIST
    assert errno_of(lambda: ov.link(b"/nope", b"/x")) == errno.ENOENT
    ov.link(b"/etc/link", b"/etc/link2")                # the symlink itself
    assert ov.readlink(b"/etc/link2") == b"hosts"


def test_symlink(ov: Overlay) -> None:
    ov.symlink(b"/etc/hosts", b"/etc/s")
    assert ov.readlink(b"/etc/s") == b"/etc/hosts"
    assert stat.S_ISLNK(ov.lstat(b"/etc/s").st_mode)
    assert errno_of(lambda: ov.symlink(b"x", b"/etc/s")) == errno.EEXIST


def test_mknod(ov: Overlay) -> None:
    ov.mknod(b"/fifo", stat.S_IFIFO | 0o640)
    ov.mknod(b"/plain", 0o600)
    ov.mknod(b"/sock", stat.S_IFSOCK | 0o600)
    assert stat.S_ISFIFO(ov.lstat(b"/fifo").st_mode)
    assert stat.S_IMODE(ov.lstat(b"/fifo").st_mode) == 0o640
    assert stat.S_ISREG(ov.lstat(b"/plain").st_mode)
    assert stat.S_ISSOCK(ov.lstat(b"/sock").st_mode)
    assert errno_of(lambda: ov.mknod(b"/dev0", stat.S_IFCHR | 0o600, 0x0103)) == errno.EPERM
    assert errno_of(lambda: ov.mknod(b"/blk", stat.S_IFBLK | 0o600, 0x0801)) == errno.EPERM
    assert errno_of(lambda: ov.mknod(b"/bad", 0o170000 | 0o600)) == errno.EINVAL


def test_metadata_changes_copy_up(ov: Overlay, lower: bytes) -> None:
    before = os.lstat(lower + b"/etc/hosts")
    ov.chmod(b"/etc/hosts", 0o604)
    assert stat.S_IMODE(ov.lstat(b"/etc/hosts").st_mode) == 0o604
    ov.utimens(b"/etc/hosts", None, 5_000_000_007)
    st = ov.lstat(b"/etc/hosts")
    assert st.st_mtime_ns == 5_000_000_007 and st.st_atime_ns == before.st_atime_ns
    ov.utimens(b"/etc/passwd", None, None)             # nothing to do: no copy
    assert ov.entry(b"/etc/passwd").layer is Layer.LOWER
    ov.chown(b"/etc/passwd", -1, -1)
    assert ov.entry(b"/etc/passwd").layer is Layer.UPPER
    ov.truncate(b"/etc/app/conf", 2)
    assert read(ov, b"/etc/app/conf") == b"a="
    ov.truncate(b"/usr/bin/tool", 0)
    assert read(ov, b"/usr/bin/tool") == b""
    ov.setxattr(b"/etc/app/sub/deep", b"user.k", b"v", 0)
    assert os.getxattr(ov.host_for_read(b"/etc/app/sub/deep"), b"user.k") == b"v"
    ov.removexattr(b"/etc/app/sub/deep", b"user.k")
    after = os.lstat(lower + b"/etc/hosts")
    assert (after.st_mode, after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_mode, before.st_size, before.st_mtime_ns, before.st_ino)
    assert os.listxattr(lower + b"/etc/app/sub/deep") == []
    assert host_bytes(lower + b"/usr/bin/tool") == b"#!/bin/sh\necho tool\n"


def test_metadata_errors(ov: Overlay) -> None:
    assert errno_of(lambda: ov.chmod(b"/etc/link", 0o777)) == errno.EOPNOTSUPP
    assert errno_of(lambda: ov.truncate(b"/etc/app", 0)) == errno.EISDIR
    assert errno_of(lambda: ov.truncate(b"/etc/hosts", -1)) == errno.EINVAL
    assert errno_of(lambda: ov.chmod(b"/nope", 0o600)) == errno.ENOENT
    assert errno_of(lambda: ov.removexattr(b"/etc/hosts", b"user.none")) == errno.ENODATA
    assert ov.entry(b"/etc/hosts").layer is Layer.LOWER   # a failed removal copies nothing
    assert errno_of(lambda: ov.chmod(b"/", 0o700)) == errno.EPERM


def test_prepare_create_and_created(ov: Overlay) -> None:
    ov.unlink(b"/etc/hosts")
    host = ov.prepare_create(b"/etc/hosts")
    assert host == UPPER + b"/etc/hosts"
    assert ov.lstat(b"/etc/hosts") is None             # not yet: the whiteout still hides it
    create_file_failed = True                          # the kernel's create failed: no change
    if create_file_failed:
        assert ov.lstat(b"/etc/hosts") is None and os.path.exists(UPPER + b"/etc/.wh.hosts")
    with open(host, "xb") as f:
        f.write(b"fresh")
    ov.created(b"/etc/hosts")
    assert read(ov, b"/etc/hosts") == b"fresh"
    assert not os.path.exists(UPPER + b"/etc/.wh.hosts")
    assert errno_of(lambda: ov.prepare_create(b"/etc/passwd")) == errno.EEXIST
    assert errno_of(lambda: ov.prepare_create(b"/nope/x")) == errno.ENOENT
    assert ov.prepare_create(b"/etc/app/sub/new") == UPPER + b"/etc/app/sub/new"
    assert os.path.isdir(UPPER + b"/etc/app/sub")      # parents made real


def test_a_directory_created_by_the_kernel_at_a_whiteout_is_opaque(ov: Overlay) -> None:
    ov.unlink(b"/etc/app/sub/deep")
    ov.rmdir(b"/etc/app/sub")
    os.mkdir(ov.prepare_create(b"/etc/app/sub"))
    ov.created(b"/etc/app/sub")
    assert names(ov, b"/etc/app/sub") == []


def test_unreadable_lower_file_cannot_be_copied_up(ov: Overlay, lower: bytes,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from pyfakefs.helpers import set_uid
    os.chmod(lower + b"/etc/passwd", 0o000)
    os.chown(UPPER, 1000, 1000)                        # the user's own state directory
    set_uid(1000)
    monkeypatch.setattr(hostio, "euid", lambda: 1000)
    assert errno_of(lambda: ov.copy_up(b"/etc/passwd")) == errno.EACCES
    assert ov.entry(b"/etc/passwd").layer is Layer.LOWER
    assert [n for n in ls(UPPER + b"/etc") if n.startswith(b".wh.")] == []


def test_a_change_the_user_could_not_make_on_the_host_works_on_the_copy(
        ov: Overlay, lower: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """/etc is root's 0755 directory: the user's own copy of it is writable."""
    from pyfakefs.helpers import set_uid
    os.chmod(lower + b"/etc", 0o755)
    os.chown(UPPER, 1000, 1000)
    set_uid(1000)
    monkeypatch.setattr(hostio, "euid", lambda: 1000)
    with pytest.raises(PermissionError):
        os.unlink(lower + b"/etc/hosts")               # the host says no
    ov.unlink(b"/etc/hosts")                           # the program's view says yes
    assert ov.lstat(b"/etc/hosts") is None and os.path.exists(lower + b"/etc/hosts")


def test_the_index_tells_the_paths_it_changed_at():
    """UpperIndex.take_changed: the guest paths of its changes since the last take, in order;
    None when a whole collection changed or when there were too many to keep."""
    from appvirt.overlay.index import JOURNAL_MAX, UpperIndex
    ix = UpperIndex()
    ix.kinds[b"/a"] = 0o040000
    ix.whiteouts.add(b"/a/gone")
    ix.opaque.add(b"/a")
    del ix.kinds[b"/a"]
    ix.whiteouts.discard(b"/nothing")
    assert ix.take_changed() == [b"/a", b"/a/gone", b"/a", b"/a", b"/nothing"]
    assert ix.take_changed() == []
    version = ix.version
    ix.kinds.update({b"/b": 0o100000})
    assert ix.take_changed() is None and ix.version == version + 1
    for i in range(JOURNAL_MAX + 1):
        ix.whiteouts.add(b"/w%d" % i)
    assert ix.take_changed() is None
    ix.opaque.add(b"/c")
    assert ix.take_changed() == [b"/c"]
