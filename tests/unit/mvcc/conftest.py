"""Fixtures for the MVCC store tests: a fresh store in tmp_path, and a writer that applies one
request per batch with increasing applied indexes (as the member's apply loop would)."""

from __future__ import annotations

import pytest

from cluster.mvcc import MVCCStore
from tests.unit.mvcc.ops import Writer

SMALL_MAP = 256 << 20


@pytest.fixture
def store(tmp_path):
    s = MVCCStore(str(tmp_path / "db"), map_size=SMALL_MAP)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def writer(store) -> Writer:
    return Writer(store)
