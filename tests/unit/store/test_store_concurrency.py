"""Real processes on one store: concurrent writers, SIGKILL mid-transaction, bounded waits."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from appvirt.store import Store, StoreBusy, Value

ctx = multiprocessing.get_context("fork")
WRITERS = 8
KEYS_EACH = 1000


def integrity(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


def _writer(root: str, i: int, barrier: Any, errors: Any) -> None:
    try:
        store = Store.open(Path(root), busy_timeout_s=10.0)
        barrier.wait()
        rng = random.Random(i)
        for j in range(KEYS_EACH):
            key = f"conc/p{i}/k{j}"
            store.set(key, "v", Value.integer(i * 100_000 + j))
            got = store.get(key, "v")
            if got != Value.integer(i * 100_000 + j):
                errors.put(f"p{i}: read back {got} for {key}")
            # Read another writer's key: absent or exactly what that writer wrote.
            o, k = rng.randrange(WRITERS), rng.randrange(KEYS_EACH)
            other = store.lookup(f"conc/p{o}/k{k}", "v")
            if other is not None and other != Value.integer(o * 100_000 + k):
                errors.put(f"p{i}: saw {other} in conc/p{o}/k{k}")
        store.close()
    except BaseException as e:  # noqa: BLE001 - report to the parent, whatever it is
        errors.put(f"p{i}: {type(e).__name__}: {e}")


@pytest.mark.slow
def test_eight_writers_lose_nothing(tmp_path: Path) -> None:
    Store.open(tmp_path).close()
    barrier, errors = ctx.Barrier(WRITERS), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), i, barrier, errors))
             for i in range(WRITERS)]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=100)
    elapsed = time.monotonic() - t0
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert problems == []
    with Store.open(tmp_path) as store:
        view = store.view()
    expected = {(f"conc/p{i}/k{j}", "v"): Value.integer(i * 100_000 + j)
                for i in range(WRITERS) for j in range(KEYS_EACH)}
    assert dict(view.values) == expected
    assert integrity(tmp_path / "store.sqlite") == ["ok"]
    print(f"\n{WRITERS} writers x {KEYS_EACH} keys: {elapsed:.1f} s")


def _open_fresh_and_write(root: str, i: int, barrier: Any, errors: Any) -> None:
    try:
        barrier.wait()
        with Store.open(Path(root)) as store:      # all at once, on a file nobody created yet
            for j in range(50):
                store.set(f"fresh/p{i}", f"v{j}", Value.integer(j))
    except BaseException as e:  # noqa: BLE001
        errors.put(f"p{i}: {type(e).__name__}: {e}")


def test_processes_creating_the_store_at_once(tmp_path: Path) -> None:
    barrier, errors = ctx.Barrier(WRITERS), ctx.Queue()
    procs = [ctx.Process(target=_open_fresh_and_write, args=(str(tmp_path), i, barrier, errors))
             for i in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert problems == [] and all(p.exitcode == 0 for p in procs)
    with Store.open(tmp_path) as store:
        assert len(store.view().values) == WRITERS * 50
    assert integrity(tmp_path / "store.sqlite") == ["ok"]


def _stuck_in_transaction(root: str, ready: Any) -> None:
    store = Store.open(Path(root))
    store.set("kill/one", "n", Value.integer(1))                   # committed: the old value
    with store.batch():
        store.set("kill/one", "n", Value.integer(2))               # the new value, uncommitted
        for i in range(40):                                        # ~5 MB: spills to the WAL
            store.set("kill/bulk", f"b{i}", Value.binary(os.urandom(128 * 1024)))
        ready.set()
        time.sleep(60)


def test_sigkill_mid_transaction_leaves_old_value(tmp_path: Path) -> None:
    Store.open(tmp_path).close()
    ready = ctx.Event()
    p = ctx.Process(target=_stuck_in_transaction, args=(str(tmp_path), ready))
    p.start()
    assert ready.wait(30), "the writer never reached the middle of its transaction"
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    assert p.exitcode == -signal.SIGKILL
    db = tmp_path / "store.sqlite"
    # The uncommitted transaction did reach the disk: its pages were spilled to the WAL.
    assert Path(f"{db}-wal").stat().st_size > 1 << 20
    assert integrity(db) == ["ok"]
    with Store.open(tmp_path) as store:
        assert store.get("kill/one", "n") == Value.integer(1)
        assert not store.exists("kill/bulk")
        store.set("kill/one", "n", Value.integer(3))               # and the store is writable
        assert store.get("kill/one", "n") == Value.integer(3)


def _count_forever(root: str, wfd: int) -> None:
    store = Store.open(Path(root))
    i = store.get_int("kill/a", "n", 0) or 0
    rng = random.Random(os.getpid())
    while True:
        i += 1
        with store.batch():
            store.set("kill/a", "n", Value.integer(i))
            store.set("kill/blob", "data", Value.binary(os.urandom(rng.randrange(1, 300_000))))
            store.set("kill/b", "n", Value.integer(i))
        os.write(wfd, b"%d\n" % i)


@pytest.mark.slow
def test_sigkill_at_random_moments_keeps_old_or_new(tmp_path: Path) -> None:
    Store.open(tmp_path).close()
    rng = random.Random(1234)
    seen = 0
    for _ in range(8):
        rfd, wfd = os.pipe()
        p = ctx.Process(target=_count_forever, args=(str(tmp_path), wfd))
        p.start()
        os.close(wfd)
        time.sleep(rng.uniform(0.05, 0.4))
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
        reported = b""
        while chunk := os.read(rfd, 65536):
            reported += chunk
        os.close(rfd)
        last = int(reported.split()[-1]) if reported.split() else seen
        assert integrity(tmp_path / "store.sqlite") == ["ok"]
        with Store.open(tmp_path) as store:
            a, b = store.get_int("kill/a", "n", 0), store.get_int("kill/b", "n", 0)
        assert a == b, "a transaction was half applied"
        assert a in (last, last + 1), (a, last)   # committed-and-reported, or committed only
        assert a >= seen
        seen = a
    assert seen > 8  # the writers did make progress between kills


def test_busy_database_fails_clearly_within_the_bound(tmp_path: Path) -> None:
    store = Store.open(tmp_path, busy_timeout_s=0.2, busy_attempts=2)
    store.set("app", "x", Value.integer(1))
    holder = sqlite3.connect(tmp_path / "store.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")   # another writer holds the write lock
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreBusy, match="locked by another process"):
            store.set("app", "x", Value.integer(2))
        assert time.monotonic() - t0 < 3
        assert store.get("app", "x") == Value.integer(1)   # WAL: readers are not blocked
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    store.set("app", "x", Value.integer(2))                 # free again
    assert store.get("app", "x") == Value.integer(2)
    store.close()
