"""Values as file content in the virtual directory tree, and file content as values.

Rendering (what `cat` shows):
    string   its UTF-8 text followed by one newline
    integer  decimal followed by one newline ("-42\n")
    binary   the raw bytes, nothing added
    multi    each item followed by a newline ("" for an empty list)

Typing rule for content written by a program (`echo ... > key/name`):
    1. One trailing newline is dropped (not for binary values, which take the bytes as they are).
    2. A value that exists keeps its type when the content fits it: any bytes fit binary;
       UTF-8 text without NUL fits string and multi (one item per line); decimal digits with
       an optional sign and surrounding blanks fit integer when in 64-bit range.
    3. Otherwise (a new value, or content that does not fit): the canonical decimal form of a
       64-bit integer ("42", "-7"; not "+7", "007", "-0") makes an integer; other UTF-8 text
       without NUL makes a string; anything else makes a binary value.
    A well-known value (wellknown.py) always keeps its fixed type; content that does not fit
    it is refused (EINVAL).
"""

from __future__ import annotations

import re
from typing import Any

from .errors import InvalidValue, WrongType
from .values import INT64_MAX, INT64_MIN, Value, ValueType, parse_int64

_CANONICAL_INT = re.compile(r"-?(0|[1-9][0-9]*)", re.ASCII)


def render(value: Value) -> bytes:
    d: Any = value.data
    if value.type is ValueType.STRING:
        return d.encode() + b"\n"
    if value.type is ValueType.INTEGER:
        return b"%d\n" % d
    if value.type is ValueType.BINARY:
        return bytes(d)
    return "".join(s + "\n" for s in d).encode()


def _text(content: bytes) -> str | None:
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\0" in text else text


def _fit(content: bytes, vtype: ValueType) -> Value | None:
    """The value of type `vtype` that `content` denotes, or None if it does not fit."""
    if vtype is ValueType.BINARY:
        return Value.binary(content)
    text = _text(content)
    if text is None:
        return None
    body = text[:-1] if text.endswith("\n") else text
    if vtype is ValueType.STRING:
        return Value.string(body)
    if vtype is ValueType.MULTI:
        return Value.multi(body.split("\n") if text else [])
    try:
        return Value.integer(parse_int64(body))
    except InvalidValue:
        return None


def value_from_content(content: bytes, existing: ValueType | None = None, *,
                       fixed: ValueType | None = None) -> Value:
    """The value a program means by writing `content` (rule in the module docstring).

    `existing` is the type of the value being overwritten, `fixed` the well-known type that
    must be kept (WrongType when the content does not fit it).
    """
    if fixed is not None:
        v = _fit(content, fixed)
        if v is None:
            raise WrongType(f"this value holds {fixed.value} data; "
                            f"{content[:40]!r} is not {fixed.value}")
        return v
    if existing is not None:
        v = _fit(content, existing)
        if v is not None:
            return v
    text = _text(content)
    if text is None:
        return Value.binary(content)
    body = text[:-1] if text.endswith("\n") else text
    if _CANONICAL_INT.fullmatch(body) and body != "-0" and INT64_MIN <= int(body) <= INT64_MAX:
        return Value.integer(int(body))
    return Value.string(body)
