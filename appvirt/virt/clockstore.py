"""The virtual clock's state in the app's store (machine/clock)."""

from __future__ import annotations

from ..store import Store, Value
from ..store.wellknown import CLOCK_FROZEN_AT_NS, CLOCK_KEY, CLOCK_OFFSET_NS, CLOCK_RATE_PPM
from .clock import StoredClock


def load_clock(store: Store) -> StoredClock:
    def get(name: str) -> int | None:
        v = store.lookup(CLOCK_KEY, name)
        return v.data if v is not None and isinstance(v.data, int) else None
    return StoredClock(get(CLOCK_OFFSET_NS), get(CLOCK_RATE_PPM), get(CLOCK_FROZEN_AT_NS))


def save_clock(store: Store, saved: StoredClock) -> None:
    """Keep what the program set, so that later runs see the same virtual time."""
    with store.batch():
        for name, value in ((CLOCK_OFFSET_NS, saved.offset_ns),
                            (CLOCK_RATE_PPM, saved.rate_ppm),
                            (CLOCK_FROZEN_AT_NS, saved.frozen_at_ns)):
            if value is None:
                if store.lookup(CLOCK_KEY, name) is not None:
                    store.delete_value(CLOCK_KEY, name)
            else:
                store.set(CLOCK_KEY, name, Value.integer(value))
