"""Records describing memory traffic, shared by the MMU and the result views."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class AccessKind(enum.Enum):
    """Kind of a guest memory access, as the paging and EPT rules distinguish them."""

    READ = "read"
    WRITE = "write"
    FETCH = "fetch"


@dataclass(frozen=True, slots=True)
class MemoryAccess:
    """One memory access made by the processor for an instruction.

    `what` says why ("guest PML4E read", "set accessed bit", "data write", "EPT PDE read"...);
    addresses a level does not have are None.
    """

    what: str
    write: bool
    size: int
    linear: int | None = None
    gpa: int | None = None
    hpa: int | None = None

    def describe(self) -> str:
        parts = [f"{'write' if self.write else 'read'} {self.size}B {self.what}"]
        if self.linear is not None:
            parts.append(f"linear {self.linear:#x}")
        if self.gpa is not None:
            parts.append(f"guest-physical {self.gpa:#x}")
        if self.hpa is not None:
            parts.append(f"host-physical {self.hpa:#x}")
        return ", ".join(parts)
