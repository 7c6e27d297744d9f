"""Fixtures of the configuration-store tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from store_helpers import BASE

from appvirt.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path)
    yield s
    s.close()


@pytest.fixture
def based(tmp_path: Path) -> Iterator[Store]:
    """A store with the BASE layer."""
    s = Store.open(tmp_path, base=BASE)
    yield s
    s.close()
