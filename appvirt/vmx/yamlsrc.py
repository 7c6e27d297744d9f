"""YAML input with line numbers, and jsonschema errors turned into one-line messages.

The document is parsed twice: `yaml.safe_load` for the data and `yaml.compose` for the node
tree, whose `start_mark.line` locates a key path (the same approach as policy files).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import VmxConfigError

PathItem = str | int


def load_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """Read and parse a YAML file.

    Raises:
        VmxConfigError: unreadable file or a YAML syntax error (with its line).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise VmxConfigError(f"cannot read: {e.strerror or e}", file=str(path)) from None
    except UnicodeDecodeError:
        raise VmxConfigError("not a UTF-8 text file", file=str(path)) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise VmxConfigError(f"invalid YAML: {problem}", file=str(path),
                             line=mark.line + 1 if mark else None) from None
    return data, node


def node_line(node: yaml.Node | None, path: Sequence[PathItem]) -> int | None:
    """The 1-based line of the deepest node reachable along `path`."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    current: yaml.Node = node
    for item in path:
        nxt: yaml.Node | None = None
        if isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                if str(key.value) == str(item):
                    nxt = value
                    line = key.start_mark.line + 1
                    break
        elif isinstance(current, yaml.SequenceNode) and isinstance(item, int) \
                and 0 <= item < len(current.value):
            nxt = current.value[item]
            line = nxt.start_mark.line + 1
        if nxt is None:
            break
        current = nxt
    return line


def key_path(path: Sequence[PathItem]) -> str:
    out = ""
    for item in path:
        out += f"[{item}]" if isinstance(item, int) else (f".{item}" if out else str(item))
    return out


def config_error(file: str, node: yaml.Node | None, path: Sequence[PathItem],
                 message: str) -> VmxConfigError:
    return VmxConfigError(message, file=file, line=node_line(node, path), key=key_path(path))


def _description(error: jsonschema.ValidationError) -> str | None:
    """The nearest `description` of the schema or of an enclosing oneOf/anyOf."""
    current: jsonschema.ValidationError | None = error
    while current is not None:
        if isinstance(current.schema, dict) and "description" in current.schema:
            return str(current.schema["description"])
        current = current.parent  # type: ignore[assignment]
    return None


def _describe(error: jsonschema.ValidationError) -> str:
    v, inst = error.validator, error.instance
    desc = _description(error)
    shown = repr(inst) if not isinstance(inst, (dict, list)) else type(inst).__name__
    if v == "type":
        want = error.validator_value
        want = " or ".join(want) if isinstance(want, list) else want
        if desc and error.parent is not None:
            return f"expected {desc}, got {shown}"
        return f"expected {'an' if str(want)[0] in 'aeiou' else 'a'} {want}, got {shown}"
    if v == "enum":
        choices = [str(c) for c in error.validator_value]
        close = difflib.get_close_matches(str(inst), choices, n=1)
        if close:
            return f"unknown value {shown} (did you mean {close[0]!r}?)"
        return f"expected one of {', '.join(choices)}; got {shown}"
    if v == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(inst) - set(allowed)) if isinstance(inst, dict) else []
        return (f"unknown key {extra[0]!r}" if extra else "unknown key") + (
            f" (expected one of: {', '.join(allowed)})" if allowed else "")
    if v == "required":
        return error.message.replace(" is a required property", ": required key missing")
    if v in ("minimum", "maximum") and desc and error.parent is not None:
        return f"expected {desc}; {shown} is out of range"
    if v in ("minimum", "maximum"):
        return f"expected a value {'>=' if v == 'minimum' else '<='} {error.validator_value:#x}, got {shown}"
    if v == "pattern":
        return f"{shown} does not have the expected form ({desc or error.validator_value})"
    if v in ("oneOf", "anyOf"):
        return f"{shown} is not valid here: expected {desc or 'see docs/vmexit.md'}"
    if v == "uniqueItems":
        return "the list repeats an item"
    if v == "maxLength":
        return f"expected at most {error.validator_value} characters"
    return error.message


def validate(data: Any, schema: dict[str, Any], node: yaml.Node | None, file: str) -> None:
    """Validate against a JSON schema.

    Raises:
        VmxConfigError: the most relevant error, as file:line: key.path: what was expected.
    """
    validator = jsonschema.Draft202012Validator(schema)
    best = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if best is None:
        return
    path = list(best.absolute_path)
    if best.validator == "additionalProperties" and isinstance(best.instance, dict):
        allowed = set(best.schema.get("properties", {}))
        extra = sorted(set(best.instance) - allowed, key=str)
        if extra:
            path.append(extra[0])
    raise config_error(file, node, path, _describe(best))
