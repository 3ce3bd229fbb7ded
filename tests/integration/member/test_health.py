"""grpc.health.v1.Health on the client URL, kvcluster against etcd 3.4.23: the server ("") is
SERVING, any other service is unknown (Check: NOT_FOUND; Watch: SERVICE_UNKNOWN), and a Watch
stays open after its first answer. Asked as grpc_health_probe does, with the protocol's own
names; the calls are counted in grpc_server_handled_total like every other."""

from __future__ import annotations

import urllib.request

import grpc
import pytest

from protos.healthpb import health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


@pytest.fixture(params=["etcd", "kv"])
def endpoint(request) -> str:
    """A one-member etcd 3.4.23 or kvcluster (one per test: both would use the same data dir)."""
    if request.param == "etcd":
        return request.getfixturevalue("etcd1").members[0].endpoint
    return request.getfixturevalue("member").endpoint


def test_health_check_and_watch_answer_as_etcd(endpoint):
    with grpc.insecure_channel(endpoint) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == SERVING
        with pytest.raises(grpc.RpcError) as unknown:
            health.Check(health_pb2.HealthCheckRequest(service="etcdserverpb.KV"), timeout=10)
        assert (unknown.value.code(), unknown.value.details()) == (grpc.StatusCode.NOT_FOUND, "unknown service")
        for service, first in (("", SERVING), ("etcdserverpb.KV", SERVICE_UNKNOWN)):
            watch = health.Watch(health_pb2.HealthCheckRequest(service=service), timeout=30)
            assert next(watch).status == first
            with pytest.raises(grpc.FutureTimeoutError):
                watch.exception(timeout=1)  # nothing more to say, and not ended
            watch.cancel()


def test_health_calls_are_counted_like_the_others(member):
    with grpc.insecure_channel(member.endpoint) as channel:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    with urllib.request.urlopen(f"{member.member.metrics_url}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert ('grpc_server_handled_total{grpc_code="OK",grpc_method="Check",'
            'grpc_service="grpc.health.v1.Health",grpc_type="unary"} 1.0') in text
