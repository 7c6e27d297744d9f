"""The records of the layered view and the read-only base layer.

The store has two layers. The *base* comes from the policy's `registry:` section and is never
modified by the program or the CLI. The *writable* layer holds the app's changes: keys and
values it wrote, deletion markers (a deleted base key leaves a whiteout, a deleted base value
a tombstone) and opaque marks. Reads see the writable layer first, then the base.
"""

import enum
import json
import types
from collections.abc import Mapping
from typing import NamedTuple

from ..hashes import sha256
from . import wellknown
from .errors import InvalidBase, InvalidKey, InvalidValue, LimitExceeded, LimitKind, WrongType
from .keys import DEFAULT_LIMITS, ROOT, Limits, basename, check_key, check_name, join, \
    prefixes, sort_key
from .values import Value


class KeyKind(enum.IntEnum):
    """The state of a key in the writable layer (stored as these integers)."""

    MERGED = 0    # present; the base's content below it shows through (the default)
    OPAQUE = 1    # present; nothing of the base below or at this key shows through
    WHITEOUT = 2  # deletion marker: hides the base key and everything below it


class KeyInfo(NamedTuple):
    """A visible key: its path, whether it is opaque, and its last-write time."""

    path: str
    opaque: bool
    mtime_ns: int

    @property
    def name(self) -> str:
        return basename(self.path)


class ValueEntry(NamedTuple):
    """A visible value with its name and last-write time."""

    name: str
    value: Value
    mtime_ns: int


class Listing(NamedTuple):
    """The merged content of one key, sorted by name."""

    key: KeyInfo
    subkeys: tuple[KeyInfo, ...]
    values: tuple[ValueEntry, ...]


class NodeKind(enum.Enum):
    KEY = "key"
    VALUE = "value"


class Node(NamedTuple):
    """What a full path ('app/settings/theme') names: a key, or a value of its parent key."""

    kind: NodeKind
    path: str
    key: KeyInfo | None = None
    entry: ValueEntry | None = None


class View(NamedTuple):
    """Everything visible: key path -> opaque flag, (key, name) -> value. The root is implied."""

    keys: Mapping[str, bool]
    values: Mapping[tuple[str, str], Value]


class BaseLayer(NamedTuple):
    """The read-only base layer: key path -> {value name: Value}, ancestors included."""

    keys: Mapping[str, Mapping[str, Value]]

    @classmethod
    def build(cls, keys: Mapping[str, Mapping[str, Value]] | None,
              limits: Limits = DEFAULT_LIMITS) -> "BaseLayer":
        """Validate and complete (add missing ancestor keys) a base layer, or raise InvalidBase."""
        full: dict[str, dict[str, Value]] = {}
        for path, values in (keys or {}).items():
            try:
                check_key(path, limits, allow_root=False)
                for name, value in (values or {}).items():
                    check_name(name, limits)
                    check_value(path, name, value, limits)
                if len(values or {}) > limits.max_values_per_key:
                    raise InvalidBase(f"{len(values)} values (limit {limits.max_values_per_key})")
            except (InvalidKey, InvalidValue, LimitExceeded) as e:
                raise InvalidBase(f"base key {path!r}: {e.message}") from e
            for p in prefixes(path):
                full.setdefault(p, {})
            full[path].update(values or {})
        for path, values in full.items():
            for name in values:
                if join(path, name) in full:
                    raise InvalidBase(f"base key {path!r}: {name!r} is both a value and a subkey")
        frozen = {p: types.MappingProxyType(dict(v)) for p, v in
                  sorted(full.items(), key=lambda kv: sort_key(kv[0]))}
        return cls(types.MappingProxyType(frozen))

    def digest(self) -> str:
        """A stable fingerprint, to skip rewriting an unchanged base."""
        doc = [[p, sorted([n, v.to_json()] for n, v in vals.items())]
               for p, vals in self.keys.items()]
        return sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def view(self) -> View:
        return View({p: False for p in self.keys},
                    {(p, n): v for p, vals in self.keys.items() for n, v in vals.items()})


EMPTY_BASE = BaseLayer.build({})


def check_value(key: str, name: str, value: Value, limits: Limits) -> Value:
    """Check a value against the size limit and the well-known type of (key, name)."""
    if not isinstance(value, Value):
        raise InvalidValue(f"not a Value: {value!r}")
    if key == ROOT:
        raise InvalidKey("the root key holds only keys: put values in a key such as 'app'")
    size = value.size()
    if size > limits.max_value_bytes:
        raise LimitExceeded(LimitKind.VALUE_SIZE, f"value {name!r} of {key!r} is {size} bytes "
                                                  f"(limit {limits.max_value_bytes})")
    expected = wellknown.expected_type(key, name)
    if expected is not None and value.type is not expected:
        raise WrongType(f"{key}/{name} holds {expected.value} values, not {value.type.value}")
    return value
