"""bench.metrics: counters read from a Prometheus page (the ReadIndex batching figure)."""

from bench.metrics import counter_sum, handled_total

PAGE = """# HELP etcd_server_read_indexes_total rounds
# TYPE etcd_server_read_indexes_total counter
etcd_server_read_indexes_total 40.0
# HELP etcd_server_linearizable_reads_total reads
# TYPE etcd_server_linearizable_reads_total counter
etcd_server_linearizable_reads_total 360.0
# HELP grpc_server_handled_total handled
# TYPE grpc_server_handled_total counter
grpc_server_handled_total{grpc_code="OK",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 7.0
grpc_server_handled_total{grpc_code="Unavailable",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 2.0
grpc_server_handled_total{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"} 5.0
"""


def test_counter_sum_reads_a_family_by_its_name_with_or_without_total():
    assert counter_sum(PAGE, "etcd_server_read_indexes") == 40.0
    assert counter_sum(PAGE, "etcd_server_linearizable_reads") == 360.0
    assert counter_sum(PAGE, "grpc_server_handled") == 14.0  # every label set


def test_counter_sum_is_none_for_a_family_the_page_lacks():
    assert counter_sum(PAGE, "etcd_server_proposals_failed") is None


def test_handled_total_sums_one_method_over_codes():
    assert handled_total(PAGE, "Range") == 9.0
    assert handled_total(PAGE, "Put") == 5.0
