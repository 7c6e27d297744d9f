"""Frozen policy records (named tuples: a run makes every class at start-up, and a named tuple
costs a fraction of a dataclass; FilesPolicy keeps a cache, so it is a small class of its own).
Built only by the loader, after validation."""

import enum
import os
import re
from typing import NamedTuple

from ..net.rules import NetworkPolicy
from ..store.config import RegistryConfig
from ..virt.machinepolicy import ModulesAction, RebootPolicy, UtsPolicy
from ..virt.identity import IdentityPolicy
from ..virt.procpolicy import ProcessPolicy
from ..virt.timepolicy import TimePolicy
from ..globs import Glob


class FileMode(enum.Enum):
    """What the program may do with a path (see the README's policy reference)."""

    OVERLAY = "overlay"           # copy-on-write: reads fall through, writes land in the upper layer
    PRIVATE = "private"           # like overlay, but the host's content is invisible (starts empty)
    PASSTHROUGH = "passthrough"   # reads and writes reach the host: an explicit hole
    READONLY = "readonly"         # reads see the host (and earlier changes), writes fail with EROFS
    HIDDEN = "hidden"             # the path does not exist for the program (ENOENT)


class LogLevel(enum.Enum):
    ALL = "all"            # every intercepted call
    CHANGES = "changes"    # calls whose behaviour appvirt changed, plus process events
    DENIALS = "denials"    # denials (and kills) only


class PathRule(NamedTuple):
    glob: Glob
    mode: FileMode
    rule_id: str           # e.g. "files.rules[2]", named in log records


def _base(specs: tuple[tuple[str, FileMode], ...]) -> tuple[PathRule, ...]:
    return tuple(PathRule(Glob.of(p), m, f"files.base[{i}]") for i, (p, m) in enumerate(specs))


_P, _R = FileMode.PASSTHROUGH, FileMode.READONLY
# Rules every policy starts with (unless `files.base_rules: false`); its own rules come later
# and win. Devices: a curated set works as on the host, the rest (disks, consoles) is
# read-only. Kernel interfaces: /proc readable, /proc/sys, sysrq and /sys never writable.
BASE_RULES: tuple[PathRule, ...] = _base((
    ("/dev", _R), ("/dev/null", _P), ("/dev/zero", _P), ("/dev/full", _P),
    ("/dev/random", _P), ("/dev/urandom", _P), ("/dev/tty", _P), ("/dev/ptmx", _P),
    ("/dev/pts", _P), ("/proc", _P), ("/proc/sys", _R), ("/proc/sysrq-trigger", _R),
    ("/sys", _R),
))


def registry_rule(mount: str) -> PathRule:
    """The rule every policy has after the base rules: the registry tree at `mount` is the
    app's own store, writable whatever `files.default` says (a later rule of the policy can
    still make it readonly or hidden). Its changes go straight to the store, never to the
    overlay or the host (tracer/storefiles.py), hence "passthrough": it asks the overlay for
    nothing (no lock, no merged listings). The mount is a literal path, not a glob."""
    literal = re.escape(os.fsencode(mount))
    return PathRule(Glob(mount, re.compile(b"^" + literal + b"(?:/.*)?$", re.DOTALL)),
                    FileMode.PASSTHROUGH, "builtin:registry")


class FilesPolicy:
    """The files section: a default mode and rules, later rules winning."""

    __slots__ = ("default", "rules", "_cache")

    def __init__(self, default: FileMode, rules: tuple[PathRule, ...]) -> None:
        self.default = default
        self.rules = rules
        # path -> (mode, rule id): asked on every path call, so remembered (bounded).
        self._cache: dict[bytes, tuple[FileMode, str]] = {}

    def __eq__(self, other: object) -> bool:
        return (type(other) is FilesPolicy and self.default is other.default
                and self.rules == other.rules)

    def __hash__(self) -> int:
        return hash((self.default, self.rules))

    def __repr__(self) -> str:
        return f"FilesPolicy(default={self.default!r}, rules={self.rules!r})"

    def mode_for(self, path: bytes) -> tuple[FileMode, str]:
        """The mode of an absolute path and the rule that decided it (later rules win)."""
        hit = self._cache.get(path)
        if hit is None:
            hit = self._decide(path)
            if len(self._cache) >= 16384:
                self._cache.clear()
            self._cache[path] = hit
        return hit

    def _decide(self, path: bytes) -> tuple[FileMode, str]:
        for rule in reversed(self.rules):
            if rule.glob.matches(path):
                return rule.mode, rule.rule_id
        return self.default, "files.default"


class LogPolicy(NamedTuple):
    level: LogLevel
    file: str | None


class Policy(NamedTuple):
    """The effective policy of one run."""

    version: int
    app: str
    files: FilesPolicy
    log: LogPolicy
    registry: RegistryConfig       # the configuration store's mount and base layer
    network: NetworkPolicy
    time: TimePolicy
    uts: UtsPolicy                 # `hostname:`
    reboot: RebootPolicy
    modules: ModulesAction
    processes: ProcessPolicy
    identity: IdentityPolicy | None   # None: the real ids, unchanged
    source: str                    # the file it came from (for messages)
    raw: dict                      # the validated document with defaults filled in
