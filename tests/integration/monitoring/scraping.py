"""Scrape a metrics endpoint over real HTTP and look samples up by name and labels."""

from __future__ import annotations

import asyncio
import http.client
import subprocess
import time

from prometheus_client.parser import text_string_to_metric_families

PROMTOOL = "/usr/bin/promtool"


def http_get(port: int, path: str, headers: dict | None = None, method: str = "GET"):
    """(status, headers, body) of one request on a fresh connection to 127.0.0.1:port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


class Scrape:
    """One /metrics exposition: the raw text, the families, and samples keyed by labels."""

    def __init__(self, text: str):
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = {
            (s.name, frozenset(s.labels.items())): s.value
            for f in self.families.values() for s in f.samples
        }

    def value(self, name: str, **labels) -> float | None:
        """The value of the sample `name{labels}`, or None if it is absent."""
        return self.samples.get((name, frozenset(labels.items())))

    def names_with(self, name: str, **labels) -> list[dict]:
        """Label sets of every `name` sample whose labels include `labels`."""
        return [dict(key) for (n, key), _ in self.samples.items()
                if n == name and all(dict(key).get(k) == v for k, v in labels.items())]


async def scrape(port: int) -> Scrape:
    status, _, body = await asyncio.to_thread(http_get, port, "/metrics")
    assert status == 200, body
    return Scrape(body.decode())


async def scrape_until(port: int, condition, timeout: float = 10.0, what: str = "metrics") -> Scrape:
    """Scrape until `condition(scrape)` holds; raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        result = await scrape(port)
        if condition(result):
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}; last scrape:\n{result.text[:4000]}")
        await asyncio.sleep(0.05)


def promtool_problems(text: str) -> str:
    """What `promtool check metrics` reports for `text` ('' when it finds nothing)."""
    done = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True,
                          timeout=30)
    report = (done.stdout + done.stderr).decode().strip()
    return report if done.returncode or report else ""
