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


def test_processes_keep_their_temporary_files_under_the_log_dir(tmp_path):
    group = ProcessGroup(str(tmp_path / "logs"))
    proc = group.start("tmp", [sys.executable, "-c", "import tempfile; print(tempfile.mkdtemp(prefix='left-'))"])
    assert proc.wait(timeout=30) == 0
    group.close()
    made = (tmp_path / "logs" / "tmp.log").read_text().strip()
    assert made.startswith(str(tmp_path / "logs" / "tmp") + "/left-")
