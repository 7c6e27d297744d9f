"""The policy's `processes:` section: which programs may run, how many processes may live,
and which processes /proc shows.

    processes:
      exec:                                  # later rules win; no rule matches: allowed
        - {path: /usr/bin/**, action: allow}
        - {path: /usr/bin/curl, action: deny}
      max: 64                                # live processes of the tree (EAGAIN beyond)
      proc: own                              # /proc lists the sandbox's processes only
"""

import enum
from typing import Any, NamedTuple

from ..globs import Glob

PROCESSES_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "default": {},
    "properties": {
        "exec": {
            "type": "array", "default": [],
            "items": {"type": "object", "additionalProperties": False,
                      "required": ["path", "action"],
                      "properties": {"path": {"type": "string", "minLength": 1},
                                     "action": {"enum": ["allow", "deny"]}}},
        },
        "max": {"type": ["integer", "null"], "minimum": 1, "maximum": 1000000,
                "default": None},
        "proc": {"enum": ["all", "own"], "default": "all"},
    },
}


class ProcView(enum.Enum):
    ALL = "all"        # /proc lists every process (outsiders' private entries still refused)
    OWN = "own"        # outside processes do not exist in /proc (ENOENT)


class ExecRule(NamedTuple):
    glob: Glob
    allow: bool
    rule_id: str       # "processes.exec[2]"


class ProcessPolicy(NamedTuple):
    exec_rules: tuple[ExecRule, ...] = ()
    max_processes: int | None = None
    proc: ProcView = ProcView.ALL

    def exec_decision(self, path: bytes) -> tuple[bool, str]:
        """(allowed, deciding rule id) for running the program at an absolute path."""
        for rule in reversed(self.exec_rules):
            if rule.glob.matches(path):
                return rule.allow, rule.rule_id
        return True, "processes.exec (no rule)"


def process_policy(section: dict[str, Any], compile_glob) -> ProcessPolicy:
    """Build from the validated section; compile_glob(index, text) -> Glob reports errors."""
    rules = tuple(ExecRule(compile_glob(i, r["path"]), r["action"] == "allow",
                           f"processes.exec[{i}]")
                  for i, r in enumerate(section["exec"]))
    return ProcessPolicy(rules, section["max"], ProcView(section["proc"]))
