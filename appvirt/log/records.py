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


_FD_NAMES = frozenset(("dfd", "dirfd", "olddfd", "newdfd", "fd"))
_MODE_CALLS = frozenset(("open", "openat", "creat", "mkdir", "mkdirat", "chmod", "fchmodat",
                         "mknod", "mknodat"))
_PATH = None                # a decoder slot for an argument the stop holds as a path


def _value_decoder(syscall: str, ctype: str, name: str) -> Callable[[int], Any]:
    """How one argument of one syscall is shown (flags symbolically, ints signed ...)."""
    _, formatters = _python_ptrace()
    fmt = formatters.get((name, syscall))
    if fmt is not None:
        return lambda v: fmt(_Arg(v))
    if name == "mode" and syscall in _MODE_CALLS:
        plain: Callable[[int], Any] = lambda v: oct(v & 0o7777)
    elif "*" in ctype:
        plain = lambda v: hex(v) if v else "NULL"
    elif ctype in _INT_TYPES:
        if "int" in ctype and "long" not in ctype:
            signed = ctype == "int"
            plain = (lambda v: (v & 0xFFFFFFFF) - (1 << 32) if signed and v & 0x80000000
                     else v & 0xFFFFFFFF)
        else:
            plain = lambda v: v
    else:
        plain = hex
    if name in _FD_NAMES:
        return lambda v: "AT_FDCWD" if v & 0xFFFFFFFF == AT_FDCWD else plain(v)
    return plain


@functools.cache
def _decoders(syscall: str, path_args: tuple[int, ...]
              ) -> tuple[tuple[str, Callable[[int], Any] | None], ...]:
    """(name, decoder or _PATH) of each argument of a syscall, worked out once."""
    prototypes, _ = _python_ptrace()
    proto = prototypes.get(syscall)
    names = list(proto[1]) if proto else [("long", f"arg{i}") for i in range(6)]
    return tuple((name, _PATH if i in path_args else _value_decoder(syscall, ctype, name))
                 for i, (ctype, name) in enumerate(names[:6]))


def decode_args(stop: Stop) -> dict[str, Any]:
    """Name and format the arguments of a stop (paths as read, flags symbolically)."""
    out: dict[str, Any] = {}
    args = stop.args
    for i, (name, decode) in enumerate(_decoders(stop.name, stop.entry.path_args)):
        if decode is _PATH:
            p = stop.path(i)
            out[name] = None if p is None else os.fsdecode(p)
        else:
            out[name] = decode(args[i])
    return out


def errno_name(result: int) -> str | None:
    return errno.errorcode.get(-result) if -4096 < result < 0 else None
