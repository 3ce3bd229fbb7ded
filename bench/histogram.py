"""Latency histogram with bounded relative error, mergeable across processes.

Values are whole microseconds. Buckets are log-linear (the HdrHistogram idea, written from scratch):
values below 2**SUB_BITS each get their own bucket; above that, every power-of-two range is split
into 2**(SUB_BITS-1) equal buckets. A bucket's width is therefore at most 1/2**(SUB_BITS-1) of its
lower bound, and reporting its midpoint is off by at most half that (0.4% with SUB_BITS = 8).

Percentiles use the nearest-rank definition: p-th percentile = the smallest recorded value v such
that at least p% of the samples are <= v. The histogram answers with the midpoint of the bucket
holding that sample, clamped to the exact [min, max] seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

SUB_BITS = 8
_EXACT_LIMIT = 1 << SUB_BITS


def bucket_of(value_us: int) -> int:
    """The bucket index for a value (>= 0, in microseconds). Monotonic in the value."""
    if value_us < _EXACT_LIMIT:
        return value_us
    shift = value_us.bit_length() - SUB_BITS
    # (value >> shift) lies in [2**(SUB_BITS-1), 2**SUB_BITS): one of the sub-buckets of this range.
    return (shift << SUB_BITS) + (value_us >> shift)


def bucket_bounds(index: int) -> tuple[int, int]:
    """Inclusive [low, high] of the values that `bucket_of` maps to `index`."""
    if index < _EXACT_LIMIT:
        return index, index
    shift, sub = index >> SUB_BITS, index & (_EXACT_LIMIT - 1)
    return sub << shift, ((sub + 1) << shift) - 1


@dataclass
class LatencyHistogram:
    """Counts of latencies (microseconds), with exact count, sum, min and max.

    Merge histograms from several workers with `merge`; ship them between processes with
    `to_dict` / `from_dict` (plain JSON types).
    """

    counts: dict[int, int] = field(default_factory=dict)
    count: int = 0
    total_us: int = 0
    min_us: int | None = None
    max_us: int | None = None

    def record(self, value_us: int | float, n: int = 1) -> None:
        """Add `n` samples of `value_us` (negative values count as 0: clocks may step)."""
        v = max(0, int(value_us))
        b = bucket_of(v)
        self.counts[b] = self.counts.get(b, 0) + n
        self.count += n
        self.total_us += v * n
        self.min_us = v if self.min_us is None else min(self.min_us, v)
        self.max_us = v if self.max_us is None else max(self.max_us, v)

    def merge(self, other: "LatencyHistogram") -> "LatencyHistogram":
        """Add every sample of `other` into this histogram; returns self."""
        for b, n in other.counts.items():
            self.counts[b] = self.counts.get(b, 0) + n
        self.count += other.count
        self.total_us += other.total_us
        if other.min_us is not None:
            self.min_us = other.min_us if self.min_us is None else min(self.min_us, other.min_us)
        if other.max_us is not None:
            self.max_us = other.max_us if self.max_us is None else max(self.max_us, other.max_us)
        return self

    @property
    def mean_us(self) -> float | None:
        return self.total_us / self.count if self.count else None

    def percentile(self, p: float) -> float | None:
        """Nearest-rank p-th percentile (0 < p <= 100) in microseconds; None when empty."""
        if not 0 < p <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {p}")
        if not self.count:
            return None
        rank = max(1, math.ceil(p / 100 * self.count))
        seen = 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= rank:
                low, high = bucket_bounds(b)
                mid = (low + high) / 2
                return float(min(max(mid, self.min_us), self.max_us))
        raise AssertionError("counts do not add up to count")  # unreachable while invariants hold

    def percentiles(self, ps=(50, 90, 99, 99.9)) -> dict[str, float | None]:
        """{"p50": ..., "p99.9": ...} in microseconds."""
        return {f"p{p:g}": self.percentile(p) for p in ps}

    def to_dict(self) -> dict:
        return {"counts": {str(b): n for b, n in self.counts.items()}, "count": self.count,
                "total_us": self.total_us, "min_us": self.min_us, "max_us": self.max_us}

    @classmethod
    def from_dict(cls, d: dict) -> "LatencyHistogram":
        return cls({int(b): n for b, n in d["counts"].items()}, d["count"], d["total_us"],
                   d["min_us"], d["max_us"])

    def coarse_bins(self, bins: int = 10) -> list[tuple[float, int]]:
        """`bins` log-spaced bins from min to max: [(upper bound us, count)], for display.

        Each fine bucket goes whole into the coarse bin holding its midpoint.
        """
        if not self.count:
            return []
        lo, hi = max(1, self.min_us), max(1, self.max_us)
        if hi <= lo:
            return [(float(hi), self.count)]
        ratio = (hi / lo) ** (1 / bins)
        uppers = [lo * ratio ** (i + 1) for i in range(bins)]
        uppers[-1] = float(hi)
        out = [0] * bins
        for b, n in self.counts.items():
            low, high = bucket_bounds(b)
            mid = max(lo, (low + high) / 2)
            i = min(bins - 1, int(math.log(mid / lo, ratio))) if mid > lo else 0
            out[i] += n
        return list(zip(uppers, out))
