"""cluster.launch.ProcessGroup: every process it started is gone after close()."""

from __future__ import annotations

import sys

from cluster.launch import ProcessGroup


def test_close_kills_a_process_whose_name_was_reused(tmp_path):
    group = ProcessGroup(str(tmp_path / "logs"))
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    first = group.start("kv-m1", argv)  # e.g. the old cluster's m1 ...
    second = group.start("kv-m1", argv)  # ... and the restored cluster's m1
    group.close()
    assert first.poll() is not None and second.poll() is not None
