"""Run a system call in the tracer on behalf of a tracee ("mirroring").

For calls that only read (stat, statx, access, readlink, statfs, getxattr ...), the tracer
makes the same call on the path it checked and copies the kernel's own output into the
tracee's buffer: the program sees exactly what the kernel would have written, the call never
reaches the kernel from the tracee (no exit stop), and nothing the program changes later can
change what was checked.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping

from ..core import sysnums

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
MAX_OUT = 1 << 16          # readlink/getxattr/listxattr buffers larger than this are capped


def host_syscall(name: str, args: tuple[int | bytes | None, ...],
                 out: Mapping[int, int]) -> tuple[int, dict[int, bytes]]:
    """Call `name` with args (bytes become NUL-terminated strings, None a NULL pointer);
    arguments listed in `out` get a zeroed buffer of that size. Returns (result or -errno,
    {arg index: output buffer})."""
    keep = []
    cargs: list[object] = []
    bufs: dict[int, ctypes.Array[ctypes.c_char]] = {}
    for i, a in enumerate(args):
        if i in out:
            buf = ctypes.create_string_buffer(min(out[i], MAX_OUT) or 1)
            bufs[i] = buf
            cargs.append(ctypes.cast(buf, ctypes.c_void_p))
        elif isinstance(a, bytes):
            s = ctypes.c_char_p(a)
            keep.append(s)
            cargs.append(s)
        elif a is None:
            cargs.append(ctypes.c_void_p(0))
        else:
            cargs.append(ctypes.c_long(a if a < 1 << 63 else a - (1 << 64)))
    rv = _libc.syscall(ctypes.c_long(sysnums.nr(name)), *cargs)
    if rv == -1:
        return -ctypes.get_errno(), {}
    return rv, {i: b.raw for i, b in bufs.items()}
