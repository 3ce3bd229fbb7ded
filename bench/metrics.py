"""Read counters from members' Prometheus endpoints (to count what reaches the cluster)."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def handled_total(metrics_text: str, method: str, service: str = "etcdserverpb.KV") -> float:
    """Sum of `grpc_server_handled_total{grpc_method=method, grpc_service=service}` over all codes."""
    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if (s.name == "grpc_server_handled_total" and s.labels.get("grpc_method") == method
                    and s.labels.get("grpc_service") == service):
                total += s.value
    return total


def fetch_metrics(url: str, timeout: float = 5.0) -> str:
    """The text at `url`/metrics (`url` is a base such as http://127.0.0.1:2381)."""
    with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=timeout) as r:
        return r.read().decode()


def metrics_reachable(url: str) -> bool:
    try:
        fetch_metrics(url, timeout=1.0)
        return True
    except OSError:  # URLError, connection refused, timeout
        return False


def cluster_handled_total(urls: list[str], method: str) -> float:
    """`handled_total` summed over every member's metrics endpoint."""
    return sum(handled_total(fetch_metrics(u), method) for u in urls)


def counter_sum(metrics_text: str, name: str) -> float | None:
    """Sum of every sample of counter `name` (its `_total` sample, all label sets); None when the
    page has no such family (etcd has no ReadIndex counters, for one)."""
    total = None
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name in (name, name + "_total"):
                total = (total or 0.0) + s.value
    return total
