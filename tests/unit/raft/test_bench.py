"""The Raft benchmark runs (smoke, always) and meets its target (``pytest -m bench``)."""
from __future__ import annotations

import pytest

from bench.raft_bench import main, run


def test_benchmark_smoke(tmp_path, capsys) -> None:
    r = run("memory", proposals=2000, batch=500, size=256)
    assert r.proposals == 2000 and r.rate > 0
    w = run("wal", proposals=1000, batch=500, size=256, wal_root=str(tmp_path / "w"))
    assert w.fsyncs > 0
    main(["--proposals", "1000", "--wal-proposals", "400", "--batch", "200",
          "--dir", str(tmp_path)])
    assert "proposals/s" in capsys.readouterr().out


@pytest.mark.bench
def test_in_memory_cluster_commits_50k_proposals_per_cpu_second() -> None:
    r = run("memory", proposals=200_000, batch=1000, size=256)
    assert r.cpu_rate >= 50_000, r
