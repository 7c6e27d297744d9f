"""Key paths and value names: syntax, size limits and path arithmetic.

A key path is a '/'-separated list of components (`app/settings/theme`); the root key is the
empty path. Components and value names become file names in the virtual directory tree, so
they follow file-name rules: 1 to `max_name_bytes` bytes of UTF-8, no '/', not '.' or '..',
and, so that listings and exports stay readable, no control characters (C0, DEL, C1).
"""

import re
from typing import NamedTuple

from .errors import InvalidKey, LimitExceeded, LimitKind

ROOT = ""
SEP = "/"

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class Limits(NamedTuple):
    """Size limits of one store; exceeding one is a `LimitExceeded` with a clear message."""

    max_path_bytes: int = 1024       # UTF-8 bytes of a whole key path
    max_depth: int = 32              # components of a key path
    max_name_bytes: int = 255        # a key component or value name (NAME_MAX)
    max_value_bytes: int = 1 << 20   # a value's data (see Value.size)
    max_values_per_key: int = 4096   # values visible in one key


DEFAULT_LIMITS = Limits()


def check_name(name: str, limits: Limits = DEFAULT_LIMITS, *, what: str = "value name") -> str:
    """Return `name` if it is a valid key component or value name, else raise."""
    if not isinstance(name, str):
        raise InvalidKey(f"invalid {what} {name!r}: not a string")
    if name == "":
        raise InvalidKey(f"invalid {what}: empty")
    if name in (".", ".."):
        raise InvalidKey(f"invalid {what} {name!r}: '.' and '..' are reserved")
    if SEP in name:
        raise InvalidKey(f"invalid {what} {name!r}: contains '/'")
    if _CONTROL.search(name):
        raise InvalidKey(f"invalid {what} {name!r}: contains a control character")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidKey(f"invalid {what} {name!r}: not valid Unicode") from None
    if size > limits.max_name_bytes:
        raise LimitExceeded(LimitKind.NAME_LENGTH,
                            f"{what} {name[:40]!r}... is {size} bytes long "
                            f"(limit {limits.max_name_bytes})")
    return name


def check_key(path: str, limits: Limits = DEFAULT_LIMITS, *, allow_root: bool = True) -> str:
    """Return `path` if it is a valid key path, else raise InvalidKey or LimitExceeded."""
    if not isinstance(path, str):
        raise InvalidKey(f"invalid key {path!r}: not a string")
    if path == ROOT:
        if allow_root:
            return path
        raise InvalidKey("the root key cannot be used here: give a key path such as 'app/settings'")
    if path.startswith(SEP) or path.endswith(SEP) or SEP * 2 in path:
        raise InvalidKey(f"invalid key {path!r}: empty component (leading, trailing or double '/')")
    components = path.split(SEP)
    if len(components) > limits.max_depth:
        raise LimitExceeded(LimitKind.DEPTH, f"key {path[:60]!r}... is {len(components)} levels "
                                             f"deep (limit {limits.max_depth})")
    for c in components:
        check_name(c, limits, what=f"key component in {path!r}")
    size = len(path.encode("utf-8"))
    if size > limits.max_path_bytes:
        raise LimitExceeded(LimitKind.PATH_LENGTH, f"key {path[:60]!r}... is {size} bytes long "
                                                   f"(limit {limits.max_path_bytes})")
    return path


def parent(path: str) -> str:
    """The parent key of a non-root key (the root for top-level keys)."""
    i = path.rfind(SEP)
    return ROOT if i < 0 else path[:i]


def basename(path: str) -> str:
    return path[path.rfind(SEP) + 1:]


def join(key: str, name: str) -> str:
    return f"{key}{SEP}{name}" if key else name


def prefixes(path: str) -> list[str]:
    """The non-root ancestors of `path` and `path` itself, outermost first."""
    if path == ROOT:
        return []
    parts = path.split(SEP)
    return [SEP.join(parts[:i]) for i in range(1, len(parts) + 1)]


def subtree_range(path: str) -> tuple[str, str]:
    """Bounds (lo inclusive, hi exclusive) of the strict descendants of a non-root key.

    '0' is the character after '/', so every 'path/...' string sorts inside the range and no
    other string does; this keeps range queries free of LIKE escaping.
    """
    return path + SEP, path + "0"


def sort_key(path: str) -> tuple[str, ...]:
    """Order keys component by component (parents first, siblings together)."""
    return tuple(path.split(SEP)) if path else ()
