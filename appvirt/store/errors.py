"""Failures of the configuration store, each a one-line `AppvirtError` with its exit status.

Negative answers ("no such key", "no such value") exit with FAILURE (1); everything that keeps a
command from running (bad key syntax, wrong type, limits, busy or corrupt database, malformed
import file) exits with USAGE (2). The virtual directory adapter turns these into errnos.
"""

from __future__ import annotations

import enum

from ..errors import AppvirtError, ExitStatus


class StoreError(AppvirtError):
    """Base of every configuration-store failure."""


class StoreCorrupt(StoreError):
    """The database file is not a usable appvirt store; it is left untouched for inspection."""


class StoreVersionError(StoreError):
    """The database uses a schema version this appvirt does not know."""


class StoreBusy(StoreError):
    """Another process held the write lock for longer than the bounded wait."""


class StoreIOError(StoreError):
    """The database file could not be read or written (permissions, disk full, I/O error)."""


class InvalidKey(StoreError):
    """A key path or value name breaks the syntax rules."""


class InvalidValue(StoreError):
    """A value literal cannot be parsed, or its data does not fit its type."""


class WrongType(InvalidValue):
    """A value exists, or must exist, with another type than the one given or expected."""


class LimitKind(enum.Enum):
    PATH_LENGTH = "path length"
    DEPTH = "depth"
    NAME_LENGTH = "name length"
    VALUE_SIZE = "value size"
    VALUE_COUNT = "value count"


class LimitExceeded(StoreError):
    """A key path, name, value or value count is over the store's limits."""

    def __init__(self, kind: LimitKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class KeyNotFound(StoreError):
    exit_status = ExitStatus.FAILURE


class ValueNotFound(StoreError):
    exit_status = ExitStatus.FAILURE


class KeyExists(StoreError):
    """A key was to be created where one already exists."""


class NotAKey(StoreError):
    """A component of a key path names a value, not a key (ENOTDIR)."""


class IsAKey(StoreError):
    """A value was to be written, or removed, where a subkey of that name exists (EISDIR)."""


class KeyNotEmpty(StoreError):
    """A non-recursive delete of a key that still has subkeys or values."""


class ImportFormatError(StoreError):
    """An import file does not follow the documented text format."""

    def __init__(self, message: str, *, line: int | None = None, source: str = "") -> None:
        where = source or "<import>"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {message}")
        self.line = line


class NoSuchApp(StoreError):
    """The command line names an app that has no state directory."""


class InvalidBase(StoreError):
    """The base layer (the policy's `registry:` section) is inconsistent."""
