"""GrpcServerMetrics' exposition, from its per-method counts (no server involved)."""

import time

from prometheus_client import CollectorRegistry, generate_latest

from monitoring.grpc_metrics import GO_CODE_NAMES, GrpcServerMetrics
from protos.etcdserverpb import rpc_pb2

WATCH = dict(grpc_method="Watch", grpc_service="etcdserverpb.Watch", grpc_type="bidi_stream")
RANGE = dict(grpc_method="Range", grpc_service="etcdserverpb.KV", grpc_type="unary")


def test_go_code_names_follow_the_numeric_codes():
    assert len(GO_CODE_NAMES) == 17
    assert (GO_CODE_NAMES[0], GO_CODE_NAMES[1], GO_CODE_NAMES[16]) == ("OK", "Canceled", "Unauthenticated")


def test_histogram_buckets_are_cumulative_and_go_formatted():
    registry = CollectorRegistry()
    metrics = GrpcServerMetrics(registry)
    stats = metrics._stats_for("unary", "etcdserverpb.KV", "Range")
    for start_offset in (0.001, 0.003, 0.7, 30.0):  # seconds before "now"
        stats.finish(0, start=time.perf_counter() - start_offset)
    text = generate_latest(registry).decode()
    assert 'grpc_server_handling_seconds_bucket{grpc_method="Range",grpc_service="etcdserverpb.KV",' \
           'grpc_type="unary",le="0.005"} 2.0' in text
    assert registry.get_sample_value("grpc_server_handling_seconds_bucket", {**RANGE, "le": "1"}) == 3
    assert registry.get_sample_value("grpc_server_handling_seconds_bucket", {**RANGE, "le": "10"}) == 3
    assert registry.get_sample_value("grpc_server_handling_seconds_bucket", {**RANGE, "le": "+Inf"}) == 4
    assert registry.get_sample_value("grpc_server_handled_total", {**RANGE, "grpc_code": "OK"}) == 4
    # Codes never seen are not exported (unless initialized).
    assert registry.get_sample_value("grpc_server_handled_total", {**RANGE, "grpc_code": "Unknown"}) is None


def test_initialize_exports_every_method_and_code_at_zero():
    registry = CollectorRegistry()
    GrpcServerMetrics(registry).initialize(rpc_pb2.DESCRIPTOR.services_by_name.values())
    assert registry.get_sample_value("grpc_server_started_total", WATCH) == 0
    assert registry.get_sample_value("grpc_server_handling_seconds_count", WATCH) == 0
    codes = {s.labels["grpc_code"] for f in registry.collect() for s in f.samples
             if f.name == "grpc_server_handled" and s.labels["grpc_method"] == "Range"}
    assert codes == set(GO_CODE_NAMES)
