"""Concurrent puts and linearizable gets through every member, across a kill -9 of the leader:
the recorded history has no linearizability anomaly (see linearizability.py)."""

from __future__ import annotations

import random
import threading
import time

import grpc

from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc

from .linearizability import UNKNOWN, Op, violations

KEYS = [b"lin/0", b"lin/1", b"lin/2"]


class Client(threading.Thread):
    """Writes unique values (writer) or reads (reader) random keys through random members."""

    def __init__(self, spec, name: str, writer: bool, history: list[Op], stop: threading.Event):
        super().__init__(daemon=True, name=name)
        self.channels = [grpc.insecure_channel(f"127.0.0.1:{m.client_port}") for m in spec.members]
        self.stubs = [rpc_pb2_grpc.KVStub(ch) for ch in self.channels]
        self.writer = writer
        self.history = history
        self.stop_flag = stop
        self.rng = random.Random(name)

    def run(self) -> None:
        n = 0
        while not self.stop_flag.is_set():
            key, stub = self.rng.choice(KEYS), self.rng.choice(self.stubs)
            t0 = time.monotonic()
            try:
                if self.writer:
                    value = b"%s-%d" % (self.name.encode(), n)
                    n += 1
                    try:
                        stub.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=2.0)
                    except grpc.RpcError:  # it may still be applied later: outcome unknown
                        self.history.append(Op("put", key, value, t0, UNKNOWN, ok=False))
                        time.sleep(0.02)
                        continue
                    self.history.append(Op("put", key, value, t0, time.monotonic()))
                else:
                    resp = stub.Range(rpc_pb2.RangeRequest(key=key), timeout=2.0)
                    value = resp.kvs[0].value if resp.kvs else None
                    self.history.append(Op("get", key, value, t0, time.monotonic()))
            except grpc.RpcError:
                time.sleep(0.02)

    def close(self) -> None:
        self.join(10)
        for ch in self.channels:
            ch.close()


def test_history_across_a_leader_crash_is_linearizable(kv3):
    leader = kv3.wait_leader()
    history: list[Op] = []
    stop = threading.Event()
    clients = [Client(kv3.spec, f"w{i}", True, history, stop) for i in range(3)]
    clients += [Client(kv3.spec, f"r{i}", False, history, stop) for i in range(3)]
    for c in clients:
        c.start()
    try:
        time.sleep(2.0)  # a load phase, not a wait for a condition
        kv3.kill(leader)
        kv3.wait_leader([n for n in kv3.clients if n != leader])
        time.sleep(1.0)
        kv3.restart(leader)
        kv3.wait_leader()
        time.sleep(1.0)
    finally:
        stop.set()
        for c in clients:
            c.close()
    puts = sum(1 for op in history if op.kind == "put" and op.ok)
    gets = sum(1 for op in history if op.kind == "get")
    print(f"history: {puts} puts acknowledged, {gets} gets")
    assert puts > 50 and gets > 50
    found = violations(history)
    assert not found, "\n".join(found[:10])
