"""PNG plots of a comparison (throughput and latency per suite), if matplotlib is installed.

matplotlib is an optional extra (`pip install kvstack[plots]`); without it `write_plots` does
nothing and says so.
"""

from __future__ import annotations

import os

from .report import Cell, ComparisonRow

_STACKS = (("etcd 3.4.23", "etcd"), ("kvstack", "ours"), ("Python ceiling", "ceiling"))


def _value(cell: Cell | None, what: str) -> float:
    if cell is None or cell.result is None:
        return 0.0
    if what == "throughput":
        return cell.result.throughput
    return (cell.result.latency.percentile(float(what[1:])) or 0.0) / 1000


def write_plots(rows: list[ComparisonRow], img_dir: str) -> tuple[list[str], str | None]:
    """Write throughput.png and latency.png into `img_dir`; returns (paths, why-not or None)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "matplotlib is not installed (pip install 'kvstack[plots]'): no plots written"
    os.makedirs(img_dir, exist_ok=True)
    labels = [f"{r.suite}\n({r.tier})" for r in rows]
    x = list(range(len(rows)))
    paths = []
    for name, metrics, ylabel, log in (("throughput.png", ["throughput"], "operations/s (unit per suite: see the table)", True),
                                       ("latency.png", ["p50", "p99"], "latency, ms", True)):
        fig, ax = plt.subplots(figsize=(max(8, 1.2 * len(rows)), 5))
        series = [(f"{title} {m if m != 'throughput' else ''}".strip(), attr, m)
                  for title, attr in _STACKS for m in metrics
                  if not (attr == "ceiling" and m != "throughput")]
        width = 0.8 / len(series)
        heights = []
        for i, (title, attr, m) in enumerate(series):
            values = [_value(getattr(r, attr), m) for r in rows]
            heights += [v for v in values if v > 0]
            ax.bar([xi + i * width for xi in x], values, width, label=title)
        ax.set_xticks([xi + 0.4 - width / 2 for xi in x], labels, fontsize=7)
        ax.set_ylabel(ylabel)
        if log and heights:
            ax.set_yscale("log")
            ax.set_ylim(bottom=min(heights) / 10)  # a decade below the smallest bar: heights stay comparable
        ax.legend(fontsize=8)
        ax.set_title(f"kvbench compare: {name[:-4]} per suite (missing bars: no figure)")
        fig.tight_layout()
        path = os.path.join(img_dir, name)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths, None
