r"""The export format: `.reg`-like text that `import` reads back exactly (docs/registry.md).

    appvirt-registry 1
    ; layer: writable
    [app/settings]
    "theme"="dark"
    "retries"=integer:3
    "icon"=binary:89504e47
    "plugins"=multi:"spell","grammar"
    "old"=-
    [app/cache] opaque
    [-machine/sysctl/kernel]

A file is a header line, then sections. `[KEY]` opens a key (optionally followed by `opaque`
or `merged`), `[-KEY]` is a deletion marker (the key and everything below it are deleted).
Value lines belong to the section above them: `"NAME"=` then `"text"` (string),
`integer:DECIMAL`, `binary:HEX`, `multi:` followed by zero or more comma-separated quoted
strings, or `-` (deletion marker). Quoted strings escape `\\`, `"`, newline `\n`, tab `\t`,
carriage return `\r` and any other non-printable character as `\u{HEX}`; in key paths `]` is
escaped as `\]`, and a leading `-` as `\-`. Lines starting with `;` or `#` are comments.
The JSON form (`--json`) carries the same sections.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import ImportFormatError, StoreError
from .keys import DEFAULT_LIMITS, Limits, check_key, check_name
from .values import Value, ValueType, parse_hex, parse_int64

MAGIC = "appvirt-registry"
VERSION = 1
_SIMPLE_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r", "]": "]", "-": "-"}
_ESCAPE_OUT = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


@dataclass(frozen=True, slots=True)
class Section:
    """One key of an export: present (with an optional opaque flag) or a deletion marker.

    `opaque` None leaves an existing key's flag as it is; `values` maps a name to a Value,
    or to None for a deletion marker (tombstone).
    """

    path: str
    deleted: bool = False
    opaque: bool | None = None
    values: tuple[tuple[str, Value | None], ...] = ()


# -- writing -----------------------------------------------------------------------------------

def _escape(s: str, specials: str) -> str:
    out = []
    for ch in s:
        if ch in specials:
            out.append(_ESCAPE_OUT.get(ch, "\\" + ch))
        elif ch in _ESCAPE_OUT and ch != "\\" and ch != '"':
            out.append(_ESCAPE_OUT[ch])
        elif not ch.isprintable() and ch != " ":
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    return "".join(out)


def quote(s: str) -> str:
    return '"' + _escape(s, '\\"') + '"'


def format_key(path: str) -> str:
    text = _escape(path, "\\]")
    return "\\" + text if text.startswith("-") else text


def format_value(value: Value | None) -> str:
    if value is None:
        return "-"
    d: Any = value.data
    if value.type is ValueType.STRING:
        return quote(d)
    if value.type is ValueType.INTEGER:
        return f"integer:{d}"
    if value.type is ValueType.BINARY:
        return f"binary:{d.hex()}"
    return "multi:" + ",".join(quote(s) for s in d)


def format_sections(sections: Iterable[Section], *, layer: str) -> str:
    lines = [f"{MAGIC} {VERSION}", f"; layer: {layer}"]
    for s in sections:
        if s.deleted:
            lines.append(f"[-{format_key(s.path)}]")
            continue
        lines.append(f"[{format_key(s.path)}]" + (" opaque" if s.opaque else ""))
        lines.extend(f"{quote(n)}={format_value(v)}" for n, v in s.values)
    return "\n".join(lines) + "\n"


def sections_to_json(sections: Iterable[Section], *, layer: str) -> dict[str, Any]:
    keys = []
    for s in sections:
        entry: dict[str, Any] = {"path": s.path, "deleted": s.deleted}
        if not s.deleted:
            entry["opaque"] = bool(s.opaque)
            entry["values"] = [{"name": n, "deleted": True} if v is None
                               else {"name": n, **v.to_json()} for n, v in s.values]
        keys.append(entry)
    return {"format": MAGIC, "version": VERSION, "layer": layer, "keys": keys}


# -- reading -----------------------------------------------------------------------------------

class _Line:
    """A cursor over one line, for the small recursive-descent parser."""

    def __init__(self, text: str, number: int, source: str) -> None:
        self.text, self.pos, self.number, self.source = text, 0, number, source

    def error(self, message: str) -> ImportFormatError:
        return ImportFormatError(message, line=self.number, source=self.source)

    def rest(self) -> str:
        return self.text[self.pos:]

    def take(self, prefix: str) -> bool:
        if self.text.startswith(prefix, self.pos):
            self.pos += len(prefix)
            return True
        return False

    def escaped_until(self, end: str) -> str:
        """Characters up to the unescaped `end`, which is consumed."""
        out: list[str] = []
        t = self.text
        while True:
            if self.pos >= len(t):
                raise self.error(f"missing closing {end!r}")
            ch = t[self.pos]
            self.pos += 1
            if ch == end:
                return "".join(out)
            if ch != "\\":
                out.append(ch)
                continue
            esc = t[self.pos:self.pos + 1]
            self.pos += 1
            if esc in _SIMPLE_ESCAPES:
                out.append(_SIMPLE_ESCAPES[esc])
            elif esc == "u" and self.take("{"):
                close = t.find("}", self.pos)
                digits = t[self.pos:close] if close > 0 else ""
                try:
                    out.append(chr(int(digits, 16)))
                except ValueError:
                    raise self.error(f"bad \\u{{...}} escape {digits[:12]!r}") from None
                self.pos = close + 1
            else:
                raise self.error(f"unknown escape '\\{esc}'")

    def quoted(self) -> str:
        if not self.take('"'):
            raise self.error("expected a quoted string")
        return self.escaped_until('"')


def _value(line: _Line) -> Value | None:
    try:
        if line.take("-"):
            v = None
        elif line.text.startswith('"', line.pos):
            v = Value.string(line.quoted())
        elif line.take("integer:"):
            v, line.pos = Value.integer(parse_int64(line.rest())), len(line.text)
        elif line.take("binary:"):
            v, line.pos = Value.binary(parse_hex(line.rest())), len(line.text)
        elif line.take("multi:"):
            items = []
            if line.rest():
                items.append(line.quoted())
                while line.rest().strip():
                    if not line.take(","):
                        raise line.error("expected ',' between list items")
                    while line.take(" "):
                        pass
                    items.append(line.quoted())
            v = Value.multi(items)
        else:
            raise line.error(f"unknown value syntax {line.rest()[:30]!r}: expected \"text\", "
                             "integer:, binary:, multi: or -")
    except ImportFormatError:
        raise
    except StoreError as e:
        raise line.error(e.message) from e
    if line.rest().strip():
        raise line.error(f"unexpected text after the value: {line.rest()[:30]!r}")
    return v


def parse(text: str, *, source: str = "", limits: Limits = DEFAULT_LIMITS) -> list[Section]:
    """Sections of an export (text, or the JSON form when the text starts with '{')."""
    if text.lstrip().startswith("{"):
        return _parse_json(text, source, limits)
    lines = text.removeprefix("\ufeff").split("\n")
    sections: list[Section] = []
    header_seen = False
    current: tuple[str, bool, bool | None, list[tuple[str, Value | None]]] | None = None

    def close() -> None:
        if current is not None:
            path, deleted, opaque, values = current
            sections.append(Section(path, deleted, opaque, tuple(values)))

    for number, raw in enumerate(lines, 1):
        stripped = raw.strip(" \t\r")
        if not stripped or stripped[0] in ";#":
            continue
        line = _Line(stripped, number, source)
        if not header_seen:
            words = stripped.split()
            if len(words) != 2 or words[0] != MAGIC:
                raise line.error(f"not an appvirt registry export (first line must be "
                                 f"'{MAGIC} {VERSION}')")
            if words[1] != str(VERSION):
                raise line.error(f"unsupported format version {words[1]!r} (this appvirt "
                                 f"reads version {VERSION})")
            header_seen = True
            continue
        if line.take("["):
            close()
            deleted = line.take("-")
            path = line.escaped_until("]")
            attr = line.rest().strip()
            if attr not in ("", "opaque", "merged") or (deleted and attr):
                raise line.error(f"unexpected {attr!r} after the key")
            try:
                check_key(path, limits, allow_root=False)
            except StoreError as e:
                raise line.error(e.message) from e
            current = (path, deleted, {"": None, "opaque": True, "merged": False}[attr], [])
            continue
        if current is None:
            raise line.error("a value line must follow a [key] line")
        if current[1]:
            raise line.error("a deleted key [-...] cannot hold values")
        name = line.quoted()
        try:
            check_name(name, limits)
        except StoreError as e:
            raise line.error(e.message) from e
        if not line.take("="):
            raise line.error("expected '=' after the value name")
        current[3].append((name, _value(line)))
    if not header_seen:
        raise ImportFormatError(f"empty file (the first line must be '{MAGIC} {VERSION}')",
                                source=source)
    close()
    return sections


def _parse_json(text: str, source: str, limits: Limits) -> list[Section]:
    def bad(msg: str) -> ImportFormatError:
        return ImportFormatError(msg, source=source)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ImportFormatError(f"invalid JSON: {e.msg}", line=e.lineno, source=source) from None
    if not isinstance(doc, dict) or doc.get("format") != MAGIC:
        raise bad(f"not an appvirt registry export (JSON \"format\" must be {MAGIC!r})")
    if doc.get("version") != VERSION:
        raise bad(f"unsupported format version {doc.get('version')!r}")
    sections = []
    for i, k in enumerate(doc.get("keys") or []):
        try:
            path = check_key(k["path"], limits, allow_root=False)
            values: list[tuple[str, Value | None]] = []
            for v in k.get("values") or []:
                name = check_name(v["name"], limits)
                values.append((name, None if v.get("deleted") else
                               Value.from_json({"type": v["type"], "value": v["value"]})))
            deleted = bool(k.get("deleted"))
            if deleted and values:
                raise bad(f"keys[{i}]: a deleted key cannot hold values")
            opaque = k.get("opaque")
            sections.append(Section(path, deleted, None if deleted or opaque is None
                                    else bool(opaque), tuple(values)))
        except (KeyError, TypeError, AttributeError) as e:
            raise bad(f"keys[{i}]: malformed entry ({type(e).__name__}: {e})") from None
        except ImportFormatError:
            raise
        except StoreError as e:
            raise bad(f"keys[{i}]: {e.message}") from e
    return sections
