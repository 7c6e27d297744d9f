"""The spare tracer: a fork of the warm server made ahead of the next run, which has already
copied the pages it shares with the server.

A tracer forked at a request spends much of a short run faulting: each first write to a page
it shares with the server copies it (about 2,500 faults for `true`, at several µs each on a
VM). The spare makes those copies before any request comes (MADV_POPULATE_WRITE of the pages
present in its private writable mappings), takes the name appvirt-spare, says it is ready
and waits. The server hands the next run's request and fds to a ready spare instead of
forking. It forks the next spare only when no run goes on: a spare copying its pages during
a run slows that run more than it gains (the two share the CPUs and their caches). A spare
not ready when a request comes is killed, and the server forks as before: a request never
waits for a spare.

A run-here's tracer forks nothing, so its pages stay its own; a tracer that forks the program
(the Python client's runs) shares them again with it.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import sys
from typing import Callable, NoReturn

from ..errors import ExitStatus
from . import wire

MADV_POPULATE_WRITE = 23        # Linux 5.14; before it, EINVAL: the spare copies nothing
READY = b"r"
NAME = b"appvirt-spare"         # its name in ps while it is ready, until it takes a run
PR_SET_NAME, PR_GET_NAME = 15, 16
INTERNAL = int(ExitStatus.INTERNAL)     # what a client whose spare failed exits with
PAGE = os.sysconf("SC_PAGE_SIZE")
# /proc/PID/pagemap's entries (native u64s): in the top byte, bit 7 is "present" (bit 63) and
# bit 0 "exclusively mapped" (bit 56). A page shared with the server is present and not
# exclusive.
_TOP = 7 if sys.byteorder == "little" else 0
PAGEMAP_CHUNK = 1 << 16         # pages whose entries are read at once (512 KB of them)
_SHARED = bytes(ord("s") if b & 0x81 == 0x80 else ord(".") for b in range(256))
_libc = ctypes.CDLL(None, use_errno=True)


class Spare:
    """The server's side of a spare: its pid, and the channel its request goes through."""

    __slots__ = ("pid", "channel", "ready")

    def __init__(self, pid: int, channel: socket.socket) -> None:
        self.pid, self.channel, self.ready = pid, channel, False

    def is_ready(self) -> bool:
        """Whether the spare has said it is ready (without waiting for it)."""
        if not self.ready:
            try:
                self.ready = self.channel.recv(1, socket.MSG_DONTWAIT) == READY
            except OSError:     # not yet (EAGAIN), or it died: the server forks
                pass
        return self.ready

    def hand_over(self, conn: socket.socket, request: tuple, fds: list[int]) -> bool:
        """Give the spare a run: the request, the client's connection and its fds. False
        if the spare cannot take it (it died): it is ended, and the caller forks."""
        try:
            wire.send(self.channel, request, (conn.fileno(), *fds))
        except OSError:
            self.end()
            return False
        self.channel.close()
        return True

    def end(self) -> None:
        """Kill and reap an unused spare (the server stops, or passes it over for good)."""
        self.channel.close()
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def fork_spare(leave_server: Callable[[], None],
               run: Callable[[socket.socket, tuple, list[int]], NoReturn]) -> Spare | None:
    """A new spare (None if the fork fails: runs fork as before). In the spare,
    leave_server() drops what only the server holds, and run(conn, request, fds) becomes the
    run's tracer."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        pid = os.fork()
    except OSError:
        ours.close()
        theirs.close()
        return None
    if pid == 0:  # pragma: no cover - the spare
        status = INTERNAL
        try:
            ours.close()
            leave_server()
            status = _wait_for_a_run(theirs, run)
        finally:
            os._exit(status)
    theirs.close()
    return Spare(pid, ours)


def _wait_for_a_run(channel: socket.socket,
                    run: Callable[[socket.socket, tuple, list[int]], NoReturn]
                    ) -> int:  # pragma: no cover - the spare
    """Copy the pages, say so, and become the run handed over; 0 if the server closed the
    channel instead, INTERNAL if what came is not a run (the client is told the status)."""
    try:
        populate_writable()
    except OSError:
        pass                            # (no /proc: a spare that copied nothing)
    name = ctypes.create_string_buffer(16)
    _libc.prctl(PR_GET_NAME, name, 0, 0, 0)
    _libc.prctl(PR_SET_NAME, NAME, 0, 0, 0)
    channel.sendall(READY)
    received = wire.receive(channel, max_fds=4)
    if received is None:
        return 0
    request, fds = received
    if len(fds) != 4:
        return INTERNAL
    channel.close()
    _libc.prctl(PR_SET_NAME, name.value, 0, 0, 0)
    run(socket.socket(fileno=fds[0]), request, fds[1:])


def populate_writable() -> int:
    """Copy now every page this process still shares with the server in its private
    writable mappings (its heap, Python's arenas, the libraries' data): a first write there
    then faults no more. Pages the server never touched are left alone (a run may never
    touch them either). The bytes asked for."""
    asked = 0
    pagemap = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    try:
        for start, end in private_writable_mappings():
            for part in range(start, end, PAGEMAP_CHUNK * PAGE):    # (a huge reservation)
                part_end = min(end, part + PAGEMAP_CHUNK * PAGE)
                for first, last in _shared_runs(pagemap, part, part_end):
                    if _libc.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first),
                                     MADV_POPULATE_WRITE) == 0:
                        asked += last - first
    finally:
        os.close(pagemap)
    return asked


def private_writable_mappings() -> list[tuple[int, int]]:
    """This process's private writable mappings, as (start, end) addresses."""
    with open("/proc/self/maps", "rb") as maps:
        lines = maps.read().splitlines()
    found = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) >= 2 and fields[1][1:2] == b"w" and fields[1][3:4] == b"p":
            start, end = (int(x, 16) for x in fields[0].split(b"-"))
            found.append((start, end))
    return found


def _shared_runs(pagemap: int, start: int, end: int) -> list[tuple[int, int]]:
    """The address ranges in [start, end) of pages present but not this process's alone
    (pagemap's bits 63 and 56): the ones a first write copies."""
    entries = os.pread(pagemap, (end - start) // PAGE * 8, start // PAGE * 8)
    shared = entries[_TOP::8].translate(_SHARED)    # each entry's top byte: b"s" or b"."
    return [(start + m.start() * PAGE, start + m.end() * PAGE)
            for m in re.finditer(rb"s+", shared)]
