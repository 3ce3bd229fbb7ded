"""The metrics endpoint: /metrics, /health and extra routes over HTTP/1.1, on asyncio.

Answers as etcd 3.4.23's `--listen-metrics-urls` endpoint does (checked against the real one):
- GET /metrics: Prometheus text exposition (OpenMetrics if the Accept header asks for it).
- GET /health: 200 `{"health":"true"}`, or 503 `{"health":"false"}` + newline; etcd 3.4 puts no
  reason in the body, so the reason returned by the health callable goes to the log instead.
  Other methods: 405 with `Allow: GET`.
- anything else: 404 `404 page not found`.
- etcd's gauges named `*_total` (`etcd_server_proposals_committed_total`,
  `etcd_debugging_mvcc_keys_total`, ...) keep their names and are exposed untyped: promtool
  rightly flags a gauge named `_total`, and an untyped series behaves as a gauge in PromQL, so
  etcd's dashboards and alerts work unchanged and `promtool check metrics` finds nothing.
- /health checks are counted as etcd counts them, in `etcd_server_health_success` and
  `etcd_server_health_failures`, added to what /metrics exposes. etcd types them as counters
  without the `_total` suffix, which the Python exposition cannot write (it appends `_total` to
  every counter); we keep the names and expose them untyped. So are the other etcd counters
  named without `_total` (`ETCD_COUNTERS_WITHOUT_TOTAL`), counted with prometheus_client
  Counters of those names: their samples are exposed under etcd's names, untyped.

The server is deliberately small: one request at a time per connection (keep-alive, no
pipelining beyond reading requests in order), bodies of requests are read and ignored, and the
whole exposition is built inline on the event loop (a few ms at most for our registries).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable
from urllib.parse import urlsplit

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric, UnknownMetricFamily
from prometheus_client.registry import REGISTRY, CollectorRegistry

log = logging.getLogger(__name__)

HealthCheck = Callable[[], Awaitable[tuple[bool, str]]]
Route = Callable[[], Awaitable[tuple[int, str, bytes]]]

_TEXT = "text/plain; charset=utf-8"
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            500: "Internal Server Error", 503: "Service Unavailable"}


class _HealthCheckCounts:
    """Counts of /health answers; exported with the served registry (see the module doc)."""

    def __init__(self):
        self.success = 0
        self.failures = 0

    def collect(self):
        yield UnknownMetricFamily("etcd_server_health_failures", "The total number of failed health checks",
                                  value=self.failures)
        yield UnknownMetricFamily("etcd_server_health_success", "The total number of successful health checks",
                                  value=self.success)


# etcd 3.4's counters whose names have no `_total` (rafthttp's snapshot counts, learner promotions);
# see the module doc
ETCD_COUNTERS_WITHOUT_TOTAL = frozenset({
    "etcd_network_snapshot_send_success", "etcd_network_snapshot_send_failures",
    "etcd_network_snapshot_receive_success", "etcd_network_snapshot_receive_failures",
    "etcd_server_learner_promote_successes",
})


class _Exposition:
    """What /metrics shows: the registry's families without `_created` samples, under etcd's
    names and types where the Python exposition cannot write them (see the module doc), then the
    health check counts."""

    def __init__(self, registry: CollectorRegistry, health_counts: _HealthCheckCounts):
        self._registry = registry
        self._health_counts = health_counts

    def collect(self):
        for family in self._registry.collect():
            yield _as_etcd_exposes(_without_created(family))
        yield from self._health_counts.collect()


def _as_etcd_exposes(family: Metric) -> Metric:
    """A `*_total` gauge untyped; a counter of ETCD_COUNTERS_WITHOUT_TOTAL untyped, its samples
    without the `_total` prometheus_client gave them; any other family as it is."""
    if family.type == "gauge" and family.name.endswith("_total"):
        samples = family.samples
    elif family.type == "counter" and family.name in ETCD_COUNTERS_WITHOUT_TOTAL:
        total = family.name + "_total"
        samples = [s._replace(name=family.name) if s.name == total else s for s in family.samples]
    else:
        return family
    untyped = Metric(family.name, family.documentation, "unknown", family.unit)
    untyped.samples = samples
    return untyped


def _without_created(family: Metric) -> Metric:
    if not any(s.name.endswith("_created") for s in family.samples):
        return family
    trimmed = Metric(family.name, family.documentation, family.type, family.unit)
    trimmed.samples = [s for s in family.samples if not s.name.endswith("_created")]
    return trimmed


class MetricsHTTPServer:
    """Serves a prometheus_client registry, a health check and extra routes on HTTP URLs.

    `registry`: what /metrics exposes (default: the global REGISTRY, with process_* and python_*).
    `health`: async callable returning (ok, reason); None means always healthy.
    `routes`: path -> async callable returning (status, content_type, body), for GET.
    `before_scrape`: async callable awaited before each /metrics exposition is built (the proxy's
    parent refreshes its workers' snapshots there: see monitoring.multiprocess).
    `start(urls, tls)` binds every URL (http://host:port, or https:// with `tls`) and returns once they all accept; `stop()`
    closes the listeners and the open connections.
    """

    def __init__(self, registry: CollectorRegistry | None = None, health: HealthCheck | None = None,
                 routes: dict[str, Route] | None = None,
                 before_scrape: Callable[[], Awaitable[None]] | None = None):
        self._health_counts = _HealthCheckCounts()
        self._exposition = _Exposition(REGISTRY if registry is None else registry, self._health_counts)
        self._health = health
        self._routes = dict(routes or {})
        self._before_scrape = before_scrape
        self._servers: list[asyncio.Server] = []
        self._connections: set[asyncio.Task] = set()

    @property
    def ports(self) -> list[int]:
        """The bound ports, in the order of `start`'s urls (useful with port 0)."""
        return [s.sockets[0].getsockname()[1] for s in self._servers]

    async def start(self, urls: list[str], tls=None) -> None:
        """`tls`: a `cluster.tls.TLSInfo` for the https:// URLs among `urls` (etcd serves https
        metrics URLs with the client TLS files, client certificate auth included)."""
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or parts.port is None:
                raise ValueError(f"metrics URL must be http(s)://host:port, got {url!r}")
            if parts.scheme == "https" and tls is None:
                raise ValueError(f"cannot listen on TLS for {parts.netloc}: KeyFile and CertFile are not presented")
            ssl_context = tls.ssl_context() if parts.scheme == "https" else None
            self._servers.append(await asyncio.start_server(self._serve, parts.hostname, parts.port,
                                                            ssl=ssl_context))

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._connections.add(task)
        try:
            while await self._serve_one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # peer gone, or a request we cannot parse: drop the connection
        except asyncio.CancelledError:
            pass  # stop(): end quietly (Python 3.11's stream callback logs cancelled tasks)
        finally:
            self._connections.discard(task)
            writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read one request, write its response; False when the connection should close."""
        head = await reader.readuntil(b"\r\n\r\n")  # over the reader's 64 KiB limit: dropped
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = request_line.split(" ")
        except ValueError:
            await self._write(writer, 400, _TEXT, b"400 Bad Request", keep_alive=False)
            return False
        headers = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        if length:
            await reader.readexactly(length)
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" and (version == "HTTP/1.1" or connection == "keep-alive")

        try:
            status, content_type, body, extra = await self._respond(method, urlsplit(target).path, headers)
        except Exception:
            log.exception("metrics endpoint: %s %s failed", method, target)
            status, content_type, body, extra = 500, _TEXT, b"Internal Server Error\n", ()
        await self._write(writer, status, content_type, body, keep_alive, extra,
                          head_only=method == "HEAD")
        return keep_alive

    async def _respond(self, method: str, path: str, headers: dict[str, str]):
        """(status, content type, body, extra headers) for one request."""
        if path == "/metrics":
            if self._before_scrape is not None:
                await self._before_scrape()
            encoder, content_type = choose_encoder(headers.get("accept"))
            return 200, content_type, encoder(self._exposition), ()
        if path == "/health":
            if method != "GET":
                return 405, _TEXT, b"Method Not Allowed\n", (("Allow", "GET"),)
            return (*await self._health_response(), ())
        route = self._routes.get(path)
        if route is not None:
            return (*await route(), ())
        return 404, _TEXT, b"404 page not found\n", ()

    async def _health_response(self) -> tuple[int, str, bytes]:
        try:
            ok, reason = (True, "") if self._health is None else await self._health()
        except Exception as exc:  # a check that cannot run is a failed check
            ok, reason = False, f"health check raised {exc!r}"
        if ok:
            self._health_counts.success += 1
            return 200, _TEXT, b'{"health":"true"}'
        self._health_counts.failures += 1
        log.warning("/health error: %s", reason)
        return 503, _TEXT, b'{"health":"false"}\n'

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, status: int, content_type: str, body: bytes,
                     keep_alive: bool, extra_headers=(), head_only: bool = False) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
                 f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in extra_headers]
        if not keep_alive:
            lines.append("Connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            writer.write(body)
        await writer.drain()
