"""The program forked by a warm run's client rather than by its tracer (a run-here): the C
client (bin/appvirt.c) asks so for every run, and its program is then in the client's
session, under its controlling terminal if it has one, as a cold appvirt's program is in
appvirt's.

The warm server's forked tracer sets `current` before it runs the command line; the launcher
then asks the client for the program instead of forking it. Over the run's connection
(warm/wire.py):

    tracer -> client  ("spawn", blob) with the slot area's read-only fd, the report pipe's and
                      the listener hand's write ends: what the launcher's own child gets
    client -> tracer  ("child", pid): forked, in a process group of its own (the terminal's
                      foreground one when the client's was), the tracer allowed to seize it
    tracer -> client  ("seized", 0): the child may go on: map the area, drop core dumps, close
                      other fds, install the filter, hand the listener over, exec
    tracer -> client  ("stopped", 0): the program stopped for the terminal (Ctrl-Z); the
                      client gives the terminal back and stops too, as a cold appvirt does

The blob is packed for C: SPAWN_HEAD, then the filter's instructions, then the path, the
arguments and the environment as NUL-ended strings.
"""

from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING, Sequence

from ..core.slotlayout import AREA_SIZE, CELL_BASE, CELLS_SIZE, SLOT_BASE
from ..errors import EnvironmentUnsupported
from ..warm import wire
from .seccomp import PackedFilter, install_flags
from .slots import SlotArena

if TYPE_CHECKING:
    import socket       # (a run imports no more than it needs: test_startup.py)

# flags, seccomp flags, instructions, area prot, argc, envc, slot base, area size, cell
# base, cells size (0: no cells); bin/appvirt.c: struct spawn_head
SPAWN_HEAD = struct.Struct("<IIIIIIQQQQ")
SPAWN_LISTENER = 1          # the filter notifies: its listener's number goes to the hand


class ClientSpawner:
    """The run's connection to a client that forks the program itself."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn

    def spawn(self, path: str, argv: Sequence[str], env: dict[str, str],
              packed: PackedFilter, arena: SlotArena, report: int, hand: int) -> int:
        """Have the client fork the program, stopped before anything it does for the
        program; its pid. EnvironmentUnsupported if the client answers otherwise."""
        wire.send(self.conn, ("spawn", spawn_blob(path, argv, env, packed, arena)),
                  (arena.ro_fd, report, hand))
        kind, pid = self._answer()
        if kind != "child" or not isinstance(pid, int) or pid <= 0:
            raise EnvironmentUnsupported(f"the client did not start the program ({kind})")
        return pid

    def go(self) -> None:
        """The program is seized: let it exec."""
        wire.send(self.conn, ("seized", 0))

    def terminal_stop(self) -> None:
        try:
            wire.send(self.conn, ("stopped", 0))
        except OSError:
            pass                    # the client is gone: the run ends with it

    def _answer(self) -> tuple[str, object]:
        try:
            received = wire.receive(self.conn)
        except (OSError, EOFError, ValueError) as e:
            raise EnvironmentUnsupported(f"the client did not start the program: {e}") from None
        if received is None or len(received[0]) != 2:
            raise EnvironmentUnsupported("the client did not start the program")
        return received[0][0], received[0][1]


def spawn_blob(path: str, argv: Sequence[str], env: dict[str, str], packed: PackedFilter,
               arena: SlotArena) -> bytes:
    """What the client's child needs, packed (the module's docstring). ValueError for an
    argument or variable the kernel could not take (a NUL in it), as os.execve raises."""
    strings = [os.fsencode(path), *map(os.fsencode, argv),
               *(os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items())]
    if any(b"\0" in s for s in strings):
        raise ValueError("embedded null byte")
    head = SPAWN_HEAD.pack(SPAWN_LISTENER if packed.listener else 0, install_flags(packed),
                           len(packed.raw) // 8, arena.prot, len(argv), len(env),
                           SLOT_BASE, AREA_SIZE, CELL_BASE if arena.trampolines else 0,
                           CELLS_SIZE if arena.trampolines else 0)
    return head + packed.raw + b"".join(s + b"\0" for s in strings)


# Set in the warm server's forked tracer for a client that forks the program (a run-here).
current: ClientSpawner | None = None
