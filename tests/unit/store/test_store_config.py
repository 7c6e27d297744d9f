"""The policy's `registry:` section: JSON schema and conversion to a base layer."""

from __future__ import annotations

import copy

import jsonschema
import pytest
import yaml

from appvirt.errors import PolicyError
from appvirt.store import (DEFAULT_MOUNT, REGISTRY_SCHEMA, Value, registry_config,
                           value_from_policy)

EXAMPLE = """
registry:
  path: /run/appvirt/registry
  keys:
    app/settings:
      theme: dark
      retries: 3
      verbose: true
      plugins: [spell, grammar]
      none: []
      icon: {hex: "89 50 4e 47"}
      seed: {base64: "3q2+7w=="}
      raw: !!binary "AAEC"
      digits: "0042"
      empty: ""
    machine/uts:
      hostname: build-box
    app/empty:
"""


def validator() -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for({"$schema":
                                               "https://json-schema.org/draft/2020-12/schema"})
    cls.check_schema(REGISTRY_SCHEMA)
    return cls(REGISTRY_SCHEMA)


def test_example_validates_and_converts() -> None:
    doc = yaml.safe_load(EXAMPLE)["registry"]
    for_schema = copy.deepcopy(doc)
    del for_schema["keys"]["app/settings"]["raw"]   # !!binary is bytes: not in JSON schemas
    validator().validate(for_schema)
    cfg = registry_config(doc)
    assert cfg.mount == "/run/appvirt/registry"
    vals = cfg.base.keys["app/settings"]
    assert vals["theme"] == Value.string("dark")
    assert vals["retries"] == Value.integer(3)
    assert vals["verbose"] == Value.integer(1)
    assert vals["plugins"] == Value.multi(["spell", "grammar"])
    assert vals["none"] == Value.multi([])
    assert vals["icon"] == Value.binary(b"\x89PNG")
    assert vals["seed"] == Value.binary(bytes.fromhex("deadbeef"))
    assert vals["raw"] == Value.binary(b"\x00\x01\x02")
    assert vals["digits"] == Value.string("0042")
    assert vals["empty"] == Value.string("")
    assert dict(cfg.base.keys["app/empty"]) == {}
    assert set(cfg.base.keys) == {"app", "app/settings", "app/empty", "machine", "machine/uts"}


def test_defaults() -> None:
    assert registry_config(None).mount == DEFAULT_MOUNT
    assert dict(registry_config({}).base.keys) == {}


@pytest.mark.parametrize("section", [
    {"keys": {"/abs": {}}},
    {"keys": {"a//b": {}}},
    {"keys": {"a/../b": {}}},
    {"keys": {"app": {"x/y": 1}}},
    {"keys": {"app": {"..": 1}}},
    {"keys": {"app": {"x": 1.5}}},
    {"keys": {"app": {"x": None}}},
    {"keys": {"app": {"x": [1, 2]}}},
    {"keys": {"app": {"x": {"hex": "zz"}}}},
    {"keys": {"app": {"x": {"hex": "00", "base64": "AA=="}}}},
    {"keys": {"app": {"x": 2 ** 63}}},
    {"keys": [], "path": "/x"},
    {"path": "relative"},
    {"mount": "/x"},
])
def test_schema_rejects(section: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(jsonschema.ValidationError):
        validator().validate(section)


@pytest.mark.parametrize("raw,message", [
    (1.5, "no floating-point type"), (None, "cannot be empty"), ([1], "list items must be"),
    ({"hex": "zz"}, "not hex bytes"), ({"x": 1}, "cannot store dict"),
])
def test_value_errors(raw: object, message: str) -> None:
    with pytest.raises(Exception, match=message):
        value_from_policy(raw)


def test_errors_name_the_key() -> None:
    with pytest.raises(PolicyError, match=r"p\.yaml: registry\.keys\.app\.x: .*floating"):
        registry_config({"keys": {"app": {"x": 1.5}}}, file="p.yaml")
    with pytest.raises(PolicyError, match="both a value and a subkey"):
        registry_config({"keys": {"app": {"x": 1}, "app/x": None}})
    with pytest.raises(PolicyError, match="holds integer"):
        registry_config({"keys": {"machine/clock": {"offset_ns": "soon"}}})
