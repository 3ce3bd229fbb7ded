"""Unary gRPC load through h2load (Debian `nghttp2-client`), with gRPC status accounted for.

A gRPC unary call is an HTTP/2 POST whose body is a 5-byte prefix (flag 0, big-endian uint32
length) and the serialized request. h2load sends one fixed body per process, so key variety comes
from running several h2load processes, one body each (`plan_runs`).

h2load counts HTTP status only, and a gRPC error is HTTP 200 too. Two checks keep errors from
passing as throughput:
  * a failed gRPC call is "trailers-only": it carries no DATA bytes. The `traffic:` line gives the
    DATA bytes received; divided by the size of a good response (measured by `StatusSampler`) it
    bounds how many responses carried a message;
  * `StatusSampler` sends the same body with a grpc client while h2load runs and records the
    status codes, so the error text (e.g. "too many requests") is visible.

Latency percentiles come from h2load's `--log-file`: one line per request, tab-separated
(start µs since epoch, HTTP status, µs until the end of the response).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import resource
import struct
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc

from .histogram import LatencyHistogram

H2LOAD_BIN = "h2load"
# Response sizes may jitter by a few bytes (varint revisions grow); below this fraction of the
# requests, a shortfall of DATA bytes is attributed to jitter, not to errors.
DATA_JITTER = 0.005


def grpc_frame(serialized: bytes) -> bytes:
    """The length-prefixed gRPC message body for one uncompressed request."""
    return b"\x00" + struct.pack(">I", len(serialized)) + serialized


@dataclass
class H2loadRun:
    """One h2load process: `conns` connections × `streams` concurrent streams to one endpoint.

    Exactly one of `total` (requests) and `duration` (seconds) is set. `rps_per_conn` caps each
    connection's request rate (h2load `--rps`); None means as fast as possible.
    """

    endpoint: str  # host:port
    path: str      # /etcdserverpb.KV/Put
    body: bytes    # already framed with grpc_frame
    conns: int
    streams: int
    total: int | None = None
    duration: float | None = None
    rps_per_conn: float | None = None

    def argv(self, body_file: str, log_file: str) -> list[str]:
        args = [H2LOAD_BIN, "-c", str(self.conns), "-m", str(self.streams), "-t", "1",
                "-d", body_file, "--log-file", log_file,
                "-H", "content-type:application/grpc", "-H", "te:trailers"]
        if self.duration is not None:
            args += ["-D", f"{self.duration:g}"]
        else:
            args += ["-n", str(self.total)]
        if self.rps_per_conn:
            args += ["--rps", f"{self.rps_per_conn:g}"]
        return args + [f"http://{self.endpoint}{self.path}"]


@dataclass
class H2loadSummary:
    """The figures h2load prints at the end of a run."""

    finished_s: float
    req_per_s: float
    started: int  # sent; with -D, those still in flight at the end are started but not done
    done: int
    succeeded: int
    failed: int
    status_2xx: int
    data_bytes: int


_FINISHED = re.compile(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s")
_REQUESTS = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed")
_STATUS = re.compile(r"status codes: (\d+) 2xx")
_TRAFFIC = re.compile(r"traffic: .*?, .*? headers .*?, [\d.]+\w*B \((\d+)\) data")


def parse_summary(text: str) -> H2loadSummary:
    """Parse h2load's stdout; raises ValueError naming the missing line if it is not there."""
    def need(rx: re.Pattern) -> re.Match:
        m = rx.search(text)
        if not m:
            raise ValueError(f"h2load output has no line matching {rx.pattern!r}:\n{text[-2000:]}")
        return m

    fin, req, st, tr = need(_FINISHED), need(_REQUESTS), need(_STATUS), need(_TRAFFIC)
    finished = float(fin.group(1)) / (1000 if fin.group(2) == "ms" else 1)
    return H2loadSummary(finished_s=finished, req_per_s=float(fin.group(3)), started=int(req.group(2)),
                         done=int(req.group(3)),
                         succeeded=int(req.group(4)), failed=int(req.group(5)),
                         status_2xx=int(st.group(1)), data_bytes=int(tr.group(1)))


