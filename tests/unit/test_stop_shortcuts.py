"""Shortcuts of the per-stop path must answer exactly what the long way does: the stat a
lookup already made, packed as the kernel packs it; a path joined without the walk."""

from __future__ import annotations

import ctypes
import os
import posixpath

import pytest
from hypothesis import given, strategies as st

from appvirt.fs.resolver import _plain
from appvirt.handlers.statmeta import pack_stat

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
SYS_NEWFSTATAT, AT_FDCWD, AT_SYMLINK_NOFOLLOW = 262, -100, 0x100


def kernel_stat(path: bytes, follow: bool) -> bytes:
    buf = ctypes.create_string_buffer(144)
    rv = _libc.syscall(SYS_NEWFSTATAT, AT_FDCWD, path, buf,
                       0 if follow else AT_SYMLINK_NOFOLLOW)
    assert rv == 0, os.strerror(ctypes.get_errno())
    return buf.raw


@pytest.mark.parametrize("path", [b"/", b"/etc/passwd", b"/dev/null", b"/proc/self",
                                  b"/proc/self/exe", b"/usr/bin"])
@pytest.mark.parametrize("follow", [True, False])
def test_pack_stat_is_the_kernels_struct_stat(path: bytes, follow: bool, tmp_path) -> None:
    st = os.stat(path) if follow else os.lstat(path)
    assert pack_stat(st) == kernel_stat(path, follow)


def test_pack_stat_keeps_nanoseconds_and_big_numbers(tmp_path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x" * 5000)
    os.utime(f, ns=(1_234_567_891_987_654_321, 4_000_000_000_000_000_001))
    with open(f, "r+b") as h:
        h.truncate(1 << 40)                     # sparse: a size beyond 32 bits
    assert pack_stat(os.lstat(f)) == kernel_stat(os.fsencode(f), False)


NAME = st.sampled_from([b"a", b"b", b".", b"..", b".hidden", b"x" * 255, b"y" * 256, b"...",
                        b""])


@given(st.lists(NAME, max_size=5), st.lists(NAME, min_size=1, max_size=5), st.booleans(),
       st.booleans())
def test_plain_joins_exactly_as_normalisation_would(base_parts, parts, absolute, slashes
                                                    ) -> None:
    # A base is a directory's path as the kernel names it: normal, no over-long name.
    base = b"/" + b"/".join(p for p in base_parts if p not in (b"", b".", b"..") and
                            len(p) <= 255)
    path = (b"/" if absolute else b"") + (b"//" if slashes else b"/").join(parts)
    if not path:
        return
    got = _plain(path, base)
    comps = [c for c in path.split(b"/") if c]
    if not comps or comps[-1] == b"." or b".." in comps or any(len(c) > 255 for c in comps):
        assert got is None      # the walk decides: ".." and a final "." depend on the objects
    else:
        # posixpath keeps a leading "//" (POSIX leaves it to the system); Linux reads "/".
        want = posixpath.normpath(posixpath.join(base, path))
        assert got == b"/" + want.lstrip(b"/")
