"""What goes in a record: decoded arguments (python-ptrace's formatting where it helps)."""

import enum
import errno
import functools
import os
from collections.abc import Callable
from typing import Any, NamedTuple

from ..core.stop import Stop
from . import ptrace_facts

AT_FDCWD = 0xFFFFFF9C      # low 32 bits: callers pass it as an int


# The arguments python-ptrace shows symbolically, by (argument, syscall): its formatter.
_SYMBOLIC = {("flags", "open"): "formatOpenFlags", ("flags", "openat"): "formatOpenFlags",
             ("mode", "access"): "formatAccessMode", ("mode", "faccessat"): "formatAccessMode",
             ("prot", "mmap"): "formatMmapProt", ("prot", "mprotect"): "formatMmapProt"}

_INT_TYPES = {"int", "unsigned int", "long", "unsigned long", "size_t", "pid_t", "uid_t",
              "gid_t", "umode_t", "loff_t", "off_t", "u32", "clockid_t", "key_serial_t"}


_FD_NAMES = frozenset(("dfd", "dirfd", "olddfd", "newdfd", "fd"))
_MODE_CALLS = frozenset(("open", "openat", "creat", "mkdir", "mkdirat", "chmod", "fchmodat",
                         "mknod", "mknodat"))


class ArgFormat(enum.IntEnum):
    """How a record shows one argument (the compiled loop, _fastpath_log.c, shows the same
    for the calls it logs: keep the numbers in step with its enum ArgFormat)."""

    PATH = 0        # the string the stop read from the program (null for NULL)
    UNSIGNED = 1    # the whole register as an unsigned integer
    INT = 2         # the low 32 bits as a C int
    UINT = 3        # the low 32 bits as a C unsigned int
    OCTAL = 4       # a permission mode: oct(v & 0o7777)
    POINTER = 5     # hex, or "NULL"
    HEX = 6
    SYMBOLIC = 7    # python-ptrace's text for the value (open flags, access modes ...)


class ArgSpec(NamedTuple):
    """One argument of one syscall in the log: its name, its format, and whether the value
    AT_FDCWD is shown by name (a dirfd); `symbolic` formats SYMBOLIC values."""

    name: str
    fmt: ArgFormat
    dirfd: bool = False
    symbolic: Callable[[int], str] | None = None


def _arg_spec(syscall: str, ctype: str, name: str) -> ArgSpec:
    """How one argument of one syscall is shown (flags symbolically, ints signed ...)."""
    fmt = _SYMBOLIC.get((name, syscall))
    if fmt is not None:
        return ArgSpec(name, ArgFormat.SYMBOLIC,
                       symbolic=functools.partial(ptrace_facts.text, fmt))
    if name == "mode" and syscall in _MODE_CALLS:
        kind = ArgFormat.OCTAL
    elif "*" in ctype:
        kind = ArgFormat.POINTER
    elif ctype in _INT_TYPES:
        if "int" in ctype and "long" not in ctype:
            kind = ArgFormat.INT if ctype == "int" else ArgFormat.UINT
        else:
            kind = ArgFormat.UNSIGNED
    else:
        kind = ArgFormat.HEX
    return ArgSpec(name, kind, dirfd=name in _FD_NAMES)


@functools.cache
def arg_specs(syscall: str, path_args: tuple[int, ...]) -> tuple[ArgSpec, ...]:
    """The spec of each argument of a syscall, worked out once."""
    proto = ptrace_facts.prototype(syscall)
    names = proto if proto is not None else [("long", f"arg{i}") for i in range(6)]
    return tuple(ArgSpec(name, ArgFormat.PATH) if i in path_args
                 else _arg_spec(syscall, ctype, name)
                 for i, (ctype, name) in enumerate(names[:6]))


def _formatter(spec: ArgSpec) -> Callable[[int], Any]:
    """How an argument that is not a path is shown, as a function of its value."""
    fmt = spec.fmt
    if fmt is ArgFormat.SYMBOLIC:
        assert spec.symbolic is not None
        show: Callable[[int], Any] = spec.symbolic
    elif fmt is ArgFormat.INT:
        show = lambda v: (v & 0xFFFFFFFF) - (1 << 32) if v & 0x80000000 else v & 0xFFFFFFFF
    elif fmt is ArgFormat.UINT:
        show = lambda v: v & 0xFFFFFFFF
    elif fmt is ArgFormat.OCTAL:
        show = lambda v: oct(v & 0o7777)
    elif fmt is ArgFormat.POINTER:
        show = lambda v: hex(v) if v else "NULL"
    elif fmt is ArgFormat.HEX:
        show = hex
    else:
        show = lambda v: v
    if spec.dirfd:
        return lambda v: "AT_FDCWD" if v & 0xFFFFFFFF == AT_FDCWD else show(v)
    return show


@functools.cache
def _decoders(syscall: str, path_args: tuple[int, ...]
              ) -> tuple[tuple[str, Callable[[int], Any] | None], ...]:
    """(name, formatter, or None for a path) of each argument of a syscall."""
    return tuple((spec.name, None if spec.fmt is ArgFormat.PATH else _formatter(spec))
                 for spec in arg_specs(syscall, path_args))


def decode_args(stop: Stop) -> dict[str, Any]:
    """Name and format the arguments of a stop (paths as read, flags symbolically)."""
    out: dict[str, Any] = {}
    args = stop.args
    for i, (name, show) in enumerate(_decoders(stop.name, stop.entry.path_args)):
        if show is None:
            p = stop.path(i)
            out[name] = None if p is None else os.fsdecode(p)
        else:
            out[name] = show(args[i])
    return out


def errno_name(result: int) -> str | None:
    return errno.errorcode.get(-result) if -4096 < result < 0 else None