@dataclass
class RequestLog:
    """Per-request figures read from h2load `--log-file` files."""

    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    first_start_us: int | None = None
    last_end_us: int | None = None
    http_ok: int = 0
    failed: int = 0

    def read(self, path: str) -> None:
        """Add one log file: only HTTP 200 responses go into the latency histogram."""
        with open(path) as f:
            for line in f:
                cols = line.split("\t")
                if len(cols) < 3:
                    continue
                start, status, took = int(cols[0]), int(cols[1]), int(cols[2])
                if status != 200:
                    self.failed += 1
                    continue
                self.http_ok += 1
                self.latency.record(took)
                end = start + took
                self.first_start_us = start if self.first_start_us is None else min(self.first_start_us, start)
                self.last_end_us = end if self.last_end_us is None else max(self.last_end_us, end)

    @property
    def span_s(self) -> float:
        """Seconds from the first request's start to the last response's end."""
        if self.first_start_us is None:
            return 0.0
        return max(1e-6, (self.last_end_us - self.first_start_us) / 1e6)


class StatusSampler:
    """Sends `body` to `endpoint` + `path` with a grpc client every `interval` s, in a thread.

    Records the status codes and the sizes of good responses (5-byte prefix included), so that
    the DATA bytes h2load received can be turned into a count of good responses.
    """

    def __init__(self, endpoint: str, path: str, body: bytes, interval: float = 0.1):
        self.endpoint, self.path, self.interval = endpoint, path, interval
        self.payload = body[5:]
        self.codes: Counter[str] = Counter()
        self.details: Counter[str] = Counter()
        self.ok_sizes: list[int] = []
        self._stop, self._first = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with grpc.insecure_channel(self.endpoint) as ch:
            call = ch.unary_unary(self.path)  # raw bytes in and out
            while True:
                self.sample_once(call)
                self._first.set()
                if self._stop.wait(self.interval):
                    return

    def sample_once(self, call) -> None:
        try:
            resp = call(self.payload, timeout=5)
            self.codes["OK"] += 1
            self.ok_sizes.append(5 + len(resp))
        except grpc.RpcError as e:
            self.codes[e.code().name] += 1
            self.details[f"{e.code().name}: {e.details()}"] += 1

    def __enter__(self) -> "StatusSampler":
        """Start sampling; returns after the first sample, so that it precedes the load (response
        sizes only grow as revisions do, and the smallest size seen is the one used)."""
        self._thread.start()
        self._first.wait(timeout=10)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def min_ok_size(self) -> int | None:
        """The smallest good response seen. The smallest, not the mean: sizes drift during a run
        (a revision's varint grows a byte at 2**14, 2**21, ...), and a mean above the early
        responses' size would count them as errors."""
        return min(self.ok_sizes) if self.ok_sizes else None


def grpc_errors_from_bytes(http_ok: int, data_bytes: int, ok_size: float | None) -> int:
    """How many of `http_ok` responses carried no gRPC message (so were gRPC errors).

    Good responses are about `ok_size` DATA bytes each and errors none. A shortfall within
    DATA_JITTER of the requests is put down to size jitter. Without any good sample
    (`ok_size` None), and with no DATA at all, every response is an error.
    """
    if http_ok == 0:
        return 0
    if ok_size is None:
        return http_ok if data_bytes == 0 else 0
    carried = data_bytes / ok_size
    missing = http_ok - carried
    return 0 if missing <= DATA_JITTER * http_ok else min(http_ok, round(missing))


