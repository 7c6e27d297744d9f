"""A damaged or foreign database is reported with a clear StoreError and never touched."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from appvirt.errors import AppvirtError, ExitStatus
from appvirt.store import Store, StoreCorrupt, StoreError, StoreVersionError, Value


def make_store(root: Path, n: int = 300) -> Path:
    with Store.open(root) as s:
        with s.batch():
            for i in range(n):
                s.set(f"app/k{i % 20}", f"v{i}", Value.string(f"value {i} " * 20))
    db = root / "store.sqlite"
    assert not Path(f"{db}-wal").exists()   # the last close checkpointed everything
    return db


def assert_refused_and_untouched(root: Path, exc: type[StoreError], match: str) -> None:
    db = root / "store.sqlite"
    before = db.read_bytes()
    with pytest.raises(exc, match=match) as info:
        Store.open(root)
    assert isinstance(info.value, AppvirtError)
    assert info.value.exit_status == ExitStatus.USAGE
    assert "\n" not in info.value.message
    assert db.read_bytes() == before


def test_not_a_sqlite_file(tmp_path: Path) -> None:
    (tmp_path / "store.sqlite").write_bytes(b"registry? no, a text file\n" * 100)
    assert_refused_and_untouched(tmp_path, StoreCorrupt, "not a SQLite database")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.sqlite"]


def test_sqlite_database_of_something_else(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "store.sqlite")
    conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO photos (name) VALUES ('cat.jpg')")
    conn.commit()
    conn.close()
    assert_refused_and_untouched(tmp_path, StoreCorrupt, "not an appvirt configuration store")


def test_newer_schema_version(tmp_path: Path) -> None:
    db = make_store(tmp_path, 5)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    assert_refused_and_untouched(tmp_path, StoreVersionError, "schema version 99")


def test_missing_table(tmp_path: Path) -> None:
    db = make_store(tmp_path, 5)
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE b_values")
    conn.close()
    assert_refused_and_untouched(tmp_path, StoreCorrupt, "unknown layout")


def _damage(db: Path) -> None:
    data = bytearray(db.read_bytes())
    page = 4096
    assert len(data) > 4 * page
    rng = __import__("random").Random(7)
    for off in range(page, len(data), 97):      # garble every page but the header page
        data[off:off + 13] = bytes(rng.randrange(256) for _ in range(13))
    db.write_bytes(bytes(data))


def test_damaged_pages_detected_at_open(tmp_path: Path) -> None:
    _damage(make_store(tmp_path))
    assert_refused_and_untouched(tmp_path, StoreCorrupt, "corrupt")


def test_damaged_pages_detected_mid_operation_without_verify(tmp_path: Path) -> None:
    db = make_store(tmp_path)
    _damage(db)
    before = db.read_bytes()
    store = Store.open(tmp_path, verify=False)
    try:
        with pytest.raises(StoreCorrupt, match="corrupt"):
            store.view()
        assert store.check() != []
    finally:
        store.close()
    assert db.read_bytes() == before


def test_truncated_file(tmp_path: Path) -> None:
    db = make_store(tmp_path)
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])
    assert_refused_and_untouched(tmp_path, StoreCorrupt, "corrupt")


def test_directory_in_place_of_the_file(tmp_path: Path) -> None:
    (tmp_path / "store.sqlite").mkdir()
    with pytest.raises(StoreCorrupt, match="is a directory"):
        Store.open(tmp_path)
    assert (tmp_path / "store.sqlite").is_dir()


def test_missing_app_directory(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="directory does not exist"):
        Store.open(tmp_path / "nope")
    assert not (tmp_path / "nope").exists()


def test_sound_store_passes_integrity_check(tmp_path: Path) -> None:
    make_store(tmp_path, 50)
    with Store.open(tmp_path) as s:
        assert s.check() == []
        assert s.get("app/k3", "v3") == Value.string("value 3 " * 20)


def test_empty_file_becomes_a_store(tmp_path: Path) -> None:
    # A zero-length file is what a crash between creat() and the first write leaves.
    (tmp_path / "store.sqlite").write_bytes(b"")
    with Store.open(tmp_path) as s:
        s.set("app", "x", Value.integer(1))
        assert s.get("app", "x") == Value.integer(1)
    assert os.path.getsize(tmp_path / "store.sqlite") > 0
