"""Recorded owners and device stand-ins: the table, the stat patches, the handlers."""

from __future__ import annotations

import errno
import os
import stat
import struct

from appvirt.core.action import Deny, Emulate
from appvirt.handlers.statmeta import patch_stat, patch_statx
from appvirt.overlay.meta import FileMeta, MetaTable
from appvirt.policy import load_policy_text
from appvirt.testing import FakeContext, handle, make_stop


def test_records_persist_follow_links_and_go_with_the_last_one(tmp_path):
    upper = tmp_path / "upper"
    upper.mkdir()
    a, b, c = upper / "a", upper / "b", upper / "c"
    a.write_text("x")
    os.link(a, b)
    c.write_text("y")
    table = MetaTable(tmp_path / "meta.sqlite", os.fsencode(upper))
    table.set(os.lstat(a), FileMeta(uid=1000, gid=27))
    table.set(os.lstat(c), FileMeta(kind=stat.S_IFCHR, rdev=os.makedev(1, 3)))
    table.set(os.lstat(a), FileMeta(gid=50))             # a later chgrp keeps the owner
    assert table.of(os.lstat(b)) == FileMeta(1000, 50)   # a hard link is the same file
    table.removing(os.fsencode(b))                       # one of two links: kept
    os.unlink(b)
    assert table.of(os.lstat(a)) is not None
    table.close()
    again = MetaTable(tmp_path / "meta.sqlite", os.fsencode(upper))
    assert again.of(os.lstat(c)).rdev == os.makedev(1, 3)
    again.removing(os.fsencode(a))
    assert again.of(os.lstat(a)) is None
    again.close()
    os.unlink(c)                                         # removed behind the table's back
    assert not MetaTable(tmp_path / "meta.sqlite", os.fsencode(upper))


def _stat_buf(dev: int, ino: int, mode: int, uid: int, gid: int, rdev: int) -> bytes:
    buf = bytearray(144)
    struct.pack_into("<QQQIII", buf, 0, dev, ino, 1, mode, uid, gid)
    struct.pack_into("<Q", buf, 40, rdev)
    return bytes(buf)


def test_stat_buffers_show_the_record_and_nothing_else_changes():
    table = MetaTable(None)
    st = os.stat_result((0o100600, 77, 5, 1, 0, 0, 0, 0, 0, 0))   # mode ino dev nlink uid gid
    table.set(st, FileMeta(uid=1000, kind=stat.S_IFBLK, rdev=os.makedev(8, 0)))
    out = patch_stat(_stat_buf(5, 77, 0o100640, 0, 0, 0), table)
    assert struct.unpack_from("<III", out, 24) == (stat.S_IFBLK | 0o640, 1000, 0)
    assert struct.unpack_from("<Q", out, 40)[0] == os.makedev(8, 0)
    other = _stat_buf(5, 78, 0o100640, 0, 0, 0)
    assert patch_stat(other, table) == other
    sx = bytearray(256)
    struct.pack_into("<I", sx, 0, 0x1 | 0x2 | 0x8 | 0x100)             # no STATX_GID
    struct.pack_into("<IIH", sx, 20, 0, 4, 0o100644)
    struct.pack_into("<Q", sx, 32, 77)
    struct.pack_into("<II", sx, 136, os.major(5), os.minor(5))
    out = patch_statx(bytes(sx), table)
    assert struct.unpack_from("<IIH", out, 20) == (1000, 4, stat.S_IFBLK | 0o644)
    assert struct.unpack_from("<II", out, 128) == (8, 0)


def _ctx(fs, text: str, real_root: bool = True) -> FakeContext:
    fs.create_dir("/w")
    fs.create_file("/w/f", contents="x")
    ctx = FakeContext(load_policy_text(text, "p.yaml"), cwd=b"/w").use_overlay()
    ctx.real_root = real_root
    return ctx


def test_device_nodes_are_stand_ins_under_an_identity_with_cap_mknod(fs):
    ctx = _ctx(fs, "identity: virtual-root\n")
    act = handle(make_stop("mknod", 0, stat.S_IFCHR | 0o666, os.makedev(1, 3),
                           paths={0: b"null"}), ctx)
    assert isinstance(act, Emulate), act
    host = ctx.fs.ov.upper(b"/w/null")
    assert stat.S_ISREG(os.lstat(host).st_mode)          # never a real device node
    assert ctx.fs.meta.of(os.lstat(host)) == FileMeta(kind=stat.S_IFCHR,
                                                      rdev=os.makedev(1, 3))
    for text in ("{}", "identity: {uid: 1000}\n"):
        other = FakeContext(load_policy_text(text, "p.yaml"), cwd=b"/w").use_overlay()
        act = handle(make_stop("mknod", 0, stat.S_IFBLK | 0o600, 0, paths={0: b"sda"}), other)
        assert isinstance(act, Deny) and act.errno == errno.EPERM, text


def test_chown_is_remembered_when_appvirt_cannot_make_it(fs):
    ctx = _ctx(fs, "identity: virtual-root\n", real_root=False)
    act = handle(make_stop("chown", 0, 1000, 0xFFFFFFFF, paths={0: b"f"}), ctx)
    assert isinstance(act, Emulate)
    up = os.lstat(ctx.fs.ov.upper(b"/w/f"))                # copied up, host file untouched
    assert ctx.fs.meta.of(up) == FileMeta(uid=1000, gid=None)
    assert os.lstat("/w/f").st_uid == up.st_uid
    handle(make_stop("unlink", 0, paths={0: b"f"}), ctx)
    assert not ctx.fs.meta                               # the record went with the file


def test_what_a_chosen_user_makes_is_recorded_as_its_own_when_appvirt_cannot_chown(fs):
    ctx = _ctx(fs, "identity: {uid: 1000, gid: 100}\n", real_root=False)
    for stop in (make_stop("mkdir", 0, 0o755, paths={0: b"d"}),
                 make_stop("symlink", 0, 1, paths={0: b"f", 1: b"l"}),
                 make_stop("mknod", 0, stat.S_IFIFO | 0o644, 0, paths={0: b"p"})):
        assert isinstance(handle(stop, ctx), Emulate), stop
    for name in (b"d", b"l", b"p"):
        up = os.lstat(ctx.fs.ov.upper(b"/w/" + name))
        assert ctx.fs.meta.of(up) == FileMeta(uid=1000, gid=100), name
    # Below a set-group-ID directory the group is the directory's, as the kernel gives it.
    os.chmod(ctx.fs.ov.upper(b"/w/d"), 0o2755)
    handle(make_stop("mkdir", 0, 0o755, paths={0: b"d/sub"}), ctx)
    assert ctx.fs.meta.of(os.lstat(ctx.fs.ov.upper(b"/w/d/sub"))) == FileMeta(uid=1000)


def test_without_an_identity_nothing_is_recorded_for_new_files(fs):
    ctx = _ctx(fs, "{}", real_root=False)
    handle(make_stop("mkdir", 0, 0o755, paths={0: b"d"}), ctx)
    assert not ctx.fs.meta


def test_a_file_renamed_over_takes_its_record_with_it(fs):
    ctx = _ctx(fs, "identity: virtual-root\n", real_root=False)
    fs.create_file("/w/g", contents="y")
    handle(make_stop("chown", 0, 1000, 0xFFFFFFFF, paths={0: b"f"}), ctx)
    assert ctx.fs.meta
    act = handle(make_stop("rename", 0, 1, paths={0: b"g", 1: b"f"}), ctx)
    assert isinstance(act, Emulate), act
    assert not ctx.fs.meta             # no record left for an inode number to be reused
