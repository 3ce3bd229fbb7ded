"""monitoring/prometheus.yml and config_render: valid for promtool, scraping what they should."""

from __future__ import annotations

import os

import pytest
import yaml

from monitoring.config_render import DEFAULT_RULES_PATH, render_prometheus_config, start_prometheus

from .queries import PROMETHEUS_YML, RULES, promtool


def _jobs(doc: dict) -> dict[str, dict]:
    return {c["job_name"]: c for c in doc["scrape_configs"]}


def test_static_config_passes_promtool_check_config():
    result = promtool("check", "config", PROMETHEUS_YML)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr


def test_static_config_scrapes_the_local_stack_defaults():
    with open(PROMETHEUS_YML) as f:
        doc = yaml.safe_load(f)
    jobs = _jobs(doc)
    assert jobs["kvcluster"]["static_configs"][0]["targets"] == [
        "127.0.0.1:2381", "127.0.0.1:22381", "127.0.0.1:32381"]
    assert jobs["kvproxy"]["static_configs"][0]["targets"] == ["127.0.0.1:23791"]
    assert doc["rule_files"] == ["alerts.rules.yml"]
    assert os.path.samefile(os.path.join(os.path.dirname(PROMETHEUS_YML), doc["rule_files"][0]), RULES)


def test_rendered_config_passes_promtool_and_has_the_given_targets(tmp_path):
    text = render_prometheus_config(
        ["http://127.0.0.1:40001", "http://127.0.0.1:40002", "127.0.0.1:40003"],
        ["http://127.0.0.1:40010", "https://proxy.example:40011"],
        DEFAULT_RULES_PATH, scrape_interval="1s")
    path = tmp_path / "prometheus.yml"
    path.write_text(text)
    result = promtool("check", "config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr

    doc = yaml.safe_load(text)
    assert doc["global"]["scrape_interval"] == "1s"
    assert doc["global"]["scrape_timeout"] == "1s"      # may not exceed the interval
    assert doc["rule_files"] == [os.path.abspath(DEFAULT_RULES_PATH)]
    jobs = _jobs(doc)
    assert jobs["kvcluster"]["static_configs"][0]["targets"] == [
        "127.0.0.1:40001", "127.0.0.1:40002", "127.0.0.1:40003"]
    assert jobs["kvcluster"]["static_configs"][0]["labels"] == {"tier": "member"}
    assert jobs["kvproxy"]["static_configs"][0]["targets"] == ["127.0.0.1:40010"]
    # https targets: their own scrape config, relabelled to the same job name
    https = jobs["kvproxy-https"]
    assert https["scheme"] == "https"
    assert https["static_configs"][0]["targets"] == ["proxy.example:40011"]
    assert https["relabel_configs"] == [{"target_label": "job", "replacement": "kvproxy"}]


def test_rendered_config_without_proxy_has_only_the_cluster_job():
    doc = yaml.safe_load(render_prometheus_config(["http://127.0.0.1:2381"], [], RULES))
    assert list(_jobs(doc)) == ["kvcluster"]
    assert doc["global"]["scrape_timeout"] == "5s"


@pytest.mark.parametrize("url", ["http://127.0.0.1", "unix:///tmp/s", "http://:2381"])
def test_render_refuses_urls_without_host_and_port(url):
    with pytest.raises(ValueError):
        render_prometheus_config([url], [], RULES)


def test_start_prometheus_without_the_binary_says_so(tmp_path):
    with pytest.raises(FileNotFoundError):
        start_prometheus(["http://127.0.0.1:2381"], [], str(tmp_path),
                         binary=str(tmp_path / "no-such-prometheus"))
