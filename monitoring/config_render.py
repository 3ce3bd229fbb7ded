"""Prometheus configuration for a running kvstack, and a Prometheus process to go with it.

`monitoring/prometheus.yml` is the static configuration for `kvcluster local`'s default ports.
When the ports are chosen at run time (tests, `kvcluster local --with-prometheus` on other ports),
`render_prometheus_config` writes the same configuration for the given metrics URLs, and
`start_prometheus` runs the Debian `prometheus` binary on it.

Contract of the rendered configuration (the alert rules and the dashboard rely on it):
- job `kvcluster`: every member's metrics URL (`--listen-metrics-urls`), label `tier="member"`;
- job `kvproxy`: every proxy's metrics URL (`--metrics-addr`), label `tier="proxy"`;
- `rule_files`: the alert rules (absolute path, so the file can be written anywhere).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import IO, Sequence
from urllib.parse import urlsplit

import yaml

MONITORING_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULT_RULES_PATH = os.path.join(MONITORING_DIR, "alerts.rules.yml")

CLUSTER_JOB = "kvcluster"
PROXY_JOB = "kvproxy"


def _targets_by_scheme(urls: Sequence[str]) -> dict[str, list[str]]:
    """`http://127.0.0.1:2381` -> {"http": ["127.0.0.1:2381"]}; a bare `host:port` is http."""
    out: dict[str, list[str]] = {}
    for url in urls:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname or not parts.port:
            raise ValueError(f"not a metrics URL with host and port: {url!r}")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        out.setdefault(parts.scheme, []).append(f"{host}:{parts.port}")
    return out


def _scrape_configs(job: str, tier: str, urls: Sequence[str]) -> list[dict]:
    # One scrape config per scheme: Prometheus sets the scheme per job, not per target. Both keep
    # the job name, so alerts and dashboards select them alike.
    configs = []
    for scheme, targets in sorted(_targets_by_scheme(urls).items()):
        cfg: dict = {"job_name": job if scheme == "http" else f"{job}-{scheme}",
                     "scheme": scheme, "metrics_path": "/metrics",
                     "static_configs": [{"targets": targets, "labels": {"tier": tier}}]}
        if scheme == "https":
            cfg["relabel_configs"] = [{"target_label": "job", "replacement": job}]
        configs.append(cfg)
    return configs


def render_prometheus_config(member_metrics_urls: Sequence[str], proxy_metrics_urls: Sequence[str],
                             rules_path: str = DEFAULT_RULES_PATH, *, scrape_interval: str = "5s",
                             evaluation_interval: str | None = None) -> str:
    """The text of a prometheus.yml scraping these members and proxies, with `rules_path` loaded.

    URLs are the ones given to `--listen-metrics-urls` / `--metrics-addr` (`http://host:port`).
    Raises ValueError for a URL without host and port.
    """
    doc = {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval if _seconds(scrape_interval) < 10 else "10s",
            "evaluation_interval": evaluation_interval or scrape_interval,
            "external_labels": {"stack": "kvstack"},
        },
        "rule_files": [os.path.abspath(rules_path)],
        "scrape_configs": [*_scrape_configs(CLUSTER_JOB, "member", member_metrics_urls),
                           *_scrape_configs(PROXY_JOB, "proxy", proxy_metrics_urls)],
    }
    header = ("# Rendered by monitoring/config_render.py: kvstack members (job kvcluster) and\n"
              "# proxies (job kvproxy). See docs/monitoring.md.\n")
    return header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def _seconds(duration: str) -> float:
    """Prometheus duration of one unit (`500ms`, `5s`, `1m`) in seconds."""
    for unit, factor in (("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)):
        if duration.endswith(unit) and duration[: -len(unit)].isdigit():
            return int(duration[: -len(unit)]) * factor
    raise ValueError(f"unsupported duration {duration!r}")


def prometheus_binary() -> str | None:
    """The `prometheus` executable on PATH (Debian package `prometheus`), or None."""
    return shutil.which("prometheus")


@dataclass
class PrometheusProcess:
    """A Prometheus server started by `start_prometheus`; `url` is its HTTP API base."""

    process: subprocess.Popen
    url: str
    config_path: str
    data_dir: str

    def ready(self) -> bool:
        """True once /-/ready answers 200 (configuration and rules loaded, TSDB open)."""
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_prometheus(member_metrics_urls: Sequence[str], proxy_metrics_urls: Sequence[str],
                     data_dir: str, listen_address: str = "127.0.0.1:9090", *,
                     rules_path: str = DEFAULT_RULES_PATH, scrape_interval: str = "5s",
                     binary: str | None = None, log: IO | int | None = subprocess.DEVNULL,
                     start_new_session: bool = True) -> PrometheusProcess:
    """Write `data_dir/prometheus.yml` for these targets and start Prometheus on it.

    The TSDB lives in `data_dir/tsdb`. Returns at once; poll `ready()` before querying.
    Raises FileNotFoundError when no `prometheus` binary is installed (callers such as
    `kvcluster local --with-prometheus` should check `prometheus_binary()` first and say so).
    """
    exe = binary or prometheus_binary()
    if exe is None:
        raise FileNotFoundError("prometheus is not installed (Debian: apt-get install prometheus)")
    os.makedirs(os.path.join(data_dir, "tsdb"), exist_ok=True)
    config_path = os.path.join(data_dir, "prometheus.yml")
    with open(config_path, "w") as f:
        f.write(render_prometheus_config(member_metrics_urls, proxy_metrics_urls, rules_path,
                                         scrape_interval=scrape_interval))
    argv = [exe, f"--config.file={config_path}",
            f"--storage.tsdb.path={os.path.join(data_dir, 'tsdb')}",
            f"--web.listen-address={listen_address}",
            "--storage.tsdb.retention.time=1d", "--log.level=warn"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=start_new_session)
    return PrometheusProcess(proc, f"http://{listen_address}", config_path, data_dir)
