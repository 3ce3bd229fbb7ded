"""The committed generated protobuf modules are exactly what protos/generate.py produces."""

import filecmp

from protos import generate

GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def test_regenerating_changes_nothing(tmp_path):
    generate.generate(tmp_path)
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.name.endswith(GENERATED_SUFFIXES))
    committed = sorted(
        p.relative_to(generate.ROOT) for p in (generate.ROOT / "protos").rglob("*") if p.name.endswith(GENERATED_SUFFIXES)
    )
    assert fresh == committed
    for rel in fresh:
        assert filecmp.cmp(tmp_path / rel, generate.ROOT / rel, shallow=False), f"{rel} is stale: run python protos/generate.py"


def test_wire_names_and_numbers_match_etcd():
    from protos.etcdserverpb import rpc_pb2
    from protos.mvccpb import kv_pb2

    assert rpc_pb2.RangeRequest.DESCRIPTOR.fields_by_name["max_create_revision"].number == 13
    assert rpc_pb2.Compare.DESCRIPTOR.fields_by_name["range_end"].number == 64
    assert rpc_pb2.WatchResponse.DESCRIPTOR.fields_by_name["events"].number == 11
    assert rpc_pb2.StatusResponse.DESCRIPTOR.fields_by_name["isLearner"].number == 10
    assert kv_pb2.KeyValue.DESCRIPTOR.fields_by_name["lease"].number == 6
    assert [s.full_name for s in rpc_pb2.DESCRIPTOR.services_by_name.values()] == [
        "etcdserverpb.KV", "etcdserverpb.Watch", "etcdserverpb.Lease",
        "etcdserverpb.Cluster", "etcdserverpb.Maintenance", "etcdserverpb.Auth",
    ]
