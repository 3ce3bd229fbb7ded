"""Fixtures: a real `kvproxy` in front of etcd 3.4.23, healthy (its upstream channel connected)."""

from __future__ import annotations

import pytest

from .harness import start_healthy_kvproxy


@pytest.fixture
def proxy1(procs, etcd1):
    """`kvproxy start` in front of the one-member etcd1."""
    return start_healthy_kvproxy(procs, etcd1)


@pytest.fixture
def proxy3(procs, etcd3):
    """`kvproxy start` in front of the three-member etcd3."""
    return start_healthy_kvproxy(procs, etcd3)
