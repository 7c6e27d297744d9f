"""Merged listings in getdents64/getdents formats, and their handlers."""

from __future__ import annotations

import errno
import struct

from hypothesis import given, strategies as st

from appvirt.core import sysnums
from appvirt.core.action import Deny, Emulate, Rewrite
from appvirt.fs.dirents import Dirent, pack_dirents, pack_dirents64
from appvirt.handlers import TABLE
from appvirt.policy import load_policy_text
from appvirt.testing import FakeContext, handle, make_stop
from appvirt.tracer import seccomp as sc


def parse64(data: bytes) -> list[tuple[int, int, int, bytes]]:
    out, off = [], 0
    while off < len(data):
        ino, d_off, reclen, d_type = struct.unpack_from("<QqHB", data, off)
        name = data[off + 19:off + reclen].split(b"\0", 1)[0]
        out.append((ino, d_off, d_type, name))
        off += reclen
        assert reclen % 8 == 0
    return out


_names = st.lists(st.binary(min_size=1, max_size=40).filter(lambda b: b"\0" not in b
                                                           and b"/" not in b),
                  unique=True, max_size=60)


@given(_names, st.integers(min_value=24, max_value=600))
def test_reading_in_chunks_returns_every_entry_once_in_order(names, count):
    entries = [Dirent(n, i % 13, 1000 + i) for i, n in enumerate(names)]
    pos, seen = 0, []
    while pos < len(entries):
        data, nxt = pack_dirents64(entries, pos, count)
        if not data:
            assert (19 + len(entries[pos].name) + 1 + 7) & ~7 > count   # only a too-small buffer
            return
        recs = parse64(data)
        assert [r[1] for r in recs] == list(range(pos + 1, nxt + 1))   # d_off = next position
        seen += [(r[0], r[2], r[3]) for r in recs]
        pos = nxt
    assert seen == [(e.ino, e.d_type, e.name) for e in entries]


def test_old_getdents_layout_puts_the_type_last():
    data, nxt = pack_dirents([Dirent(b"abc", 8, 7)], 0, 64)
    ino, d_off, reclen = struct.unpack_from("<QQH", data)
    assert (ino, d_off, nxt) == (7, 1, 1)
    assert data[18:21] == b"abc" and data[reclen - 1] == 8


POLICY = load_policy_text("files: {default: hidden}\n", "p.yaml")


def test_getdents_serves_the_listing_and_keeps_the_position_in_the_fd():
    ctx = FakeContext(POLICY)
    ctx.listings[3] = [Dirent(b".", 4, 1), Dirent(b"..", 4, 2), Dirent(b"f", 8, 3)]
    ctx.positions[3] = 1
    stop = make_stop("getdents64", 3, 0x1000, 4096)
    action = handle(stop, ctx)
    assert isinstance(action, Rewrite) and action.nr == sysnums.nr("lseek")
    assert dict(action.args) == {1: 3, 2: 0}            # lseek(fd, 3, SEEK_SET)
    (addr, data), = action.writes
    assert addr == 0x1000 and [r[3] for r in parse64(data)] == [b"..", b"f"]
    assert action.on_exit(stop, 3).result == len(data)
    assert action.on_exit(stop, -errno.EBADF).result == -errno.EBADF
    ctx.positions[3] = 3                                  # at the end: 0 bytes
    action = handle(stop, ctx)
    assert action.writes == () and action.on_exit(stop, 3).result == 0
    small = make_stop("getdents64", 3, 0x1000, 8)
    ctx.positions[3] = 0
    assert handle(small, ctx).errno == errno.EINVAL


def test_host_directories_are_listed_by_the_kernel():
    ctx = FakeContext(POLICY)
    stop = make_stop("getdents64", 5, 0x1000, 4096)
    assert not isinstance(handle(stop, ctx), (Rewrite, Deny))


def test_getcwd_answers_the_programs_path():
    ctx = FakeContext(POLICY, cwd=b"/proj/dir")
    stop = make_stop("getcwd", 0x2000, 100)
    action = handle(stop, ctx)
    assert isinstance(action, Emulate) and action.result == 10
    assert action.writes == ((0x2000, b"/proj/dir\0"),)
    assert make_stop("getcwd", 0x2000, 5).entry.handler(make_stop("getcwd", 0x2000, 5),
                                                       ctx).errno == errno.ERANGE


def test_listing_calls_are_traced_only_for_layered_policies():
    host_only = load_policy_text("files: {default: readonly}\n", "p.yaml")
    for policy, traced in ((host_only, False), (POLICY, True)):
        prog = sc.build_filter(TABLE, TABLE.traced_for(policy))
        verdict = sc.run_filter(prog, sysnums.nr("getdents64")) & 0xFFFF0000
        assert (verdict == sc.RET_TRACE) is traced
