"""JSON-schema fragment of the policy's `registry:` section (included by the policy schema).

    registry:
      path: /run/appvirt/registry        # where the program sees the store (optional)
      keys:
        app/settings:
          theme: dark                    # string
          retries: 3                     # integer (64-bit); booleans become 1 / 0
          plugins: [spell, grammar]      # multi (list of strings)
          icon: {hex: "89 50 4e 47"}     # binary, as hex ...
          seed: {base64: "3q2+7w=="}     # ... or as base64
        machine/uts:
          hostname: build-box
        app/empty:                       # a key without values

Quote a string that looks like a number or a boolean ("3", "yes") to keep it a string.
"""

from __future__ import annotations

from typing import Any

from .values import INT64_MAX, INT64_MIN

# A key component or value name: no '/', no control characters, not '.' or '..'.
NAME_PATTERN = r"^[^/\u0000-\u001f\u007f-\u009f]+$"
KEY_PATTERN = r"^[^/\u0000-\u001f\u007f-\u009f]+(/[^/\u0000-\u001f\u007f-\u009f]+)*$"

VALUE_SCHEMA: dict[str, Any] = {
    "expected": "a string, an integer, a boolean, a list of strings, {hex: ...} or {base64: ...}",
    "oneOf": [
        {"type": "string"},
        {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX},
        {"type": "boolean"},
        {"type": "array", "items": {"type": "string"}},
        {"type": "object", "required": ["hex"], "additionalProperties": False,
         "properties": {"hex": {"type": "string",
                                "pattern": r"^[\s:,]*([0-9A-Fa-f]{2}[\s:,]*)*$"}}},
        {"type": "object", "required": ["base64"], "additionalProperties": False,
         "properties": {"base64": {"type": "string",
                                   "pattern": r"^[A-Za-z0-9+/=\s]*$"}}},
    ],
}

REGISTRY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The app's registry-like configuration store: where the program sees it, "
                   "and the read-only base layer of machine defaults shipped with the policy.",
    "additionalProperties": False,
    "properties": {
        "path": {"type": "string", "pattern": r"^/.*[^/]$",
                 "description": "Absolute path of the virtual directory tree "
                                "(default /run/appvirt/registry)."},
        "keys": {
            "type": "object",
            "description": "Key path -> {value name: value}; a null key has no values.",
            "propertyNames": {"pattern": KEY_PATTERN, "not": {"pattern": r"(^|/)\.\.?(/|$)"}},
            "additionalProperties": {
                "type": ["object", "null"],
                "propertyNames": {"pattern": NAME_PATTERN, "not": {"enum": [".", ".."]}},
                "additionalProperties": VALUE_SCHEMA,
            },
        },
    },
}
