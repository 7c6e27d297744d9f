"""Host-side failures of `appvirt overlay`, each a one-line `AppvirtError` (exit status 2)."""

from __future__ import annotations

from ..errors import AppvirtError


class OverlayError(AppvirtError):
    """Base of the overlay command's failures."""


class NoSuchApp(OverlayError):
    """The command line names an app that has no state directory."""


class BadPattern(OverlayError):
    """A PATH/GLOB argument is not an absolute path glob."""


class ExportError(OverlayError):
    """The upper layer could not be read or the archive not written."""


class CommitError(OverlayError):
    """A change could not be applied to the host (the ones before it were)."""
