"""Path globs for policy rules.

`*` matches within one component, `?` one character of a component, `[...]` a character class,
and `**` (a whole component) any number of components, including none. A rule applies to every
path its pattern matches and to everything below those paths, like a mount point: `/etc` and
`/etc/**` both cover the whole tree under /etc.
"""

import re
from typing import NamedTuple


class GlobError(ValueError):
    """Raised for a pattern that cannot be compiled; the message says what is wrong."""


def _component(comp: str) -> str:
    out, i = [], 0
    while i < len(comp):
        c = comp[i]
        if c == "*":
            if comp[i:i + 2] == "**":
                raise GlobError("'**' must be a whole path component, as in /a/**/b")
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = comp.find("]", i + 2 if comp[i + 1:i + 2] in ("!", "]") else i + 1)
            if j < 0:
                raise GlobError("unclosed '[' in character class")
            body = comp[i + 1:j]
            if body.startswith("!"):
                body = "^" + body[1:]
            if "/" in body:
                raise GlobError("a character class cannot match '/'")
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = j
        elif c == "]":
            raise GlobError("unmatched ']'")
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def compile_glob(pattern: str) -> re.Pattern[bytes]:
    """Compile an absolute path glob into a regex matching the path or anything below it."""
    if not pattern.startswith("/"):
        raise GlobError("a path pattern must be absolute (start with '/')")
    if "\0" in pattern:
        raise GlobError("a path pattern cannot contain NUL")
    body = []
    for comp in pattern.split("/")[1:]:
        if comp in ("", "."):
            continue
        if comp == "..":
            raise GlobError("'..' is not allowed in a path pattern")
        body.append("(?:/.*)?" if comp == "**" else "/" + _component(comp))
    return re.compile(("^" + "".join(body) + "(?:/.*)?$").encode(), re.DOTALL)


class Glob(NamedTuple):
    """A compiled path glob (matches the path and everything below it)."""

    pattern: str
    regex: re.Pattern[bytes]

    @classmethod
    def of(cls, pattern: str) -> "Glob":
        return cls(pattern, compile_glob(pattern))

    def matches(self, path: bytes) -> bool:
        return self.regex.match(path) is not None
