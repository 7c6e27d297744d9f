"""What goes in a record: decoded arguments (python-ptrace's formatting where it helps)."""

from __future__ import annotations

import errno
import functools
import os
from collections.abc import Callable
from typing import Any

from ..core.stop import Stop

AT_FDCWD = 0xFFFFFF9C      # low 32 bits: callers pass it as an int


class _Arg:
    """The one attribute python-ptrace's formatters read."""

    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        self.value = value


@functools.cache
def _python_ptrace() -> tuple[dict[str, Any], dict[tuple[str, str], Callable[[_Arg], str]]]:
    """python-ptrace's prototypes, and its formatters by (argument, syscall). Imported with
    the first record that needs them: a run that logs nothing does not pay for the import."""
    from ptrace.syscall.posix_arg import formatAccessMode, formatMmapProt, formatOpenFlags
    from ptrace.syscall.prototypes import SYSCALL_PROTOTYPES
    return SYSCALL_PROTOTYPES, {
        ("flags", "open"): formatOpenFlags, ("flags", "openat"): formatOpenFlags,
        ("mode", "access"): formatAccessMode, ("mode", "faccessat"): formatAccessMode,
        ("prot", "mmap"): formatMmapProt, ("prot", "mprotect"): formatMmapProt,
    }

_INT_TYPES = {"int", "unsigned int", "long", "unsigned long", "size_t", "pid_t", "uid_t",
              "gid_t", "umode_t", "loff_t", "off_t", "u32", "clockid_t", "key_serial_t"}


def decode_args(stop: Stop) -> dict[str, Any]:
    """Name and format the arguments of a stop (paths as read, flags symbolically)."""
    prototypes, formatters = _python_ptrace()
    proto = prototypes.get(stop.name)
    names = [(t, n) for t, n in proto[1]] if proto else [("long", f"arg{i}") for i in range(6)]
    out: dict[str, Any] = {}
    for i, (ctype, name) in enumerate(names[:6]):
        value = stop.args[i]
        if i in stop.entry.path_args:
            p = stop.path(i)
            out[name] = None if p is None else os.fsdecode(p)
        elif (name, stop.name) in formatters:
            out[name] = formatters[(name, stop.name)](_Arg(value))
        elif name in ("dfd", "dirfd", "olddfd", "newdfd", "fd") and value & 0xFFFFFFFF == AT_FDCWD:
            out[name] = "AT_FDCWD"
        elif name == "mode" and stop.name in ("open", "openat", "creat", "mkdir", "mkdirat",
                                              "chmod", "fchmodat", "mknod", "mknodat"):
            out[name] = oct(value & 0o7777)
        elif "*" in ctype:
            out[name] = hex(value) if value else "NULL"
        elif ctype in _INT_TYPES:
            v = value & 0xFFFFFFFF if "int" in ctype and "long" not in ctype else value
            out[name] = v - (1 << 32) if ctype == "int" and v & 0x80000000 else v
        else:
            out[name] = hex(value)
    return out


def errno_name(result: int) -> str | None:
    return errno.errorcode.get(-result) if -4096 < result < 0 else None
