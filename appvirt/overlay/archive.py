"""`appvirt overlay APP export`: the upper layer as an OCI-style layer tar.

Entries are relative paths ("etc/hosts"), in sorted order, with modes, owners, times,
symlinks and hard links; whiteouts are the `.wh.NAME` files and opaque directories hold
`.wh..wh..opq`, as the OCI image spec has them; extended attributes go into PAX records
(`SCHILY.xattr.NAME`). Temporary names are left out.
"""

from __future__ import annotations

import os
import stat
import tarfile
from typing import BinaryIO

from . import hostio
from .errors import ExportError
from .names import META_PREFIX, OPAQUE_MARKER


def _members(upper_root: bytes) -> list[bytes]:
    """Relative paths of the upper layer's entries, parents before children, sorted."""
    out: list[bytes] = []

    def walk(rel: bytes) -> None:
        for name in sorted(hostio.scan(upper_root + rel)):
            if name.startswith(META_PREFIX) and name != OPAQUE_MARKER:
                continue
            sub = rel + b"/" + name
            out.append(sub)
            st = hostio.lstat(upper_root + sub)
            if st is not None and stat.S_ISDIR(st.st_mode):
                walk(sub)

    walk(b"")
    return out


def export_upper(upper_root: bytes, out: BinaryIO, *, stream: bool,
                 skipped: list[bytes] | None = None) -> int:
    """Write the upper layer to `out` as a tar archive; return the number of entries.
    Sockets, which tar cannot hold, are left out (and appended to `skipped`)."""
    skipped = [] if skipped is None else skipped
    count = 0
    try:
        with tarfile.open(fileobj=out, mode="w|" if stream else "w",
                          format=tarfile.PAX_FORMAT) as tar:
            for rel in _members(upper_root):
                host = os.fsdecode(upper_root + rel)
                info = tar.gettarinfo(host, arcname=os.fsdecode(rel[1:]))
                if info is None:          # a socket: tar has no type for it
                    skipped.append(rel)
                    continue
                if not info.islnk() and not info.issym():
                    for name, value in _xattrs(upper_root + rel).items():
                        info.pax_headers["SCHILY.xattr." + name] = value.decode(
                            "utf-8", "surrogateescape")
                if info.isreg():
                    with open(host, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
                count += 1
    except OSError as e:
        raise ExportError(f"cannot export the overlay: {e.strerror or e}"
                          + (f" ({e.filename})" if e.filename else "")) from None
    return count


def _xattrs(p: bytes) -> dict[str, bytes]:
    try:
        return {n: hostio.getxattr(p, n) for n in hostio.listxattr(p)}
    except OSError:
        return {}
