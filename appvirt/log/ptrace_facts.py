"""What the log takes from python-ptrace, remembered between runs.

Records name a call's arguments after python-ptrace's prototypes and show flags with its
formatters. Importing python-ptrace costs 20-30 ms, a third of a run's start-up, and a run
needs a few facts of it: the prototypes of the calls it logs and the texts of a few flag
values. Those facts are kept in `$APPVIRT_HOME/cache/python-ptrace.json`, stamped with the
files of the installed python-ptrace they came from, so the next run imports python-ptrace
only for a fact it has not seen. A cache that cannot be read, is damaged or is stamped for
other files is ignored and rebuilt; one that cannot be written costs the next run the import.
"""

from __future__ import annotations

import atexit
import functools
import importlib.machinery
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..state import appvirt_home, replace_quietly

# The files of python-ptrace the facts come from (the formatters' constants included).
_SOURCES = ("version.py", "tools.py", "syscall/prototypes.py", "syscall/posix_arg.py",
            "syscall/posix_constants.py")
TEXTS_MAX = 4096          # texts kept per formatter: a program sweeping flags can't bloat it

Prototype = list[tuple[str, str]]          # (C type, name) of each argument


class _Arg:
    """The one attribute python-ptrace's formatters read."""

    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        self.value = value


@functools.cache
def _python_ptrace() -> tuple[dict[str, Any], dict[str, Callable[[_Arg], str]]]:
    """python-ptrace's prototypes and the formatters the log uses, by name."""
    from ptrace.syscall import posix_arg
    from ptrace.syscall.prototypes import SYSCALL_PROTOTYPES
    return SYSCALL_PROTOTYPES, {name: getattr(posix_arg, name) for name in
                                ("formatOpenFlags", "formatAccessMode", "formatMmapProt")}


def _stamp() -> list[Any] | None:
    """Where python-ptrace is installed and the size and time of its files the facts come
    from: an upgrade changes it. None when it cannot be found (nothing is remembered)."""
    spec = importlib.machinery.PathFinder.find_spec("ptrace")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = list(spec.submodule_search_locations)[0]
    stamp: list[Any] = [root]
    for name in _SOURCES:
        try:
            st = os.stat(os.path.join(root, name))
        except OSError:
            return None
        stamp.append([name, st.st_size, st.st_mtime_ns])
    return stamp


def _valid(data: Any) -> bool:
    """The shape _Facts writes: prototypes name -> [[ctype, name], ...] or None; texts
    formatter -> {value in decimal: text}."""
    if not isinstance(data, dict):
        return False
    protos, texts = data.get("prototypes"), data.get("texts")
    return (isinstance(protos, dict) and isinstance(texts, dict)
            and all(v is None or (isinstance(v, list) and all(
                isinstance(a, list) and len(a) == 2 and all(isinstance(s, str) for s in a)
                for a in v)) for v in protos.values())
            and all(isinstance(t, dict) and all(
                isinstance(k, str) and k.lstrip("-").isdigit() and isinstance(s, str)
                for k, s in t.items()) for t in texts.values()))


class _Facts:
    """The remembered facts, and whether this run learned new ones (saved at exit)."""

    def __init__(self, path: str, stamp: list[Any] | None) -> None:
        self.path = path
        self.stamp = stamp
        self.prototypes: dict[str, Prototype | None] = {}
        self.texts: dict[str, dict[str, str]] = {}
        self.dirty = False
        if stamp is None:
            return
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read())
        except (OSError, ValueError):
            return
        if _valid(data) and data.get("stamp") == stamp:
            self.prototypes = {k: None if v is None else [tuple(a) for a in v]
                               for k, v in data["prototypes"].items()}
            self.texts = data["texts"]

    def learned(self) -> None:
        if not self.dirty and self.stamp is not None:
            self.dirty = True
            atexit.register(self.save)

    def save(self) -> None:
        """Write the facts atomically; failing (a read-only home, a full disk) is harmless."""
        if not self.dirty:
            return
        self.dirty = False
        replace_quietly(Path(self.path), json.dumps(
            {"stamp": self.stamp, "prototypes": self.prototypes, "texts": self.texts},
            sort_keys=True).encode())


@functools.cache
def _facts() -> _Facts:
    return _Facts(str(appvirt_home() / "cache" / "python-ptrace.json"), _stamp())


def prototype(syscall: str) -> Prototype | None:
    """python-ptrace's (C type, name) of each argument of a syscall; None if it has none."""
    facts = _facts()
    if syscall in facts.prototypes:
        return facts.prototypes[syscall]
    proto = _python_ptrace()[0].get(syscall)
    found = None if proto is None else [(str(t), str(n)) for t, n in proto[1]]
    facts.prototypes[syscall] = found
    facts.learned()
    return found


def text(formatter: str, value: int) -> str:
    """What python-ptrace's formatter (formatOpenFlags ...) shows for a value."""
    facts = _facts()
    known = facts.texts.setdefault(formatter, {})
    key = str(value)
    shown = known.get(key)
    if shown is None:
        shown = _python_ptrace()[1][formatter](_Arg(value))
        if len(known) < TEXTS_MAX:
            known[key] = shown
            facts.learned()
    return shown
