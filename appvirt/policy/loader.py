"""Load a policy file: YAML with line marks, schema validation, defaults, then frozen records.

Every problem becomes one PolicyError naming the file, the line, the key path and what was
expected; nothing here lets a traceback reach the user.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..errors import PolicyError
from ..state import APP_NAME_RE, appvirt_home
from ..net.config import NETWORK_SCHEMA, network_policy
from ..store.config import registry_config
from ..virt.machinepolicy import (HOSTNAME_SCHEMA, MODULES_SCHEMA, REBOOT_SCHEMA, ModulesAction,
                                  reboot_policy, uts_policy)
from ..virt.identity import IDENTITY_SCHEMA, identity_policy
from ..virt.procpolicy import PROCESSES_SCHEMA, process_policy
from ..virt.timepolicy import TIME_SCHEMA, ClockSpecError, time_policy
from ..store.schema import REGISTRY_SCHEMA
from ..globs import Glob, GlobError
from .model import (BASE_RULES, FilesPolicy, FileMode, LogLevel, LogPolicy, PathRule, Policy,
                    registry_rule)

_SCHEMA: dict[str, Any] = json.loads(
    resources.files(__package__).joinpath("schema.json").read_text())
_SCHEMA["properties"]["registry"] = REGISTRY_SCHEMA
_SCHEMA["properties"]["network"] = NETWORK_SCHEMA
_SCHEMA["properties"]["time"] = TIME_SCHEMA
_SCHEMA["properties"]["hostname"] = HOSTNAME_SCHEMA
_SCHEMA["properties"]["reboot"] = REBOOT_SCHEMA
_SCHEMA["properties"]["modules"] = MODULES_SCHEMA
_SCHEMA["properties"]["processes"] = PROCESSES_SCHEMA
_SCHEMA["properties"]["identity"] = IDENTITY_SCHEMA

if TYPE_CHECKING:
    import jsonschema


@functools.cache
def _validator() -> "jsonschema.Draft202012Validator":
    # Imported on first need: jsonschema is a fifth of appvirt's start-up time, and a policy
    # already validated (see _schema_errors) does not need it again.
    import jsonschema
    return jsonschema.Draft202012Validator(_SCHEMA)


@functools.cache
def _schema_digest() -> str:
    return hashlib.sha256(json.dumps(_SCHEMA, sort_keys=True).encode()).hexdigest()


def _validated_mark(data: dict[str, Any]) -> Path | None:
    """Where a successful validation of `data` against this very schema is remembered."""
    try:
        text = json.dumps([_schema_digest(), data], sort_keys=True, default=repr)
        return appvirt_home() / "cache" / "valid-policies" / \
            hashlib.sha256(text.encode()).hexdigest()
    except (TypeError, ValueError, OSError):
        return None


def _schema_errors(data: dict[str, Any], remember: bool) -> list["jsonschema.ValidationError"]:
    """The schema's complaints about data, first the shallowest. remember=True: data (with
    this schema) once found valid is known valid from then on, without loading jsonschema."""
    mark = _validated_mark(data) if remember else None
    if mark is not None and mark.is_file():
        return []
    errors = sorted(_validator().iter_errors(data), key=lambda e: (len(e.absolute_path), str(e)))
    if not errors and mark is not None:
        try:
            mark.parent.mkdir(parents=True, exist_ok=True)
            mark.touch()
        except OSError:
            pass                # a read-only home only costs the next start-up the validation
    return errors

KeyPath = tuple[str | int, ...]


class _PolicyLoader(yaml.SafeLoader):
    """SafeLoader without implicit timestamps: `time: 2030-01-01` stays the text it reads as
    (the clock syntax parses it), and an impossible date is our error, not PyYAML's crash."""


_PolicyLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def format_key(path: KeyPath) -> str:
    """Render a key path as `files.rules[2].mode`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _marks(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], file: str) -> None:
    """Record the line of every key and item; reject duplicate keys (YAML would keep the last)."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                raise PolicyError(f"duplicate key '{key}'", file=file,
                                  line=key_node.start_mark.line + 1, key=format_key(path + (key,)))
            seen.add(key)
            _marks(value_node, path + (key,), lines, file)
            lines[path + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _marks(item, path + (i,), lines, file)


def _line_of(lines: dict[KeyPath, int], path: KeyPath) -> int | None:
    while path not in lines and path:
        path = path[:-1]
    return lines.get(path)


def _describe(err: "jsonschema.ValidationError") -> str:
    """Say what was expected, in words a policy author understands."""
    v = err.validator
    if v == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed)) if isinstance(err.instance, dict) else []
        return (f"unknown key '{extra[0] if extra else '?'}' "
                f"(expected one of: {', '.join(allowed)})")
    if v == "enum":
        return (f"{err.instance!r} is not allowed "
                f"(expected one of: {', '.join(map(str, err.validator_value))})")
    if v == "const":
        return f"{err.instance!r} is not allowed (expected {err.validator_value!r})"
    if v == "type":
        want = err.validator_value
        want = " or ".join(want) if isinstance(want, list) else want
        return f"expected {want}, got {type(err.instance).__name__} {err.instance!r}"
    if v == "required":
        return f"missing required key ({err.message})"
    if v == "pattern":
        return f"{err.instance!r} does not match {err.validator_value}"
    if v == "minLength":
        return "must not be empty"
    if v in ("oneOf", "anyOf") and "expected" in err.schema:
        return f"{err.instance!r} is not allowed (expected {err.schema['expected']})"
    return err.message


