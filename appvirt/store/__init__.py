"""The registry-like configuration store of an application (tracker issue 5).

One SQLite file per app (`store.sqlite` in its state directory) holding hierarchical keys
with typed values, in two layers: the policy's read-only base and the app's writable layer.
Reference: docs/registry.md.

    Store            the store (store.py)
    Value, ValueType typed values (values.py)
    RegistryTree     keys as directories, values as files, for the tracer (tree.py)
    SysctlOverlay    /proc/sys writes kept in the store (procsys.py)
    registry_config  the policy's `registry:` section -> mount path + base layer (config.py)
    REGISTRY_SCHEMA  its JSON-schema fragment (schema.py)
    wellknown        keys where the virtual machine state lives
"""

import importlib
from typing import TYPE_CHECKING, Any

from . import wellknown
from .config import DEFAULT_MOUNT, RegistryConfig, registry_config, value_from_policy
from .errors import (ImportFormatError, InvalidBase, InvalidKey, InvalidValue, IsAKey,
                     KeyExists, KeyNotEmpty, KeyNotFound, LimitExceeded, LimitKind, NotAKey,
                     StoreBusy, StoreCorrupt, StoreError, StoreIOError, StoreVersionError,
                     ValueNotFound, WrongType)
from .keys import DEFAULT_LIMITS, Limits
from .layers import EMPTY_BASE, BaseLayer, KeyInfo, Listing, Node, NodeKind, ValueEntry, View
from .procsys import SysctlOverlay, sysctl_location, sysctl_name
from .render import render, value_from_content
from .schema import REGISTRY_SCHEMA
from .store import Store
from .tree import DirEntry, FileKind, NodeStat, RegistryTree
from .values import Value, ValueType

if TYPE_CHECKING:
    from .diff import Change, DiffEntry
    from .transfer import ImportSummary

# Imported on first use (PEP 562): diffs and imports serve `appvirt reg`, not `appvirt run`.
_LAZY = {"Change": ".diff", "DiffEntry": ".diff", "ImportSummary": ".transfer"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_LIMITS", "DEFAULT_MOUNT", "EMPTY_BASE", "REGISTRY_SCHEMA", "BaseLayer", "Change",
    "DiffEntry", "DirEntry", "FileKind", "ImportFormatError", "ImportSummary", "InvalidBase",
    "InvalidKey", "InvalidValue", "IsAKey", "KeyExists", "KeyInfo", "KeyNotEmpty", "KeyNotFound",
    "LimitExceeded", "LimitKind", "Limits", "Listing", "Node", "NodeKind", "NodeStat",
    "NotAKey", "RegistryConfig", "RegistryTree", "Store", "StoreBusy", "StoreCorrupt",
    "StoreError", "StoreIOError", "StoreVersionError", "SysctlOverlay", "Value", "ValueEntry",
    "ValueNotFound", "ValueType", "View", "WrongType", "registry_config", "render",
    "sysctl_location", "sysctl_name", "value_from_content", "value_from_policy", "wellknown",
]
