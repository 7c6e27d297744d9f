"""The store against a plain in-memory model of the merged view, at every step.

The model knows nothing of layers, rows or markers: it is the view (keys with an opaque
flag, values) plus, per key, whether the app has written at or below it and whether the
base still reaches it, and the set of deleted base keys (recreating one gives an opaque key).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from store_helpers import bases, keys, names, values

from appvirt.store import (BaseLayer, IsAKey, KeyNotEmpty, KeyNotFound, NotAKey, Store, Value,
                           ValueNotFound)
from appvirt.store.keys import basename, join, parent, prefixes


@dataclass
class MKey:
    written: bool      # the app wrote at or below it: it survives an ancestor turning opaque
    opaque: bool
    from_base: bool    # the base reaches it: deleting it leaves a marker


def below(path: str, key: str) -> bool:
    return path.startswith(key + "/")


class Model:
    def __init__(self, base: BaseLayer) -> None:
        self.keys = {p: MKey(False, False, True) for p in base.keys}
        self.values: dict[tuple[str, str], tuple[Value, bool]] = {
            (k, n): (v, True) for k, vals in base.keys.items() for n, v in vals.items()}
        self.whiteouts: set[str] = set()

    def view(self) -> tuple[dict[str, bool], dict[tuple[str, str], Value]]:
        return ({p: k.opaque for p, k in self.keys.items()},
                {kn: v for kn, (v, _) in self.values.items()})

    def missing_key_error(self, key: str) -> type[Exception]:
        for p in prefixes(key):
            if p not in self.keys:
                return NotAKey if (parent(p), basename(p)) in self.values else KeyNotFound
        raise AssertionError("key exists")

    def materialize(self, key: str) -> type[Exception] | None:
        ps = prefixes(key)
        for p in ps:
            if p not in self.keys:
                if (parent(p), basename(p)) in self.values:
                    return NotAKey
                break
        for p in ps:
            if p in self.keys:
                self.keys[p].written = True
            else:
                # Recreated over a deletion marker: opaque, and still reached by the base
                # (deleting it again must hide the base key again) unless the parent hides it.
                deleted = p in self.whiteouts
                self.keys[p] = MKey(True, deleted, deleted and self.base_shows(parent(p)))
                self.whiteouts.discard(p)
        return None

    def base_shows(self, key: str) -> bool:
        """Does the base's content below `key` show through?"""
        return key == "" or (self.keys[key].from_base and not self.keys[key].opaque)

    def set(self, key: str, name: str, value: Value) -> type[Exception] | None:
        for p in prefixes(key):
            if p not in self.keys:
                if (parent(p), basename(p)) in self.values:
                    return NotAKey
                break
        if join(key, name) in self.keys:
            return IsAKey
        self.materialize(key)
        self.values[(key, name)] = (value, False)
        return None

    def create_key(self, key: str) -> type[Exception] | None:
        return None if key in self.keys else self.materialize(key)

    def delete_value(self, key: str, name: str) -> type[Exception] | None:
        if key not in self.keys:
            return self.missing_key_error(key)
        if (key, name) not in self.values:
            return IsAKey if join(key, name) in self.keys else ValueNotFound
        del self.values[(key, name)]
        self.materialize(key)
        return None

    def delete_key(self, key: str, recursive: bool) -> type[Exception] | None:
        if key not in self.keys:
            return self.missing_key_error(key)
        if not recursive and (any(parent(p) == key for p in self.keys)
                              or any(k == key for k, _ in self.values)):
            return KeyNotEmpty
        from_base = self.keys[key].from_base
        self.keys = {p: m for p, m in self.keys.items() if p != key and not below(p, key)}
        self.values = {kn: v for kn, v in self.values.items()
                       if kn[0] != key and not below(kn[0], key)}
        self.whiteouts = {w for w in self.whiteouts if w != key and not below(w, key)}
        if from_base:
            self.whiteouts.add(key)
        self.materialize(parent(key))
        return None

    def mark_opaque(self, key: str) -> type[Exception] | None:
        if key not in self.keys:
            return self.missing_key_error(key)
        if self.keys[key].opaque:
            return None
        self.materialize(key)
        self.keys[key].opaque = True
        self.values = {kn: (v, b) for kn, (v, b) in self.values.items()
                       if not (b and (kn[0] == key or below(kn[0], key)))}
        for p in list(self.keys):
            if below(p, key):
                if self.keys[p].written:
                    self.keys[p].from_base = False
                else:
                    del self.keys[p]
        return None


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="appvirt-store-sm-"))
        self.n = 0
        self.store: Store | None = None

    def fresh_store(self, base: BaseLayer | None) -> Store:
        self.n += 1
        d = self.tmp / f"s{self.n}"
        d.mkdir()
        return Store.open(d, base=base)

    @initialize(base=bases())
    def start(self, base: BaseLayer) -> None:
        self.base = base
        self.model = Model(base)
        self.store = self.fresh_store(base)

    def teardown(self) -> None:
        if self.store is not None:
            self.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def apply(self, expected: type[Exception] | None, fn: Callable[..., object], *args: object,
              **kwargs: object) -> None:
        if expected is None:
            fn(*args, **kwargs)
        else:
            with pytest.raises(expected):
                fn(*args, **kwargs)

    @rule(key=keys, name=names, value=values)
    def set_value(self, key: str, name: str, value: Value) -> None:
        self.apply(self.model.set(key, name, value), self.store.set, key, name, value)

    @rule(key=keys)
    def create_key(self, key: str) -> None:
        self.apply(self.model.create_key(key), self.store.create_key, key)

    @rule(key=keys, name=names)
    def delete_value(self, key: str, name: str) -> None:
        self.apply(self.model.delete_value(key, name), self.store.delete_value, key, name)

    @rule(key=keys, recursive=st.booleans())
    def delete_key(self, key: str, recursive: bool) -> None:
        self.apply(self.model.delete_key(key, recursive), self.store.delete_key, key,
                   recursive=recursive)

    @rule(key=keys)
    def mark_opaque(self, key: str) -> None:
        self.apply(self.model.mark_opaque(key), self.store.mark_opaque, key)

    @rule()
    def export_import_roundtrip(self) -> None:
        """Export, import into a fresh app with the same base, and carry on with that one."""
        text = self.store.export_text()
        fresh = self.fresh_store(self.base)
        fresh.import_text(text)
        assert fresh.export_text() == text
        self.store.close()
        self.store = fresh

    @rule()
    def merged_export_into_app_without_base(self) -> None:
        other = self.fresh_store(None)
        try:
            other.import_text(self.store.export_text(merged=True))
            v = other.view()
            assert (dict(v.keys), dict(v.values)) == self.model.view()
        finally:
            other.close()

    @invariant()
    def agrees_with_model(self) -> None:
        if self.store is None:
            return
        v = self.store.view()
        mkeys, mvalues = self.model.view()
        assert dict(v.keys) == mkeys
        assert dict(v.values) == mvalues
        # The per-key SQL path (list) agrees with the whole-store walk (view).
        for key in ["", *mkeys]:
            listing = self.store.list(key)
            assert {k.path for k in listing.subkeys} == {p for p in mkeys if parent(p) == key}
            assert {e.name: e.value for e in listing.values} == \
                {n: val for (k, n), val in mvalues.items() if k == key}


StoreMachine.TestCase.settings = settings(
    max_examples=75, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestStoreMachine = pytest.mark.slow(StoreMachine.TestCase)
