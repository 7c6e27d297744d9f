"""Load a policy file: YAML with line marks, schema validation, defaults, then frozen records.

Every problem becomes one PolicyError naming the file, the line, the key path and what was
expected; nothing here lets a traceback reach the user.

`appvirt run` loads the same policy at every start, so a policy text that loaded cleanly is
remembered in its checked form (validated, defaults filled in) under
`$APPVIRT_HOME/cache/policies`: the next start builds the records from that, without PyYAML
or jsonschema. The cache is keyed on the text, the schema and this module's code.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PolicyError
from ..hashes import sha256
from ..state import APP_NAME_RE, appvirt_home, replace_quietly
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

_SCHEMA: dict[str, Any] = json.loads(Path(__file__).with_name("schema.json").read_text())
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
    import yaml


@functools.cache
def _validator() -> "jsonschema.Draft202012Validator":
    # Imported on first need: jsonschema is a fifth of appvirt's start-up time, and a policy
    # already checked (see _cache_file) does not need it again.
    import jsonschema
    return jsonschema.Draft202012Validator(_SCHEMA)


def _schema_errors(data: dict[str, Any]) -> list["jsonschema.ValidationError"]:
    """The schema's complaints about data, first the shallowest."""
    return sorted(_validator().iter_errors(data), key=lambda e: (len(e.absolute_path), str(e)))


# --- the cache of checked policies --------------------------------------------------------------
@functools.cache
def _cache_salt() -> bytes | None:
    """What a checked policy depends on besides its text: the schema and this module's code
    (which reads the YAML). None when this module's source cannot be read: no cache then."""
    try:
        code = Path(__file__).read_bytes()
    except OSError:
        return None
    schema = json.dumps(_SCHEMA, sort_keys=True).encode()
    return sha256(schema).digest() + sha256(code).digest()


def _cache_file(text: str) -> Path | None:
    """Where the checked form of a policy text is remembered."""
    salt = _cache_salt()
    if salt is None:
        return None
    key = sha256(salt + text.encode("utf-8", "surrogatepass")).hexdigest()
    return appvirt_home() / "cache" / "policies" / f"{key}.json"


def _json_exact(value: Any) -> bool:
    """Whether a JSON round trip gives `value` back with the very same types."""
    kind = type(value)
    if kind is dict:
        return all(type(k) is str and _json_exact(v) for k, v in value.items())
    if kind is list:
        return all(_json_exact(v) for v in value)
    if kind is float:
        return math.isfinite(value)
    return kind in (str, int, bool, type(None))


def _recall(path: Path) -> dict[str, Any] | None:
    """The checked data remembered in `path`: None when there is none, or when the entry is
    damaged (it is ignored, and replaced by the next clean load)."""
    try:
        digest, _, text = path.read_bytes().partition(b"\n")
        if digest.decode("ascii") != sha256(text).hexdigest():
            return None
        data = json.loads(text)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _remember(path: Path, text: str) -> None:
    """Store checked data (as JSON text) at `path`, after the digest of that text, atomically.
    Failing (a read-only home) only costs the next start-up the parse and the validation."""
    body = text.encode()
    replace_quietly(path, sha256(body).hexdigest().encode() + b"\n" + body)


KeyPath = tuple[str | int, ...]


@functools.cache
def _policy_loader() -> type["yaml.SafeLoader"]:
    """PyYAML's SafeLoader without implicit timestamps: `time: 2030-01-01` stays the text it
    reads as (the clock syntax parses it), and an impossible date is our error, not PyYAML's
    crash. Imported on first need: a remembered policy needs no YAML (see _cache_file)."""
    import yaml

    class PolicyLoader(yaml.SafeLoader):
        pass

    PolicyLoader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers
                if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    return PolicyLoader


def format_key(path: KeyPath) -> str:
    """Render a key path as `files.rules[2].mode`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _marks(node: "yaml.Node", path: KeyPath, lines: dict[KeyPath, int], file: str) -> None:
    """Record the line of every key and item; reject duplicate keys (YAML would keep the last)."""
    import yaml
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
                import copy     # here: a remembered policy (the usual start) fills no defaults
                instance[key] = copy.deepcopy(sub["default"])
            if key in instance:
                instance[key] = _fill_defaults(sub, instance[key], root)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        return [_fill_defaults(schema["items"], item, root) for item in instance]
    return instance


# Policies built in this process, by their text and default app name (a policy's records
# are immutable; only its source, the file named in messages, differs between files).
_loaded: dict[tuple[str, str], Policy] = {}
LOADED_MAX = 16


def load_policy_text(text: str, file: str = "<policy>", *, default_app: str = "app",
                     remember_valid: bool = False) -> Policy:
    """Parse and validate policy text; raise PolicyError on any problem. remember_valid:
    remember the checked form of a text that loads cleanly under APPVIRT_HOME, and use it when
    the same text comes again (see _cache_file), for the start-up of `appvirt run`; and keep
    the policy built in this process for the same text again (a warm server builds the
    default policy, and the runs it forks find it: 1 ms of each)."""
    if remember_valid and (known := _loaded.get((text, default_app))) is not None:
        return known if known.source == file else known._replace(source=file)
    cached = _cache_file(text) if remember_valid else None
    policy = None
    if cached is not None and (data := _recall(cached)) is not None:
        try:
            policy = _build(data, {}, file, default_app)
        except PolicyError:
            pass        # not from a policy that loaded before; read it again for the line
    if policy is None:
        data, lines = _checked(text, file)
        # What the cache would hold, taken before _build adds the app name.
        checked = json.dumps(data) if cached is not None and _json_exact(data) else None
        policy = _build(data, lines, file, default_app)
        if checked is not None:
            _remember(cached, checked)
    if remember_valid and len(_loaded) < LOADED_MAX:
        _loaded[(text, default_app)] = policy
    return policy


def _checked(text: str, file: str) -> tuple[dict[str, Any], dict[KeyPath, int]]:
    """Parse and validate policy text: its data with every default filled in, and the line of
    every key (for the messages of later checks)."""
    import yaml
    loader = _policy_loader()
    try:
        docs = list(yaml.compose_all(text, Loader=loader))
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
            data = loader("").construct_document(node)
        except (yaml.YAMLError, ValueError, TypeError) as e:
            mark = getattr(e, "problem_mark", None) or node.start_mark
            what = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise PolicyError(f"bad YAML value: {what}", file=file,
                              line=mark.line + 1) from None
    if not isinstance(data, dict):
        raise PolicyError(f"a policy is a mapping of keys, got {type(data).__name__}",
                          file=file, line=1)
    errors = _schema_errors(data)
    if errors:
        err = errors[0]
        path = tuple(err.absolute_path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            path = path + (extra[0],) if extra else path
        raise PolicyError(_describe(err), file=file, line=_line_of(lines, path),
                          key=format_key(path))
    return _fill_defaults(_SCHEMA, data, _SCHEMA), lines


def _build(data: dict[str, Any], lines: dict[KeyPath, int], file: str,
           default_app: str) -> Policy:
    """The records of checked policy data (`lines`: where each key was, for messages)."""
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
