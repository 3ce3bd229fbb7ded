"""The report writer: the comparison table, its section markers, and the text/JSON result."""

import json
import re

import pytest

from bench.histogram import LatencyHistogram
from bench.report import BEGIN, END, Cell, ComparisonRow, ratio, render_section, render_table, replace_section, \
    write_section
from bench.result import BenchResult, format_text


def result(ok=1000, duration=2.0, lat=(1000, 2000, 3000), **kw):
    h = LatencyHistogram()
    for v in lat:
        h.record(v)
    return BenchResult("put", "127.0.0.1:1", ok, 0, duration, h, **kw)


def row(**kw):
    base = dict(suite="put", tier="cluster", load="100 conns", etcd=Cell(result(2000)), ours=Cell(result(500)))
    return ComparisonRow(**{**base, **kw})


def table_rows(md):
    """Cells of each line, split on unescaped pipes."""
    lines = md.strip().splitlines()
    assert all(line.startswith("| ") and line.endswith(" |") or line.startswith("|---") for line in lines), md
    return [[c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])] for line in lines]


def test_table_is_well_formed_markdown():
    md = render_table([row(), row(suite="range", ceiling=Cell(result(3000)))])
    rows = table_rows(md)
    assert len(rows) == 4
    assert all(len(r) == len(rows[0]) for r in rows), md
    assert set(md.splitlines()[1].replace("|", "")) == {"-"}


def test_table_figures_and_ratio():
    rows = table_rows(render_table([row()]))
    header, data = rows[0], rows[2]
    cell = dict(zip(header, data))
    assert cell["etcd 3.4.23"] == "1,000 req/s"   # 2000 ok in 2 s
    assert cell["kvstack"] == "250 req/s"
    assert cell["kvstack/etcd"] == "0.25×"
    assert cell["p50 / p99 ms, etcd"] == "2.00 / 3.00"
    assert cell["Python ceiling"] == "—"


def test_missing_stack_says_why_and_has_no_ratio():
    r = row(ours=Cell(missing="`cluster.cli --help` exited with 1: No module named cluster"))
    cell = dict(zip(*[table_rows(render_table([r]))[i] for i in (0, 2)]))
    assert cell["kvstack"].startswith("not available (`cluster.cli --help` exited with 1")
    assert cell["kvstack/etcd"] == "—"
    assert cell["p50 / p99 ms, kvstack"] == "—"


def test_pipes_in_reasons_do_not_break_the_table():
    r = row(ours=Cell(missing="a | b\nc"))
    rows = table_rows(render_table([r]))
    assert len(rows[2]) == len(rows[0])


def test_errors_and_extras_are_shown():
    etcd = result(extra={"upstream_fraction": 0.012})
    etcd.errors = 3
    r = row(etcd=Cell(etcd), ours=Cell(result(extra={"upstream_fraction": 0.0001})), extras=["upstream_fraction"])
    md = render_table([r])
    assert "(3 errors)" in md
    assert "upstream_fraction: etcd 0.012, ours 0.0001" in md


def test_ratio_without_etcd_figure():
    assert ratio(Cell(result()), Cell(missing="x")) == "—"
    assert ratio(Cell(result()), Cell(result(ok=0))) == "—"


def test_cell_needs_exactly_one_of_result_and_reason():
    with pytest.raises(ValueError):
        Cell()
    with pytest.raises(ValueError):
        Cell(result=result(), missing="x")


def test_replace_section_keeps_the_rest_of_the_document():
    doc = f"# Benchmarks\n\nintro\n\n{BEGIN}\nold table\n{END}\n\n## Raft core\nkept\n"
    new = replace_section(doc, render_section([row()], ["header"], ["footer"]))
    assert new.startswith("# Benchmarks\n\nintro\n\n" + BEGIN)
    assert new.endswith(f"{END}\n\n## Raft core\nkept\n")
    assert "old table" not in new and "header" in new and "footer" in new
    assert replace_section(new, render_section([row()], ["header"], ["footer"])) == new  # idempotent


def test_replace_section_appends_when_there_is_none():
    section = f"{BEGIN}\nx\n{END}"
    assert replace_section("# T\n", section) == f"# T\n\n{section}\n"
    assert replace_section("", section) == f"{section}\n"


@pytest.mark.parametrize("doc", [f"{BEGIN} only", f"{END} only", f"{END}\n{BEGIN}", f"{BEGIN}{END}{BEGIN}{END}"])
def test_replace_section_refuses_broken_markers(doc):
    with pytest.raises(ValueError):
        replace_section(doc, f"{BEGIN}\n{END}")


def test_write_section_creates_then_updates(tmp_path):
    path = tmp_path / "b.md"
    write_section(str(path), f"{BEGIN}\none\n{END}")
    path.write_text("# Title\n\n" + path.read_text() + "\n## Other\n")
    write_section(str(path), f"{BEGIN}\ntwo\n{END}")
    assert path.read_text() == f"# Title\n\n{BEGIN}\ntwo\n{END}\n\n## Other\n"


def test_result_text_and_json():
    r = result(extra={"h2load_req_per_s": 512.0}, notes=["h2load used 3 of 10 keys"])
    text = format_text(r)
    assert "throughput: 500.0 req/s" in text
    # Display values are bucket midpoints: within 0.4% of 2 ms and 3 ms.
    shown = {k: float(v) for k, v in re.findall(r"(p[\d.]+) ([\d.]+) ms", text)}
    assert shown["p50"] == pytest.approx(2.0, rel=0.004) and shown["p99.9"] == pytest.approx(3.0, rel=0.004)
    assert "histogram" in text and "note: h2load used 3 of 10 keys" in text
    d = json.loads(r.to_json())
    assert d["throughput"] == 500.0
    assert d["latency_us"]["p99"] == pytest.approx(3000, rel=0.004)
    assert LatencyHistogram.from_dict(d["histogram"]) == r.latency


def test_section_lists_each_results_notes():
    r = row(ours=Cell(result(notes=["1 of 2 rounds failed: TimeoutError"])))
    section = render_section([r], ["run header"], ["footer"])
    assert "- put (cluster), kvstack: 1 of 2 rounds failed: TimeoutError" in section
    assert section.index("run header") < section.index("| suite") < section.index("Notes:") < section.index("footer")
    assert "Notes:" not in render_section([row()], [], [])
