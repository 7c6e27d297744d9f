"""The typed records of the overlay: layers, entries, directory entries and changes."""

import enum
import os
import stat
from typing import NamedTuple

from ..core.kind import kind_hash, other_kind, same_kind


class Layer(enum.Enum):
    """Where the object a guest name stands for lives."""

    UPPER = "upper"      # the app's own copy, in its state directory
    LOWER = "lower"      # the host's object, seen read-only through the overlay
    HOST = "host"        # a passthrough path: the host object itself, read and written


class Entry(NamedTuple):
    """A name as the program sees it."""

    guest: bytes
    layer: Layer
    host: bytes                  # the host path holding it (upper copy, or lower = host path)
    st: os.stat_result           # lstat of that object

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)

    __eq__, __ne__, __hash__ = same_kind, other_kind, kind_hash


class DirEntry(NamedTuple):
    """One name of a merged directory listing (d_type as in <dirent.h>)."""

    name: bytes
    d_type: int
    ino: int

    __eq__, __ne__, __hash__ = same_kind, other_kind, kind_hash


def d_type_of(mode: int) -> int:
    """The DT_* value of a st_mode (IFTODT)."""
    return stat.S_IFMT(mode) >> 12


class ChangeKind(enum.Enum):
    ADDED = "added"            # the host lacks the path
    MODIFIED = "modified"      # the host has it with other content or metadata (or it is opaque)
    DELETED = "deleted"        # a whiteout: the host's object is invisible to the program
    UNCHANGED = "unchanged"    # only from Overlay.upper_entries(): an upper copy equal to the host


class FileType(enum.Enum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    OTHER = "other"            # FIFO, socket, device node

    @classmethod
    def of(cls, mode: int) -> "FileType":
        if stat.S_ISREG(mode):
            return cls.FILE
        if stat.S_ISDIR(mode):
            return cls.DIR
        if stat.S_ISLNK(mode):
            return cls.SYMLINK
        return cls.OTHER


class Change(NamedTuple):
    """A difference between the program's view and the host at one path."""

    guest: bytes
    kind: ChangeKind
    type: FileType             # of the upper object (of the host object for DELETED)
    size: int                  # st_size of that object
    old_size: int | None = None          # the host's st_size, for MODIFIED
    opaque: bool = False                 # a directory whose host content does not show through
    details: tuple[str, ...] = ()        # what differs for MODIFIED: type, content, target,
                                         # mode, owner, mtime, xattrs, opaque

    __eq__, __ne__, __hash__ = same_kind, other_kind, kind_hash
