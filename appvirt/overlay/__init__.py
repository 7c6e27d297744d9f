"""The per-application copy-on-write overlay file system (a pure library; see docs/overlay.md).

The tracer resolves every path the program uses and asks an `Overlay` what the program sees
there and where the kernel should act; `appvirt overlay APP ...` (cli.py) inspects and manages
the layer from the host.
"""

from .model import Change, ChangeKind, DirEntry, Entry, FileType, Layer
from .overlay import Overlay

__all__ = ["Change", "ChangeKind", "DirEntry", "Entry", "FileType", "Layer", "Overlay"]
