"""Store operations: types, keys, layers, markers, opacity, limits, times, atomicity."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from store_helpers import BASE

from appvirt.store import (BaseLayer, Change, InvalidBase, InvalidKey, InvalidValue, IsAKey,
                           KeyExists, KeyNotEmpty, KeyNotFound, LimitExceeded, LimitKind, Limits,
                           NodeKind, NotAKey, Store, Value, ValueNotFound, ValueType, WrongType)
from appvirt.store.values import INT64_MAX, INT64_MIN


def names(listing) -> tuple[list[str], list[str]]:  # type: ignore[no-untyped-def]
    return [k.name for k in listing.subkeys], [v.name for v in listing.values]


# -- values and keys -------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    Value.string(""), Value.string("héllo\nworld \U0001f600"), Value.integer(0),
    Value.integer(INT64_MIN), Value.integer(INT64_MAX), Value.binary(b""),
    Value.binary(bytes(range(256))), Value.multi([]), Value.multi([""]),
    Value.multi(["a", "b,c", '"q"', "\\"]),
])
def test_every_type_round_trips(store: Store, value: Value) -> None:
    store.set("app/t", "v", value)
    got = store.get("app/t", "v")
    assert got == value and got.type is value.type


@pytest.mark.parametrize("make,data", [
    (Value.string, "a\0b"), (Value.integer, INT64_MAX + 1), (Value.integer, INT64_MIN - 1),
    (Value.integer, True), (Value.integer, "3"), (Value.binary, "text"),
    (Value.multi, ["a\nb"]), (Value.multi, ["a\0"]), (Value.multi, "ab"),
    (Value.string, "\ud800"),
])
def test_invalid_value_data(make, data) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidValue):
        make(data)


@pytest.mark.parametrize("key", ["/a", "a/", "a//b", "a/./b", "a/../b", "a/\x01", "a/\x85b"])
def test_invalid_keys(store: Store, key: str) -> None:
    with pytest.raises(InvalidKey):
        store.set(key, "v", Value.integer(1))


def test_root_holds_only_keys(store: Store) -> None:
    with pytest.raises(InvalidKey, match="root"):
        store.set("", "v", Value.integer(1))
    with pytest.raises(InvalidKey):
        store.delete_key("")


def test_set_creates_ancestors_and_lists_sorted(store: Store) -> None:
    store.set("app/b/deep", "z", Value.integer(1))
    store.set("app/a", "y", Value.integer(2))
    store.set("app", "x", Value.string("top"))
    assert names(store.list("")) == (["app"], [])
    assert names(store.list("app")) == (["a", "b"], ["x"])
    assert names(store.list("app/b")) == (["deep"], [])
    assert store.exists("app/b") and not store.exists("app/c")
    assert store.node("app/x").kind is NodeKind.VALUE
    assert store.node("app/b").kind is NodeKind.KEY


def test_missing_things(store: Store) -> None:
    store.set("app", "x", Value.integer(1))
    with pytest.raises(KeyNotFound):
        store.get("nope", "x")
    with pytest.raises(ValueNotFound):
        store.get("app", "y")
    with pytest.raises(NotAKey):
        store.list("app/x")
    with pytest.raises(NotAKey):
        store.set("app/x/sub", "v", Value.integer(1))
    assert store.lookup("nope", "x") is None
    assert store.lookup("app/x/sub", "v") is None


def test_name_shared_by_key_and_value_is_refused(store: Store) -> None:
    store.set("app/sub", "v", Value.integer(1))
    with pytest.raises(IsAKey):
        store.set("app", "sub", Value.integer(2))
    store.set("app", "val", Value.integer(3))
    with pytest.raises(NotAKey):
        store.create_key("app/val")


def test_delete_key_needs_recursive_when_not_empty(store: Store) -> None:
    store.set("app/a", "v", Value.integer(1))
    with pytest.raises(KeyNotEmpty):
        store.delete_key("app")
    with pytest.raises(KeyNotEmpty):
        store.delete_key("app/a")
    store.delete_value("app/a", "v")
    store.delete_key("app/a")
    store.delete_key("app")
    assert names(store.list("")) == ([], [])


def test_create_key(store: Store) -> None:
    assert store.create_key("app/empty") is True
    assert store.create_key("app/empty") is False
    with pytest.raises(KeyExists):
        store.create_key("app/empty", exist_ok=False)
    assert names(store.list("app/empty")) == ([], [])


def test_typed_getters(store: Store) -> None:
    store.set("machine/clock", "offset_ns", Value.integer(-5))
    store.set("app", "s", Value.string("x"))
    assert store.get_int("machine/clock", "offset_ns") == -5
    assert store.get_int("machine/clock", "rate_ppm", 1_000_000) == 1_000_000
    assert store.get_str("app", "s") == "x"
    with pytest.raises(WrongType):
        store.get_int("app", "s")


def test_well_known_values_keep_their_type(store: Store) -> None:
    with pytest.raises(WrongType, match="machine/clock/offset_ns holds integer"):
        store.set("machine/clock", "offset_ns", Value.string("5"))
    with pytest.raises(WrongType):
        store.set("machine/modules/loop", "params", Value.string("max_loop=8"))
    store.set("machine/modules/loop", "params", Value.multi(["max_loop=8"]))
    store.set("machine/modules/loop", "other", Value.string("free-form"))


def test_move_value(store: Store) -> None:
    store.set("app", "tmp", Value.string("new"))
    store.set("app", "name", Value.string("old"))
    store.move_value("app", "tmp", "app", "name")
    assert store.get("app", "name") == Value.string("new")
    assert store.lookup("app", "tmp") is None
    with pytest.raises(ValueNotFound):
        store.move_value("app", "tmp", "app", "x")


def test_batch_is_atomic(store: Store) -> None:
    store.set("app", "a", Value.integer(1))
    with pytest.raises(RuntimeError):
        with store.batch():
            store.set("app", "a", Value.integer(2))
            store.set("app", "b", Value.integer(2))
            raise RuntimeError("boom")
    assert store.get("app", "a") == Value.integer(1)
    assert store.lookup("app", "b") is None
    with store.batch():
        store.set("app", "a", Value.integer(3))
        store.set("app", "b", Value.integer(3))
    assert (store.get("app", "a"), store.get("app", "b")) == (Value.integer(3),) * 2


# -- limits --------------------------------------------------------------------------------------

def test_limits(tmp_path: Path) -> None:
    limits = Limits(max_path_bytes=20, max_depth=3, max_name_bytes=8, max_value_bytes=10,
                    max_values_per_key=2)
    s = Store.open(tmp_path, limits=limits)
    cases = [
        (lambda: s.set("a/b/c/d", "v", Value.integer(1)), LimitKind.DEPTH),
        (lambda: s.set("aaaaaaa/bbbbbbb/ccccccc", "v", Value.integer(1)), LimitKind.PATH_LENGTH),
        (lambda: s.set("a", "nine-byte", Value.integer(1)), LimitKind.NAME_LENGTH),
        (lambda: s.set("a", "v", Value.string("x" * 11)), LimitKind.VALUE_SIZE),
        (lambda: s.set("a", "v", Value.multi(["12345", "1234"])), LimitKind.VALUE_SIZE),
    ]
    for fn, kind in cases:
        with pytest.raises(LimitExceeded) as info:
            fn()
        assert info.value.kind is kind, info.value.message
        assert "limit" in info.value.message
    s.set("a", "v1", Value.string("x" * 10))
    s.set("a", "v2", Value.integer(2))
    s.set("a", "v2", Value.integer(3))            # replacing does not count
    with pytest.raises(LimitExceeded) as info:
        s.set("a", "v3", Value.integer(3))
    assert info.value.kind is LimitKind.VALUE_COUNT
    s.close()


# -- layers ----------------------------------------------------------------------------------

def test_reads_see_the_base(based: Store) -> None:
    assert based.get("app/settings", "theme") == Value.string("dark")
    assert names(based.list("app/settings")) == (["plugins"], ["retries", "theme"])
    assert names(based.list("app/settings/plugins")) == (["grammar", "spell"], [])
    assert based.diff() == []
    assert based.export_text().splitlines()[2:] == []   # nothing in the writable layer


def test_writes_shadow_the_base_which_stays_intact(based: Store) -> None:
    based.set("app/settings", "theme", Value.string("light"))
    based.delete_value("app/settings", "retries")
    based.delete_key("app/settings/plugins/spell", recursive=True)
    assert based.get("app/settings", "theme") == Value.string("light")
    assert based.lookup("app/settings", "retries") is None
    assert names(based.list("app/settings/plugins")) == (["grammar"], [])
    assert based.base() == BASE
    assert based.export_text().splitlines()[2:] == [
        "[app]", "[app/settings]", '"retries"=-', '"theme"="light"',
        "[app/settings/plugins]", "[-app/settings/plugins/spell]"]
    assert [(d.change, d.key, d.name) for d in based.diff()] == [
        (Change.VALUE_REMOVED, "app/settings", "retries"),
        (Change.VALUE_CHANGED, "app/settings", "theme"),
        (Change.KEY_REMOVED, "app/settings/plugins/spell", None),
        (Change.VALUE_REMOVED, "app/settings/plugins/spell", "enabled")]


def test_deleted_then_recreated_base_key_starts_empty_and_opaque(based: Store) -> None:
    based.delete_key("app/settings", recursive=True)
    assert not based.exists("app/settings")
    based.set("app/settings", "theme", Value.string("mine"))
    listing = based.list("app/settings")
    assert listing.key.opaque
    assert names(listing) == ([], ["theme"])


def test_opaque_hides_base_content_and_merged_brings_it_back(based: Store) -> None:
    based.set("app/settings/plugins/mine", "enabled", Value.integer(1))
    based.delete_value("app/settings", "retries")
    assert based.mark_opaque("app/settings") is True
    assert based.mark_opaque("app/settings") is False
    assert names(based.list("app/settings")) == (["plugins"], [])
    assert names(based.list("app/settings/plugins")) == (["mine"], [])
    assert based.lookup("app/settings", "theme") is None
    assert based.mark_opaque("app/settings", False) is True
    assert names(based.list("app/settings")) == (["plugins"], ["theme"])   # retries stays deleted
    assert names(based.list("app/settings/plugins")) == (["grammar", "mine", "spell"], [])


def test_base_is_remembered_replaced_and_not_rewritten_when_unchanged(tmp_path: Path) -> None:
    with Store.open(tmp_path, base=BASE) as s:
        t0 = s.key_info("app/settings").mtime_ns
    with Store.open(tmp_path) as s:                      # no policy at hand: base remembered
        assert s.get("machine/uts", "hostname") == Value.string("base-host")
    time.sleep(0.01)
    with Store.open(tmp_path, base=BASE) as s:           # same policy: untouched
        assert s.key_info("app/settings").mtime_ns == t0
    new = BaseLayer.build({"machine/uts": {"hostname": Value.string("new-host")}})
    with Store.open(tmp_path, base=new) as s:
        assert s.get("machine/uts", "hostname") == Value.string("new-host")
        assert not s.exists("app/settings")
        assert s.base() == new


def test_reopening_with_the_same_base_starts_no_write_transaction(tmp_path: Path,
                                                                   monkeypatch) -> None:
    """Every run opens its app's store with its policy's base: when both are as they were,
    the open only reads (a write transaction takes the write lock, another run's too)."""
    from appvirt.store import db
    Store.open(tmp_path, base=BASE).close()
    writes: list[bool] = []
    real_run = db.Database.run
    monkeypatch.setattr(db.Database, "run",
                        lambda self, fn, *, write: writes.append(write) or real_run(
                            self, fn, write=write))
    with Store.open(tmp_path, base=BASE) as s:
        assert s.base() == BASE
    assert writes and not any(writes)
    new = BaseLayer.build({"machine/uts": {"hostname": Value.string("new-host")}})
    Store.open(tmp_path, base=new).close()
    assert any(writes)


def test_writable_entries_win_over_a_new_base_entry_of_the_other_kind(tmp_path: Path) -> None:
    with Store.open(tmp_path) as s:
        s.set("app", "cfg", Value.string("a value"))
        s.set("app/dir", "v", Value.integer(1))
    new = BaseLayer.build({"app/cfg": {"k": Value.integer(1)}, "app": {"dir": Value.integer(9)}})
    with Store.open(tmp_path, base=new) as s:
        assert names(s.list("app")) == (["dir"], ["cfg"])
        assert s.get("app", "cfg") == Value.string("a value")
        assert s.node("app/dir").kind is NodeKind.KEY


def test_inconsistent_base_is_refused() -> None:
    with pytest.raises(InvalidBase, match="both a value and a subkey"):
        BaseLayer.build({"app": {"x": Value.integer(1)}, "app/x": {}})
    with pytest.raises(InvalidBase, match="holds integer"):
        BaseLayer.build({"machine/clock": {"offset_ns": Value.string("1")}})
    with pytest.raises(InvalidBase):
        BaseLayer.build({"a//b": {}})


# -- last-write times ----------------------------------------------------------------------------

def test_last_write_times(based: Store) -> None:
    base_time = based.key_info("app/settings").mtime_ns
    assert based.key_info("app/settings/plugins").mtime_ns == base_time
    time.sleep(0.002)
    before = time.time_ns()
    based.set("app/settings", "theme", Value.string("x"))
    after = time.time_ns()
    info = based.key_info("app/settings")
    assert before <= info.mtime_ns <= after
    assert based.get_entry("app/settings", "theme").mtime_ns == info.mtime_ns
    assert based.get_entry("app/settings", "retries").mtime_ns == base_time
    assert based.key_info("app").mtime_ns == base_time        # copied up, not modified
    based.create_key("app/settings/new")                       # a new subkey touches its parent
    assert based.key_info("app/settings").mtime_ns >= after
    root_before = based.list("").key.mtime_ns
    based.create_key("top")
    assert based.list("").key.mtime_ns > root_before


def test_store_values_survive_reopen(tmp_path: Path) -> None:
    with Store.open(tmp_path) as s:
        s.set("app", "b", Value.binary(b"\0\1"))
        s.set("app", "m", Value.multi(["x", ""]))
    with Store.open(tmp_path) as s:
        assert s.get("app", "b") == Value.binary(b"\0\1")
        assert s.get("app", "m").type is ValueType.MULTI
        assert s.get("app", "m").data == ("x", "")


def test_value_count_limit_counts_the_merged_view(tmp_path: Path) -> None:
    base = BaseLayer.build({"app": {"x": Value.integer(1), "y": Value.integer(2)}})
    s = Store.open(tmp_path, base=base, limits=Limits(max_values_per_key=2))
    with pytest.raises(LimitExceeded):
        s.set("app", "z", Value.integer(3))            # base values count
    s.set("app", "x", Value.integer(10))               # replacing a base value does not
    s.delete_value("app", "y")                         # a tombstone frees a slot
    s.set("app", "z", Value.integer(3))
    assert sorted(v.name for v in s.list("app").values) == ["x", "z"]
    s.close()
