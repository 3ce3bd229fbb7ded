"""`--workers N`: N proxy processes sharing the listen port, one metrics endpoint for all of them.

Shape:
- The supervisor (the `kvproxy start` process) starts N workers: each is `kvproxy start` with the
  same flags, `--workers 1`, and a hidden `--worker-metrics-dir`. A worker binds --listen-addr
  with SO_REUSEPORT (the kernel spreads new connections over the workers), runs its own upstream
  channel, cache and keyspace watch (it is stateless: the cache is only an optimisation), and
  publishes its metrics to the shared directory (monitoring.multiprocess.SnapshotPublisher).
- The supervisor serves --metrics-addr: /metrics is the sum of the workers' metrics (refreshed
  from every live worker before each scrape), /health asks the cluster through the supervisor's
  own small upstream channel, /proxy/health asks the proxy port (whichever worker the kernel picks).
- A worker that exits is retired from the metrics (its counters kept, its gauges dropped) and
  restarted after a short delay. SIGTERM/SIGINT on the supervisor stops every worker, then itself.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import sys
import tempfile

import grpc

from monitoring.http import MetricsHTTPServer
from monitoring.multiprocess import WorkerSnapshotCollector, parent_registry, prepare_directory

from protos.etcdserverpb import rpc_pb2_grpc

from .server import ProxyConfig, probe_kv, health_route_answer, self_probe_target
from .upstream import Upstream, channel_credentials

log = logging.getLogger("kvproxy.workers")

RESTART_DELAY_S = 0.5
STOP_GRACE_S = 5.0


def worker_argv(argv: list[str], metrics_dir: str) -> list[str]:
    """The supervisor's own `start` flags, for one worker: --workers 1 and no metrics endpoint."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--workers", "--metrics-addr"):
            skip = True
            continue
        if arg.startswith(("--workers=", "--metrics-addr=")):
            continue
        out.append(arg)
    return [sys.executable, "-m", "proxy.cli", *out, "--workers", "1", "--worker-metrics-dir", metrics_dir]


class WorkerSupervisor:
    """Starts, watches and restarts the worker processes; serves their merged metrics."""

    def __init__(self, config: ProxyConfig, argv: list[str]):
        self.config = config
        self.metrics_dir = tempfile.mkdtemp(prefix="kvproxy-metrics-")
        self._argv = worker_argv(argv, self.metrics_dir)
        self._procs: dict[int, asyncio.subprocess.Process] = {}  # slot -> process
        self._collector = WorkerSnapshotCollector(self.metrics_dir)
        self._stopping = False
        self._upstream: Upstream | None = None
        self._http: MetricsHTTPServer | None = None
        self._self_channel = None

    async def run(self) -> None:
        prepare_directory(self.metrics_dir)
        cfg = self.config
        tls = channel_credentials(cfg.cert, cfg.key, cfg.cacert) if cfg.upstream_tls else None
        self._upstream = Upstream(cfg.endpoints, tls=tls)
        if cfg.metrics_addr:
            self._http = MetricsHTTPServer(parent_registry(self._collector), health=self._health,
                                           routes={"/proxy/health": self._proxy_health},
                                           before_scrape=self._refresh)
            await self._http.start(cfg.metrics_addr, tls=cfg.client_tls_info)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        watchers = [loop.create_task(self._keep_running(slot)) for slot in range(cfg.workers)]
        try:
            await stop.wait()
        finally:
            self._stopping = True
            await self._stop_workers()
            for w in watchers:
                w.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            if self._http is not None:
                await self._http.stop()
            if self._self_channel is not None:
                await self._self_channel.close()
            await self._upstream.close()
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    async def _keep_running(self, slot: int) -> None:
        while not self._stopping:
            proc = await asyncio.create_subprocess_exec(*self._argv, stdin=asyncio.subprocess.DEVNULL)
            self._procs[slot] = proc
            code = await proc.wait()
            self._collector_retire(proc.pid)
            if self._stopping:
                return
            log.warning("worker %d (pid %d) exited with %s; restarting", slot, proc.pid, code)
            await asyncio.sleep(RESTART_DELAY_S)

    def _collector_retire(self, pid: int) -> None:
        try:
            self._collector.retire(pid)
        except FileNotFoundError:
            pass  # died before publishing anything

    async def _stop_workers(self) -> None:
        procs = [p for p in self._procs.values() if p.returncode is None]
        for p in procs:
            p.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), STOP_GRACE_S)
        except asyncio.TimeoutError:
            for p in procs:
                if p.returncode is None:
                    p.kill()
            await asyncio.gather(*(p.wait() for p in procs))

    async def _refresh(self) -> None:
        await self._collector.refresh([p.pid for p in self._procs.values() if p.returncode is None])

    async def _health(self) -> tuple[bool, str]:
        return await probe_kv(self._upstream.kv)

    async def _proxy_health(self) -> tuple[int, str, bytes]:
        if self.config.client_tls:
            return health_route_answer("/proxy/health", *await self._health())
        if self._self_channel is None:
            self._self_channel = grpc.aio.insecure_channel(self_probe_target(self.config.listen_addr))
        return health_route_answer("/proxy/health", *await probe_kv(rpc_pb2_grpc.KVStub(self._self_channel)))


def run_workers(config: ProxyConfig, argv: list[str]) -> int:
    """Run the supervisor until SIGTERM/SIGINT. `argv`: the `start` subcommand's arguments."""
    asyncio.run(WorkerSupervisor(config, argv).run())
    return 0

