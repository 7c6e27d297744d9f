"""The policy's `registry:` section turned into a mount path and a base layer.

The policy loader validates the section against `schema.REGISTRY_SCHEMA` first; this module
then builds typed values and checks what a schema cannot (limits, well-known types, a name
used both as a value and a subkey), raising PolicyError with the offending key.
"""

import binascii
from collections.abc import Mapping
from typing import Any, NamedTuple

from ..errors import PolicyError
from .errors import StoreError
from .keys import DEFAULT_LIMITS, Limits
from .layers import EMPTY_BASE, BaseLayer
from .values import Value, parse_hex

DEFAULT_MOUNT = "/run/appvirt/registry"


class RegistryConfig(NamedTuple):
    mount: str
    base: BaseLayer


DEFAULT_CONFIG = RegistryConfig(DEFAULT_MOUNT, EMPTY_BASE)
# Kernel interfaces the tracer serves itself: the tree cannot be mounted in them.
_NOT_UNDER = ("/proc", "/sys", "/dev")


def check_mount(path: str) -> str | None:
    """Why `path` cannot be the registry tree's mount, or None if it can: it must be a plain
    absolute path (no empty, '.' or '..' component), outside /proc, /sys and /dev."""
    parts = path.split("/")
    if parts[0] != "" or len(parts) < 2 or any(p in ("", ".", "..") for p in parts[1:]):
        return "must be an absolute path without '.', '..' or empty components"
    if "\0" in path:
        return "cannot contain NUL"
    for top in _NOT_UNDER:
        if path == top or path.startswith(top + "/"):
            return f"cannot be in {top}, which appvirt serves from the kernel"
    return None


def value_from_policy(obj: Any) -> Value:
    """A Value from its YAML form (see schema.py); raises StoreError subclasses."""
    if isinstance(obj, bool):
        return Value.integer(int(obj))
    if isinstance(obj, int):
        return Value.integer(obj)
    if isinstance(obj, str):
        return Value.string(obj)
    if isinstance(obj, (list, tuple)):
        if not all(isinstance(s, str) for s in obj):
            raise StoreError("list items must be strings (quote numbers: \"1\")")
        return Value.multi(obj)
    if isinstance(obj, (bytes, bytearray)):   # a YAML !!binary scalar
        return Value.binary(bytes(obj))
    if isinstance(obj, Mapping) and set(obj) == {"hex"}:
        return Value.binary(parse_hex(obj["hex"]))
    if isinstance(obj, Mapping) and set(obj) == {"base64"}:
        import base64       # here: only such values need it, and it costs every start
        try:
            return Value.binary(base64.b64decode(str(obj["base64"]), validate=False))
        except binascii.Error as e:
            raise StoreError(f"bad base64 data: {e}") from None
    if obj is None:
        raise StoreError("a value cannot be empty (null): write '' for an empty string")
    if isinstance(obj, float):
        raise StoreError(f"{obj!r}: there is no floating-point type; quote it to store a string")
    raise StoreError(f"cannot store {type(obj).__name__} values: use a string, an integer, "
                     "a list of strings, {hex: ...} or {base64: ...}")


def registry_config(section: Mapping[str, Any] | None, *, limits: Limits = DEFAULT_LIMITS,
                    file: str = "") -> RegistryConfig:
    """Build the RegistryConfig of a policy; PolicyError names the key at fault."""
    if not section:
        return DEFAULT_CONFIG
    mount = section.get("path") or DEFAULT_MOUNT
    if (why := check_mount(str(mount))) is not None:
        raise PolicyError(f"{mount!r}: the registry path {why}", file=file, key="registry.path")
    keys: dict[str, dict[str, Value]] = {}
    for path, values in (section.get("keys") or {}).items():
        keys[path] = {}
        for name, raw in (values or {}).items():
            try:
                keys[path][name] = value_from_policy(raw)
            except StoreError as e:
                raise PolicyError(e.message, file=file,
                                  key=f"registry.keys.{path}.{name}") from e
    try:
        base = BaseLayer.build(keys, limits)
    except StoreError as e:
        raise PolicyError(e.message, file=file, key="registry.keys") from e
    return RegistryConfig(str(mount), base)
