"""LatencyHistogram: bucket maths, nearest-rank percentiles within the stated error, merging."""

import math
import random

import pytest

from bench.histogram import SUB_BITS, LatencyHistogram, bucket_bounds, bucket_of

MAX_REL_ERROR = 1 / 2 ** SUB_BITS  # half a bucket's width relative to its lower bound


def exact_percentile(values, p):
    """Nearest rank: the smallest v with at least p% of the values <= v."""
    s = sorted(values)
    return s[max(1, math.ceil(p / 100 * len(s))) - 1]


def test_small_values_have_exact_buckets():
    for v in range(2 ** SUB_BITS):
        assert bucket_bounds(bucket_of(v)) == (v, v)


@pytest.mark.parametrize("v", [256, 257, 511, 512, 1000, 65535, 65536, 10 ** 6, 2 ** 40 + 12345])
def test_every_value_lies_in_its_bucket_and_buckets_are_narrow(v):
    low, high = bucket_bounds(bucket_of(v))
    assert low <= v <= high
    assert (high - low + 1) / low <= 2 * MAX_REL_ERROR


def test_buckets_are_monotonic_and_contiguous():
    prev_high = -1
    for b in sorted({bucket_of(v) for v in range(0, 300_000, 7)} | {bucket_of(v) for v in range(300_000)}):
        low, high = bucket_bounds(b)
        assert low == prev_high + 1
        prev_high = high


def test_percentiles_of_known_data():
    h = LatencyHistogram()
    for v in range(1, 101):  # 1..100 µs, all in exact buckets
        h.record(v)
    assert h.percentile(50) == 50
    assert h.percentile(90) == 90
    assert h.percentile(99) == 99
    assert h.percentile(99.9) == 100
    assert h.percentile(100) == 100
    assert h.mean_us == pytest.approx(50.5)
    assert (h.min_us, h.max_us, h.count) == (1, 100, 100)


def test_single_sample_is_every_percentile():
    h = LatencyHistogram()
    h.record(123_456)
    assert all(v == 123_456 for v in h.percentiles().values())  # clamped to [min, max]


@pytest.mark.parametrize("seed", range(5))
def test_percentiles_within_relative_error_of_exact(seed):
    rng = random.Random(seed)
    values = [int(rng.lognormvariate(8, 1.5)) for _ in range(20_000)]
    h = LatencyHistogram()
    for v in values:
        h.record(v)
    for p in (1, 25, 50, 90, 99, 99.9, 100):
        exact = exact_percentile(values, p)
        assert h.percentile(p) == pytest.approx(exact, rel=MAX_REL_ERROR, abs=0.5), p


def test_empty_histogram():
    h = LatencyHistogram()
    assert h.percentile(50) is None and h.mean_us is None
    assert h.coarse_bins() == []


@pytest.mark.parametrize("p", [0, -1, 100.1])
def test_percentile_out_of_range_is_rejected(p):
    with pytest.raises(ValueError):
        LatencyHistogram().percentile(p)


def test_negative_values_count_as_zero():
    h = LatencyHistogram()
    h.record(-5)
    assert (h.min_us, h.count) == (0, 1)


def test_merge_equals_recording_everything_in_one():
    rng = random.Random(7)
    a_vals = [rng.randrange(1, 10 ** 6) for _ in range(3000)]
    b_vals = [rng.randrange(1, 10 ** 4) for _ in range(2000)]
    a, b, both = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for v in a_vals:
        a.record(v)
        both.record(v)
    for v in b_vals:
        b.record(v)
        both.record(v)
    assert a.merge(b) == both


def test_merge_into_empty_and_round_trip_through_dict():
    h = LatencyHistogram()
    for v in (5, 500, 50_000):
        h.record(v, n=3)
    assert LatencyHistogram().merge(h) == h
    assert LatencyHistogram.from_dict(h.to_dict()) == h


def test_coarse_bins_keep_every_sample():
    h = LatencyHistogram()
    for v in range(100, 100_000, 37):
        h.record(v)
    bins = h.coarse_bins(10)
    assert len(bins) == 10
    assert sum(n for _, n in bins) == h.count
    assert bins[-1][0] == h.max_us
    assert [u for u, _ in bins] == sorted(u for u, _ in bins)
