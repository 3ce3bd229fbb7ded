"""How gRPC core does its socket I/O in our server processes. `configure()` must run before the
process first imports `grpc`: core reads GRPC_EXPERIMENTS once, when it loads.

grpcio 1.80+ moves every TCP read and write onto EventEngine's own thread pool by default. Our
processes are single event loops under one GIL, so each peer message or client call then costs
extra thread wake-ups: on this 2-core machine a member did ~49 voluntary context switches per
1-client Put as leader. With the EventEngine client and listener experiments off, core falls back
to its iomgr endpoints, read by the thread that polls the completion queue (grpc.aio's poller)
and written inline by the caller: ~32 switches, ~15% less CPU per Put, ~1 ms lower Put p50
(docs/benchmarks.md). An operator's own GRPC_EXPERIMENTS setting wins.
"""

from __future__ import annotations

import os

# iomgr endpoints, polled by the thread that drives the completion queue
POLLER_ENDPOINTS = "-event_engine_client,-event_engine_listener"


def configure() -> None:
    """Turn the EventEngine endpoints off for this process unless GRPC_EXPERIMENTS is set."""
    os.environ.setdefault("GRPC_EXPERIMENTS", POLLER_ENDPOINTS)
