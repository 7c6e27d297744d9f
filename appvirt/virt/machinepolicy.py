"""The policy's machine sections: `hostname:`, `reboot:` and `modules:`.

Each is optional; without it the operation is refused (EPERM) and never reaches the kernel.
"""

import enum
from typing import Any, NamedTuple

HOST_NAME_MAX = 64          # the kernel's __NEW_UTS_LEN: longer names are EINVAL

_NAME = {"type": "string", "minLength": 1, "maxLength": HOST_NAME_MAX,
         "pattern": "^[^\\u0000]*$"}
HOSTNAME_SCHEMA: dict[str, Any] = {
    "oneOf": [
        _NAME,
        {"type": "object", "additionalProperties": False, "minProperties": 1,
         "properties": {"name": _NAME, "domain": _NAME, "set": {"enum": ["allow", "deny"]}}},
    ],
    "expected": "a host name (1-64 characters) or {name: ..., domain: ..., set: allow|deny}",
}

REBOOT_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {"enum": ["deny", "exit", "restart"]},
        {"type": "object", "additionalProperties": False, "required": ["action"],
         "properties": {"action": {"enum": ["deny", "exit", "restart"]},
                        "max_restarts": {"type": "integer", "minimum": 0, "maximum": 1000}}},
    ],
    "expected": "deny, exit, restart or {action: restart, max_restarts: N}",
}

MODULES_SCHEMA: dict[str, Any] = {
    "enum": ["deny", "virtual"],
}


class UtsPolicy(NamedTuple):
    """The `hostname:` section. Not virtual: uname runs natively, sethostname is refused."""

    virtual: bool = False
    hostname: str | None = None      # the name before the program sets one (None: the host's)
    domainname: str | None = None
    allow_set: bool = True


HOST_UTS = UtsPolicy()


def uts_policy(section: Any) -> UtsPolicy:
    if section is None:
        return HOST_UTS
    if isinstance(section, str):
        return UtsPolicy(True, section)
    return UtsPolicy(True, section.get("name"), section.get("domain"),
                     section.get("set", "allow") == "allow")


class RebootAction(enum.Enum):
    DENY = "deny"          # EPERM, as for an unprivileged caller
    EXIT = "exit"          # the tree ends like a machine switched off
    RESTART = "restart"    # the tree ends and the program starts again, state kept


class RebootPolicy(NamedTuple):
    action: RebootAction = RebootAction.DENY
    max_restarts: int = 10


def reboot_policy(section: Any) -> RebootPolicy:
    if section is None:
        return RebootPolicy()
    if isinstance(section, str):
        return RebootPolicy(RebootAction(section))
    return RebootPolicy(RebootAction(section["action"]), section.get("max_restarts", 10))


class PowerEvent(enum.Enum):
    """What a virtualized reboot(2) did to the sandboxed machine."""

    POWER_OFF = "power-off"    # halt and power-off; restart too under `reboot: exit`
    RESTART = "restart"


class ModulesAction(enum.Enum):
    DENY = "deny"          # EPERM
    VIRTUAL = "virtual"    # loading succeeds and is remembered in the store


__all__ = ["HOSTNAME_SCHEMA", "HOST_NAME_MAX", "HOST_UTS", "MODULES_SCHEMA", "ModulesAction", "PowerEvent",
           "REBOOT_SCHEMA", "RebootAction", "RebootPolicy", "UtsPolicy", "reboot_policy",
           "uts_policy"]
