"""The app's changes against the base layer, computed on views (not on raw layer rows)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from .keys import sort_key
from .layers import View
from .values import Value


class Change(enum.Enum):
    KEY_ADDED = "key added"
    KEY_REMOVED = "key removed"
    KEY_OPAQUE = "key opaque"      # present in both, marked opaque by the app
    VALUE_ADDED = "value added"
    VALUE_REMOVED = "value removed"
    VALUE_CHANGED = "value changed"

    @property
    def sign(self) -> str:
        return {"KEY_ADDED": "+", "VALUE_ADDED": "+", "KEY_REMOVED": "-", "VALUE_REMOVED": "-",
                "KEY_OPAQUE": "!", "VALUE_CHANGED": "~"}[self.name]


@dataclass(frozen=True, slots=True)
class DiffEntry:
    change: Change
    key: str
    name: str | None = None       # None for key-level changes
    old: Value | None = None
    new: Value | None = None

    def to_json(self) -> dict[str, Any]:
        return {"change": self.change.value, "key": self.key, "name": self.name,
                "old": self.old.to_json() if self.old else None,
                "new": self.new.to_json() if self.new else None}


def diff_views(base: View, merged: View) -> list[DiffEntry]:
    """Every key and value that differs, keys before their values, in key order."""
    out: list[DiffEntry] = []
    for k in base.keys.keys() | merged.keys.keys():
        if k not in base.keys:
            out.append(DiffEntry(Change.KEY_ADDED, k))
        elif k not in merged.keys:
            out.append(DiffEntry(Change.KEY_REMOVED, k))
        elif merged.keys[k] and not base.keys[k]:
            out.append(DiffEntry(Change.KEY_OPAQUE, k))
    for kn in base.values.keys() | merged.values.keys():
        old, new = base.values.get(kn), merged.values.get(kn)
        if old == new:
            continue
        change = (Change.VALUE_ADDED if old is None else Change.VALUE_REMOVED if new is None
                  else Change.VALUE_CHANGED)
        out.append(DiffEntry(change, kn[0], kn[1], old, new))
    out.sort(key=lambda e: (sort_key(e.key), e.name is not None, e.name or ""))
    return out
