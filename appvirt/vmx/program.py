"""What the simulator runs: decoded instructions plus events that become pending."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class EventKind(enum.Enum):
    """Asynchronous events a program can schedule (spec §3 reasons 0-4, 1)."""

    EXTERNAL_INTERRUPT = "external-interrupt"
    NMI = "nmi"
    INIT = "init"
    SIPI = "sipi"


@dataclass(frozen=True, slots=True)
class GuestEvent:
    """An event that becomes pending at the boundary before instruction `before`.

    `before` equal to the number of instructions means the boundary after the last one.
    """

    kind: EventKind
    before: int = 0
    vector: int = 0