def plan_runs(endpoints: list[str], path: str, bodies: list[bytes], procs: int, conns: int, clients: int,
              total: int | None, duration: float | None, rate: float | None) -> list[H2loadRun]:
    """Split one load over `procs` h2load processes (at least one per endpoint and per body, at
    most one per connection).

    Process i targets endpoints[i % E] with bodies[i % B]. Connections, requests and rate are split
    as evenly as whole numbers allow; each connection carries ceil(clients / conns) streams.
    """
    procs = max(1, min(conns, max(procs, len(endpoints), len(bodies))))
    streams = max(1, math.ceil(clients / conns))
    runs = []
    for i in range(procs):
        c = conns // procs + (1 if i < conns % procs else 0)
        n = None if total is None else max(1, total // procs + (1 if i < total % procs else 0))
        runs.append(H2loadRun(endpoints[i % len(endpoints)], path, bodies[i % len(bodies)], c, streams,
                              total=n, duration=duration, rps_per_conn=(rate / conns) if rate else None))
    return runs


@dataclass
class H2loadOutcome:
    """Merged figures of concurrent h2load processes, plus what the status checks found."""

    summaries: list[H2loadSummary]
    log: RequestLog
    grpc_errors: int
    sampled_codes: dict[str, int]   # status name -> count, from the StatusSamplers
    sampled_errors: dict[str, int]  # "CODE: details" -> count
    ok_by_path: dict[str, int]      # gRPC method path -> good responses
    cpu_s: float                    # CPU seconds the h2load processes used

    @property
    def generator_busy(self) -> float:
        """Mean share of one core each h2load process used over the run. Near 1.0 the load
        generator itself may be the bottleneck; well below, the target is."""
        return self.cpu_s / (self.log.span_s * len(self.summaries)) if self.summaries else 0.0

    @property
    def ok(self) -> int:
        return self.log.http_ok - self.grpc_errors

    @property
    def errors(self) -> int:
        return self.log.failed + self.grpc_errors

    @property
    def sampled(self) -> int:
        """Calls the StatusSamplers made alongside h2load (they reach the target too)."""
        return sum(self.sampled_codes.values())

    @property
    def started(self) -> int:
        """Requests h2load sent (done or still in flight when it stopped)."""
        return sum(s.started for s in self.summaries)

    @property
    def h2load_req_per_s(self) -> float:
        """The sum of the req/s each h2load process printed (h2load's own figure)."""
        return sum(s.req_per_s for s in self.summaries)


def _children_cpu_s() -> float:
    """User + system CPU seconds of this process's reaped children so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _reap(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def _remove(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def run_h2load(runs: list[H2loadRun], workdir: str, timeout: float = 600.0) -> H2loadOutcome:
    """Run every h2load process at once, wait for all, and merge their figures.

    A StatusSampler per distinct (endpoint, path, body) runs alongside. Raises RuntimeError with
    h2load's output if a process fails. No h2load process outlives this call.
    """
    os.makedirs(workdir, exist_ok=True)
    stamp = f"{os.getpid()}-{time.monotonic_ns()}"
    samplers: dict[tuple, StatusSampler] = {}
    for r in runs:
        samplers.setdefault((r.endpoint, r.path, r.body), StatusSampler(r.endpoint, r.path, r.body))
    files = [(os.path.join(workdir, f"body-{stamp}-{i}.bin"), os.path.join(workdir, f"h2load-{stamp}-{i}.tsv"))
             for i in range(len(runs))]
    for r, (body_file, _) in zip(runs, files):
        with open(body_file, "wb") as f:
            f.write(r.body)
    procs: list[subprocess.Popen] = []
    with contextlib.ExitStack() as stack:
        stack.callback(_remove, [path for pair in files for path in pair])
        for sampler in samplers.values():
            stack.enter_context(sampler)
        stack.callback(_reap, procs)
        cpu_before = _children_cpu_s()
        for r, (body_file, log_file) in zip(runs, files):
            try:
                procs.append(subprocess.Popen(r.argv(body_file, log_file), stdout=subprocess.PIPE,
                                              stderr=subprocess.STDOUT, text=True))
            except FileNotFoundError:
                raise RuntimeError(f"{H2LOAD_BIN} not found: install Debian's nghttp2-client") from None
        outputs = [p.communicate(timeout=timeout)[0] for p in procs]
        cpu_s = _children_cpu_s() - cpu_before
        for p, out in zip(procs, outputs):
            if p.returncode != 0:
                raise RuntimeError(f"h2load exited with {p.returncode}:\n{out[-2000:]}")
        log = RequestLog()
        for _, log_file in files:
            log.read(log_file)
    summaries = [parse_summary(out) for out in outputs]
    ok_by_path: Counter[str] = Counter()
    grpc_errors = 0
    # Per distinct body: its responses' DATA bytes against the sampled size of a good response.
    for key, sampler in samplers.items():
        idx = [i for i, r in enumerate(runs) if (r.endpoint, r.path, r.body) == key]
        http_ok = sum(summaries[i].status_2xx for i in idx)
        data = sum(summaries[i].data_bytes for i in idx)
        errors = grpc_errors_from_bytes(http_ok, data, sampler.min_ok_size)
        grpc_errors += errors
        ok_by_path[key[1]] += http_ok - errors
    codes, details = Counter(), Counter()
    for s in samplers.values():
        codes.update(s.codes)
        details.update(s.details)
    return H2loadOutcome(summaries, log, min(grpc_errors, log.http_ok), dict(codes), dict(details),
                         dict(ok_by_path), cpu_s)
