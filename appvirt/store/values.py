"""Typed values: the four value types and the immutable `Value` record.

| type      | registry analogue | Python data      | constraint                            |
|-----------|-------------------|------------------|---------------------------------------|
| `string`  | REG_SZ            | `str`            | no NUL character                      |
| `integer` | REG_QWORD         | `int`            | signed 64-bit                         |
| `binary`  | REG_BINARY        | `bytes`          | none                                  |
| `multi`   | REG_MULTI_SZ      | `tuple[str,...]` | items have no NUL and no newline      |

Strings must be valid Unicode (no lone surrogates), so they always encode to UTF-8.
"""

from __future__ import annotations

import builtins
import enum
import re
from typing import Any

from .errors import InvalidValue

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
_DECIMAL = re.compile(r"[+-]?[0-9]+", re.ASCII)


class ValueType(enum.Enum):
    STRING = "string"
    INTEGER = "integer"
    BINARY = "binary"
    MULTI = "multi"

    @property
    def registry_name(self) -> str:
        return _REGISTRY_NAMES[self]

    @classmethod
    def parse(cls, text: str) -> ValueType:
        """A type from its name or a registry-style alias (`REG_SZ`, `qword`, `int`, `list`...)."""
        t = _ALIASES.get(text.strip().lower())
        if t is None:
            raise InvalidValue(f"unknown value type {text!r}: use one of "
                               + ", ".join(v.value for v in cls))
        return t


_REGISTRY_NAMES = {ValueType.STRING: "REG_SZ", ValueType.INTEGER: "REG_QWORD",
                   ValueType.BINARY: "REG_BINARY", ValueType.MULTI: "REG_MULTI_SZ"}
_ALIASES = {
    **{t.value: t for t in ValueType},
    **{n.lower(): t for t, n in _REGISTRY_NAMES.items()},
    "str": ValueType.STRING, "sz": ValueType.STRING,
    "int": ValueType.INTEGER, "qword": ValueType.INTEGER,
    "bin": ValueType.BINARY, "hex": ValueType.BINARY, "bytes": ValueType.BINARY,
    "list": ValueType.MULTI, "multi_sz": ValueType.MULTI, "multi-string": ValueType.MULTI,
}


def _check_text(s: Any, what: str, *, newline_ok: bool) -> str:
    if not isinstance(s, str):
        raise InvalidValue(f"{what} must be a string, not {type(s).__name__}")
    if "\0" in s:
        raise InvalidValue(f"{what} contains a NUL character (use a binary value)")
    if not newline_ok and "\n" in s:
        raise InvalidValue(f"{what} contains a newline (list items are one line each)")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidValue(f"{what} is not valid Unicode (lone surrogate)") from None
    return s


class Value:
    """One typed value; construct with `Value.string(...)` and friends. Immutable. (A class of
    its own rather than a frozen dataclass: every run defines it, and a dataclass costs a
    millisecond to define.)"""

    __slots__ = ("type", "data")
    type: ValueType
    data: str | int | bytes | tuple[str, ...]

    def __init__(self, type: ValueType, data: str | int | bytes | tuple[str, ...]) -> None:
        t, d, type_of = type, data, builtins.type      # `type` is the field's name here
        if not isinstance(t, ValueType):
            raise InvalidValue(f"not a value type: {t!r}")
        if t is ValueType.STRING:
            _check_text(d, "a string value", newline_ok=True)
        elif t is ValueType.INTEGER:
            if not isinstance(d, int) or isinstance(d, bool):
                raise InvalidValue(f"an integer value must be an int, not {type_of(d).__name__}")
            if not INT64_MIN <= d <= INT64_MAX:
                raise InvalidValue(f"{d} does not fit in a signed 64-bit integer")
        elif t is ValueType.BINARY:
            if isinstance(d, (bytearray, memoryview)):
                d = bytes(d)
            elif not isinstance(d, bytes):
                raise InvalidValue(f"a binary value must be bytes, not {type_of(d).__name__}")
        else:
            if isinstance(d, (str, bytes)) or not hasattr(d, "__iter__"):
                raise InvalidValue("a multi value must be a list of strings")
            d = tuple(d)
            for i, s in enumerate(d):
                _check_text(s, f"item {i} of a multi value", newline_ok=False)
        object.__setattr__(self, "type", t)
        object.__setattr__(self, "data", d)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"a Value is immutable: cannot set {name}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"a Value is immutable: cannot delete {name}")

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Value) and self.type is other.type
                and self.data == other.data)

    def __hash__(self) -> int:
        return hash((self.type, self.data))

    def __repr__(self) -> str:
        return f"Value(type={self.type!r}, data={self.data!r})"

    @classmethod
    def string(cls, s: str) -> Value:
        return cls(ValueType.STRING, s)

    @classmethod
    def integer(cls, i: int) -> Value:
        return cls(ValueType.INTEGER, i)

    @classmethod
    def binary(cls, b: bytes) -> Value:
        return cls(ValueType.BINARY, b)

    @classmethod
    def multi(cls, items: Any) -> Value:
        return cls(ValueType.MULTI, items)

    def size(self) -> int:
        """Bytes counted against the value-size limit (the stored data, UTF-8 for text)."""
        d: Any = self.data
        if self.type is ValueType.STRING:
            return len(d.encode())
        if self.type is ValueType.INTEGER:
            return 8
        if self.type is ValueType.BINARY:
            return len(d)
        return sum(len(s.encode()) + 1 for s in d)

    def to_json(self) -> dict[str, Any]:
        """`{"type": ..., "value": ...}`; binary data is lowercase hex, multi a list."""
        d: Any = self.data
        if self.type is ValueType.BINARY:
            d = d.hex()
        elif self.type is ValueType.MULTI:
            d = list(d)
        return {"type": self.type.value, "value": d}

    @classmethod
    def from_json(cls, obj: Any) -> Value:
        if not isinstance(obj, dict) or set(obj) != {"type", "value"}:
            raise InvalidValue(f"not a JSON value object: {obj!r}")
        t = ValueType.parse(str(obj["type"]))
        d = obj["value"]
        if t is ValueType.BINARY:
            return cls.binary(parse_hex(d))
        return cls(t, d)

    def display(self) -> str:
        """A short one-line human form (not parseable; for tables)."""
        d: Any = self.data
        if self.type is ValueType.STRING:
            return d
        if self.type is ValueType.INTEGER:
            return str(d)
        if self.type is ValueType.BINARY:
            return d.hex(" ") if d else "(empty)"
        return ", ".join(repr(s) for s in d) if d else "(empty list)"


def parse_hex(text: Any) -> bytes:
    """Bytes from hex digits; spaces, ':' and ',' between bytes are allowed."""
    if not isinstance(text, str):
        raise InvalidValue(f"binary data must be given as hex digits, not {type(text).__name__}")
    digits = "".join(c for c in text if c not in " \t:,")
    try:
        return bytes.fromhex(digits)
    except ValueError:
        raise InvalidValue(f"not hex bytes: {text[:60]!r}") from None


def parse_int64(text: str) -> int:
    """A signed 64-bit integer from decimal text (surrounding whitespace allowed)."""
    t = text.strip()
    if not _DECIMAL.fullmatch(t):
        raise InvalidValue(f"not a decimal integer: {text[:60]!r}")
    n = int(t)
    if not INT64_MIN <= n <= INT64_MAX:
        raise InvalidValue(f"{t} does not fit in a signed 64-bit integer")
    return n
