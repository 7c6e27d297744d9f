"""Directory listings and the working directory, when the view is not the host's own
(declared in syscalls/files.py)."""

from __future__ import annotations

import errno
from collections.abc import Callable

from ..core import sysnums
from ..core.action import Action, Allow, Decision, Deny, Emulate, ExitResult, Rewrite
from ..core.context import Context
from ..core.stop import Stop
from ..fs.dirents import pack_dirents, pack_dirents64


# --- listings and the working directory, when the view is not the host's own ---------------
NR_LSEEK = sysnums.nr("lseek")
SEEK_SET = 0


def _set_result(n: int) -> Callable[[Stop, int], ExitResult]:
    return lambda stop, rv: ExitResult(result=n if rv >= 0 else rv)


def _getdents(pack) -> Callable[[Stop, Context], Action]:
    def handler(stop: Stop, ctx: Context) -> Action:
        fd = stop.sarg(0)
        listing = ctx.dir_listing(stop.tid, fd)
        if listing is None:
            return Allow()
        data, nxt = pack(listing, ctx.fd_position(stop.tid, fd), stop.arg(2) & 0xFFFFFFFF)
        if not data and nxt < len(listing):
            return Deny(errno.EINVAL, native=True)        # the buffer cannot hold one entry
        # The kernel keeps the position: it lseeks the fd while the tracer writes the entries.
        return Rewrite(((1, nxt), (2, SEEK_SET)), nr=NR_LSEEK, writes=(
            ((stop.arg(1), data),) if data else ()), on_exit=_set_result(len(data)),
            decision=Decision.ALLOWED)
    handler.__doc__ = "Serve a merged directory listing from the tracer; else the kernel's."
    return handler


def sys_getcwd(stop: Stop, ctx: Context) -> Action:
    """Implement getcwd(2): the working directory as the program knows it, not its host path."""
    cwd = ctx.cwd_path(stop.tid) + b"\0"
    if stop.arg(1) < len(cwd):
        return Deny(errno.ERANGE, native=True)
    return Emulate(len(cwd), ((stop.arg(0), cwd),), decision=Decision.ALLOWED)


HANDLERS = {
    "getdents64": _getdents(pack_dirents64),
    "getdents": _getdents(pack_dirents),
    "getcwd": sys_getcwd,
}