def _fill_defaults(schema: dict[str, Any], instance: Any, root: dict[str, Any]) -> Any:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = root["$defs"][name]
    if isinstance(instance, dict) and "properties" in schema:
        for key, sub in schema["properties"].items():
            if key not in instance and "default" in sub:
                instance[key] = copy.deepcopy(sub["default"])
            if key in instance:
                instance[key] = _fill_defaults(sub, instance[key], root)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        return [_fill_defaults(schema["items"], item, root) for item in instance]
    return instance


def load_policy_text(text: str, file: str = "<policy>", *, default_app: str = "app",
                     remember_valid: bool = False) -> Policy:
    """Parse and validate policy text; raise PolicyError on any problem. remember_valid:
    keep a mark of a successful validation under APPVIRT_HOME (see _schema_errors), for the
    start-up of `appvirt run`."""
    try:
        docs = list(yaml.compose_all(text, Loader=_PolicyLoader))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise PolicyError(f"bad YAML: {e.problem or e.context}", file=file,
                          line=mark.line + 1 if mark else None) from None
    except yaml.YAMLError as e:
        raise PolicyError(f"bad YAML: {e}", file=file) from None
    if len(docs) > 1:
        raise PolicyError("a policy is one YAML document (found several)", file=file,
                          line=docs[1].start_mark.line + 1)
    node = docs[0] if docs else None
    lines: dict[KeyPath, int] = {}
    if node is None:
        data: Any = {}
    else:
        _marks(node, (), lines, file)
        try:
            data = _PolicyLoader("").construct_document(node)
        except (yaml.YAMLError, ValueError, TypeError) as e:
            mark = getattr(e, "problem_mark", None) or node.start_mark
            what = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise PolicyError(f"bad YAML value: {what}", file=file,
                              line=mark.line + 1) from None
    if not isinstance(data, dict):
        raise PolicyError(f"a policy is a mapping of keys, got {type(data).__name__}",
                          file=file, line=1)
    errors = _schema_errors(data, remember_valid)
    if errors:
        err = errors[0]
        path = tuple(err.absolute_path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            path = path + (extra[0],) if extra else path
        raise PolicyError(_describe(err), file=file, line=_line_of(lines, path),
                          key=format_key(path))
    data = _fill_defaults(_SCHEMA, data, _SCHEMA)
    data.setdefault("app", default_app)

    try:
        time = time_policy(data.get("time"))
    except ClockSpecError as e:
        key = ("time", "clock") if isinstance(data.get("time"), dict) else ("time",)
        raise PolicyError(str(e), file=file, line=_line_of(lines, key),
                          key=format_key(key)) from None
    def glob_at(section: str, i: int, text: str) -> Glob:
        try:
            return Glob.of(text)
        except GlobError as e:
            key = (section, "rules" if section == "files" else "exec", i, "path")
            raise PolicyError(f"bad glob {text!r}: {e}", file=file,
                              line=_line_of(lines, key), key=format_key(key)) from None

    registry = registry_config(data.get("registry"), file=file)
    rules = list(BASE_RULES) if data["files"]["base_rules"] else []
    rules.append(registry_rule(registry.mount))
    for i, r in enumerate(data["files"]["rules"]):
        rules.append(PathRule(glob_at("files", i, r["path"]), FileMode(r["mode"]),
                              f"files.rules[{i}]"))
    return Policy(
        version=data["version"],
        app=data["app"],
        files=FilesPolicy(FileMode(data["files"]["default"]), tuple(rules)),
        log=LogPolicy(LogLevel(data["log"]["level"]), data["log"]["file"]),
        registry=registry,
        network=network_policy(data["network"], file, lambda k: _line_of(lines, k)),
        time=time,
        uts=uts_policy(data.get("hostname")),
        reboot=reboot_policy(data.get("reboot")),
        modules=ModulesAction(data.get("modules", "deny")),
        processes=process_policy(data["processes"],
                                 lambda i, text: glob_at("processes", i, text)),
        identity=identity_policy(data.get("identity")),
        source=file,
        raw=data,
    )


def load_policy(path: str | Path, *, remember_valid: bool = False) -> Policy:
    """Load a policy file; the app name defaults to the file's stem when it is a valid name."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError("no such policy file", file=str(p)) from None
    except IsADirectoryError:
        raise PolicyError("is a directory, not a policy file", file=str(p)) from None
    except UnicodeDecodeError as e:
        raise PolicyError(f"not UTF-8 text (byte {e.start})", file=str(p)) from None
    except OSError as e:
        raise PolicyError(f"cannot read: {e.strerror}", file=str(p)) from None
    stem = p.stem if APP_NAME_RE.match(p.stem) else "app"
    return load_policy_text(text, str(p), default_app=stem, remember_valid=remember_valid)
