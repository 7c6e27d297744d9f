"""Guest paths and the names the upper layer reserves for itself.

Guest paths are absolute, normalised bytes ("/", "/etc/hosts"). The upper layer uses the OCI
layer convention: `.wh.NAME` is a whiteout of NAME and `.wh..wh..opq` makes its directory
opaque. Every name starting with `.wh.` is reserved: the program cannot create one and never
sees one. Temporary names (copy-up in progress, directories being removed) start with
`.wh..wh..tmp.`, a prefix OCI reserves too; they are removed when the overlay is next loaded.
"""

from __future__ import annotations

import itertools
import os

WH_PREFIX = b".wh."
META_PREFIX = b".wh..wh."
OPAQUE_MARKER = b".wh..wh..opq"
TMP_PREFIX = b".wh..wh..tmp."

_counter = itertools.count()


def parent(g: bytes) -> bytes:
    i = g.rfind(b"/")
    return g[:i] or b"/"


def basename(g: bytes) -> bytes:
    return g[g.rfind(b"/") + 1:]


def join(d: bytes, name: bytes) -> bytes:
    return b"/" + name if d == b"/" else d + b"/" + name


def under(g: bytes, top: bytes) -> bool:
    """Whether g is top or below it."""
    return top == b"/" or g == top or g.startswith(top + b"/")


def ancestors(g: bytes) -> list[bytes]:
    """The proper ancestors of g, nearest first, "/" excluded."""
    out = []
    p = parent(g)
    while p != b"/":
        out.append(p)
        p = parent(p)
    return out


def has_reserved(g: bytes) -> bool:
    """Whether a component of g is a reserved (.wh.) name."""
    return b"/.wh." in g


def whiteout_name(name: bytes) -> bytes:
    return WH_PREFIX + name


def tmp_name() -> bytes:
    """A fresh temporary name, unique within this process."""
    return TMP_PREFIX + b"%d.%d" % (os.getpid(), next(_counter))
