"""Watch load driver: many watch streams on one key, spread over connections and processes.

In-process: `await open_watchers(...)` then `await watchers.wait_events(n)`.
As a process (`python -m tests.integration.proxy_watch.watch_load --addr A --key K
--connections C --streams S --events N`): prints `READY <streams>` once every watch is created,
then `DONE <json>` once every stream has received N events (or `--timeout` expires).
`WatchLoad` runs several such processes and collects their results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

import grpc

from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc


class Watchers:
    """`connections` channels x `streams` Watch RPCs each, all watching `key` from now."""

    def __init__(self, addr: str, key: bytes, connections: int, streams: int):
        self.addr = addr
        self.key = key
        self.channels = [grpc.aio.insecure_channel(addr, options=[("grpc.use_local_subchannel_pool", 1)])
                         for _ in range(connections)]
        self.streams = streams
        self.calls: list = []
        self.events: list[list[tuple[int, bytes]]] = []
        self._tasks: list[asyncio.Task] = []
        self._stop = asyncio.Event()
        self.progress = asyncio.Event()

    async def open(self, timeout: float = 60.0, batch: int = 100) -> None:
        """Open every stream, `batch` at a time (each batch waits for its created responses).

        Batches keep the number of calls a grpc server has accepted but not yet handed to the
        application under grpc core's default limit (`grpc.server.max_pending_requests`, 1000);
        above it a Python server cancels new calls. See docs/proxy-watch.md.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        targets = [ch for ch in self.channels for _ in range(self.streams)]
        for start in range(0, len(targets), batch):
            created = []
            for ch in targets[start:start + batch]:
                i = len(self.calls)
                self.events.append([])
                fut = loop.create_future()
                created.append(fut)
                call = rpc_pb2_grpc.WatchStub(ch).Watch(self._requests())
                self.calls.append(call)
                self._tasks.append(loop.create_task(self._read(i, call, fut)))
            await asyncio.wait_for(asyncio.gather(*created), max(0.1, deadline - loop.time()))

    async def _requests(self):
        yield rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=self.key))
        await self._stop.wait()

    async def _read(self, i: int, call, created: asyncio.Future) -> None:
        out = self.events[i]
        try:
            async for resp in call:
                if resp.created:
                    created.set_result(resp.header.revision)
                if resp.canceled:
                    raise AssertionError(f"watch canceled: {resp}")
                for e in resp.events:
                    out.append((e.kv.mod_revision, e.kv.value))
                if resp.events:
                    self.progress.set()
        except grpc.aio.AioRpcError as e:
            if not created.done():
                created.set_exception(e)
            elif e.code() != grpc.StatusCode.CANCELLED:
                raise

    async def wait_events(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(len(e) >= count for e in self.events):
                return True
            self.progress.clear()
            try:
                await asyncio.wait_for(self.progress.wait(), max(0.01, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                pass
        return all(len(e) >= count for e in self.events)

    async def close(self) -> None:
        self._stop.set()
        for call in self.calls:
            call.cancel()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for ch in self.channels:
            await ch.close()


async def _main(args) -> None:
    w = Watchers(args.addr, args.key.encode(), args.connections, args.streams)
    await w.open(args.timeout)
    print(f"READY {len(w.calls)}", flush=True)
    ok = await w.wait_events(args.events, args.timeout)
    counts = [len(e) for e in w.events]
    first = w.events[0]
    identical = all(e == first for e in w.events)
    print("DONE " + json.dumps({"ok": ok, "streams": len(counts), "min": min(counts), "max": max(counts),
                                "identical": identical, "revisions": [r for r, _ in first]}), flush=True)
    await w.close()


class WatchLoad:
    """Several driver processes; `start()` waits for all to be READY, `results()` for all DONE."""

    def __init__(self, addr: str, key: str, processes: int, connections: int, streams: int, events: int,
                 timeout: float = 120.0):
        argv = [sys.executable, "-m", "tests.integration.proxy_watch.watch_load", "--addr", addr, "--key", key,
                "--connections", str(connections), "--streams", str(streams), "--events", str(events),
                "--timeout", str(timeout)]
        env = {**os.environ, "PYTHONPATH": os.getcwd()}
        self.procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env) for _ in range(processes)]

    def start(self) -> int:
        total = 0
        for p in self.procs:
            line = p.stdout.readline()
            if not line.startswith("READY"):
                raise RuntimeError(f"watch driver failed: {line!r}")
            total += int(line.split()[1])
        return total

    def results(self) -> list[dict]:
        out = []
        for p in self.procs:
            line = p.stdout.readline()
            if not line.startswith("DONE"):
                raise RuntimeError(f"watch driver failed: {line!r}")
            out.append(json.loads(line[5:]))
        return out

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--events", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=120.0)
    asyncio.run(_main(parser.parse_args()))
