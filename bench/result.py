"""The outcome of one benchmark run, and its rendering as text or JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .histogram import LatencyHistogram


@dataclass
class BenchResult:
    """What one suite measured against one target.

    `ok` counts operations that completed with gRPC status OK; `errors` those that did not (for
    h2load-driven runs, errors are derived from the response bytes and a sampled grpc client, see
    bench/h2load.py). `throughput` is ok operations per second of the measured phase. `extra` holds
    suite-specific figures (events/s, upstream fraction, ...) as flat name -> number/str pairs;
    `notes` holds caveats the reader must see (e.g. "h2load used 4 of 1000 keys").
    """

    suite: str
    target: str
    ok: int
    errors: int
    duration_s: float
    latency: LatencyHistogram
    unit: str = "req/s"
    extra: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "suite": self.suite, "target": self.target, "ok": self.ok, "errors": self.errors,
            "duration_s": round(self.duration_s, 6), "throughput": round(self.throughput, 2),
            "unit": self.unit,
            "latency_us": {"mean": self.latency.mean_us, "min": self.latency.min_us,
                           "max": self.latency.max_us, **self.latency.percentiles()},
            "histogram": self.latency.to_dict(), "extra": self.extra, "notes": self.notes,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.3f} ms"


def format_text(result: BenchResult, bar_width: int = 40) -> str:
    """A human summary: throughput, latency percentiles, a text histogram, extras and notes."""
    h = result.latency
    lines = [
        f"{result.suite} against {result.target}",
        f"  ok {result.ok}, errors {result.errors}, in {result.duration_s:.2f} s",
        f"  throughput: {result.throughput:,.1f} {result.unit}",
        f"  latency: mean {_ms(h.mean_us)}, min {_ms(h.min_us)}, max {_ms(h.max_us)}",
        "  " + ", ".join(f"{k} {_ms(v)}" for k, v in h.percentiles().items()),
    ]
    bins = h.coarse_bins()
    if bins:
        lines.append("  histogram (upper bound: count):")
        peak = max(n for _, n in bins) or 1
        for upper, n in bins:
            lines.append(f"  {upper / 1000:10.3f} ms [{n:>9}] {'#' * round(bar_width * n / peak)}")
    for k, v in result.extra.items():
        lines.append(f"  {k}: {v:,.4g}" if isinstance(v, float) else f"  {k}: {v}")
    for note in result.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines)
