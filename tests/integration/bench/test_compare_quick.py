"""`kvbench compare --quick` runs end to end and writes a well-formed table between its markers.

Figures are not asserted: this only checks that the run completes on this machine, fills a
row per suite for etcd 3.4.23, and gives our stack either figures or a reason.
"""

import re
import subprocess
import sys
import time

from bench.compare import build_suites
from bench.report import BEGIN, END


def test_compare_quick_end_to_end(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\nmethod, kept\n\n{BEGIN}\nstale\n{END}\n\n## Raft core\nkept too\n")
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "bench.cli", "compare", "--quick", "--doc", str(doc),
                          "--img-dir", str(tmp_path / "img")], capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - started
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nmethod, kept\n\n") and text.endswith("## Raft core\nkept too\n")
    section = text[text.index(BEGIN):text.index(END)]
    assert "stale" not in section
    lines = [line for line in section.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])] for line in lines]
    header, rows = cells[0], cells[2:]
    assert all(len(r) == len(header) for r in cells), section
    assert len(rows) == len(build_suites(quick=True))
    col = {name: i for i, name in enumerate(header)}
    for r in rows:
        assert re.match(r"[\d,]+ \S+/s", r[col["etcd 3.4.23"]]), r
        ours = r[col["kvstack"]]
        assert re.match(r"[\d,]+ \S+/s", ours) or ours.startswith("not available ("), r
    print(f"compare --quick took {elapsed:.0f} s")
