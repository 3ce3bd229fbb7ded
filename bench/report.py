"""The comparison table `kvbench compare` writes, and its place in docs/benchmarks.md.

The table lives between BEGIN and END markers; `replace_section` swaps only that part, so other
sections of the same file (written by hand or by other tools) survive every run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .result import BenchResult

BEGIN = "<!-- kvbench:begin -->"
END = "<!-- kvbench:end -->"


@dataclass
class Cell:
    """One stack's figure for a suite: a result, or the reason there is none."""

    result: BenchResult | None = None
    missing: str | None = None

    def __post_init__(self):
        if (self.result is None) == (self.missing is None):
            raise ValueError("a Cell has either a result or a reason it is missing")


@dataclass
class ComparisonRow:
    """A suite measured on etcd and on our stack, and the Python ceiling if it applies."""

    suite: str
    tier: str   # "cluster" or "proxy": what the load was sent to
    load: str   # how the load was shaped, for the reader
    etcd: Cell
    ours: Cell
    ceiling: Cell | None = None
    extras: list[str] = field(default_factory=list)  # BenchResult.extra keys to show for both


def _fmt_rate(cell: Cell | None) -> str:
    if cell is None:
        return "—"
    if cell.result is None:
        return f"not available ({_escape(cell.missing)})"
    r = cell.result
    text = f"{r.throughput:,.0f} {r.unit}"
    if r.errors:
        text += f" ({r.errors} errors)"
    return text


def _fmt_lat(cell: Cell) -> str:
    if cell.result is None or not cell.result.latency.count:
        return "—"
    p = cell.result.latency.percentiles((50, 99))
    return f"{p['p50'] / 1000:.2f} / {p['p99'] / 1000:.2f}"


def ratio(ours: Cell, etcd: Cell) -> str:
    """ours/etcd throughput, as "0.31×"; "—" when either side has no figure (or etcd has 0)."""
    if ours.result is None or etcd.result is None or etcd.result.throughput <= 0:
        return "—"
    return f"{ours.result.throughput / etcd.result.throughput:.2f}×"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _extras(row: ComparisonRow) -> str:
    parts = []
    for key in row.extras:
        values = []
        for name, cell in (("etcd", row.etcd), ("ours", row.ours)):
            if cell.result is not None and key in cell.result.extra:
                v = cell.result.extra[key]
                values.append(f"{name} {v:,.4g}" if isinstance(v, (int, float)) else f"{name} {v}")
        if values:
            parts.append(f"{key}: " + ", ".join(values))
    return _escape("; ".join(parts))


def render_table(rows: list[ComparisonRow]) -> str:
    """The Markdown comparison table, one row per suite."""
    lines = [
        "| suite | sent to | load | etcd 3.4.23 | kvstack | kvstack/etcd | p50 / p99 ms, etcd | "
        "p50 / p99 ms, kvstack | Python ceiling | other figures |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append("| " + " | ".join([
            r.suite, r.tier, _escape(r.load), _fmt_rate(r.etcd), _fmt_rate(r.ours), ratio(r.ours, r.etcd),
            _fmt_lat(r.etcd), _fmt_lat(r.ours), _fmt_rate(r.ceiling), _extras(r),
        ]) + " |")
    return "\n".join(lines)


def render_notes(rows: list[ComparisonRow]) -> list[str]:
    """A bullet per caveat a result carries (sampled gRPC errors, keys used, failed rounds)."""
    lines = []
    for r in rows:
        for name, cell in (("etcd 3.4.23", r.etcd), ("kvstack", r.ours), ("Python ceiling", r.ceiling)):
            if cell is not None and cell.result is not None:
                lines += [f"- {r.suite} ({r.tier}), {name}: {_escape(n)}" for n in cell.result.notes]
    return lines


def render_section(rows: list[ComparisonRow], header_lines: list[str], footer_lines: list[str]) -> str:
    """The whole generated section, markers included: header, table, notes, footer."""
    notes = render_notes(rows)
    return "\n".join([BEGIN, *header_lines, "", render_table(rows), "",
                      *(["Notes:", "", *notes, ""] if notes else []), *footer_lines, END])


def replace_section(document: str, section: str) -> str:
    """`document` with its BEGIN..END section replaced by `section` (appended if it has none).

    Raises ValueError if the markers are unbalanced, rather than guess what to overwrite.
    """
    begin, end = document.find(BEGIN), document.find(END)
    if begin == -1 and end == -1:
        sep = "" if not document or document.endswith("\n\n") else ("\n" if document.endswith("\n") else "\n\n")
        return document + sep + section + "\n"
    if begin == -1 or end == -1 or end < begin or document.count(BEGIN) != 1 or document.count(END) != 1:
        raise ValueError(f"{BEGIN} / {END} markers are missing, repeated or out of order")
    return document[:begin] + section + document[end + len(END):]


def write_section(path: str, section: str) -> None:
    """Replace the generated section of the Markdown file at `path` (created if absent)."""
    try:
        with open(path) as f:
            document = f.read()
    except FileNotFoundError:
        document = ""
    with open(path, "w") as f:
        f.write(replace_section(document, section))
