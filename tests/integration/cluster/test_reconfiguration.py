"""Membership changes on real kvcluster processes: grow 3 -> 5 and shrink back under write load,
replace a member, etcd's refusals of unsafe changes, and the membership a restarted member (or
one caught up by a leader snapshot) reports."""

from __future__ import annotations

import os
import re
import shutil
import time
import urllib.request

import grpc
import pytest

from cluster.launch import KVCLUSTER, ClusterSpec, Member, free_port, port_open, wait_until
from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.support.kvstack import start_kv_cluster

from .cluster_client import ClusterView, FailoverWriter

UNHEALTHY = "etcdserver: unhealthy cluster"
NOT_READY = "etcdserver: can only promote a learner member which is in sync with leader"


def new_member(base: str, name: str) -> Member:
    return Member(name, free_port(), free_port(), free_port(), os.path.join(base, f"{name}.data"))


def cluster_stub(m: Member) -> rpc_pb2_grpc.ClusterStub:
    return rpc_pb2_grpc.ClusterStub(grpc.insecure_channel(m.endpoint))


def member_list(m: Member) -> list[rpc_pb2.Member]:
    return list(cluster_stub(m).MemberList(rpc_pb2.MemberListRequest(), timeout=5).members)


def retry(call, retry_on: tuple[str, ...], timeout: float = 60.0):
    """`call()` until it does not fail with one of `retry_on` (etcd's transient refusals:
    peers not yet connected for 5 s, a learner still catching up, a leader change)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except grpc.RpcError as exc:
            transient = exc.details() in retry_on or exc.code() in (grpc.StatusCode.UNAVAILABLE,
                                                                    grpc.StatusCode.DEADLINE_EXCEEDED)
            if not transient or time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def start_joining(view: ClusterView, m: Member, members: list[Member], names: dict[int, str] | None = None):
    """Start `m` with --initial-cluster-state existing and the --initial-cluster `member add`
    prints (every member's name=peer URL)."""
    initial = ",".join(f"{x.name}={x.peer_url}" for x in members)
    argv = [*KVCLUSTER, "--name", m.name, "--data-dir", m.data_dir,
            "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", initial, "--initial-cluster-state", "existing",
            "--initial-cluster-token", view.spec.token, "--listen-metrics-urls", m.metrics_url,
            *view.spec.extra_flags]
    view.procs.start(f"kv-{m.name}", argv)
    wait_until(lambda: port_open(m.client_port), 60,
               f"{m.name} joined and serving\n{view.procs.log_tail('kv-' + m.name)}")


def add_and_promote(via: Member, view: ClusterView, m: Member, members: list[Member]) -> int:
    stub = cluster_stub(via)
    resp = retry(lambda: stub.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=[m.peer_url], isLearner=True),
                                        timeout=15), (UNHEALTHY,))
    assert resp.member.isLearner and list(resp.member.peerURLs) == [m.peer_url]
    assert resp.member.ID in [x.ID for x in resp.members]
    start_joining(view, m, [*members, m])
    # A learner serves only serializable reads and Status (etcd 3.4's learner interceptor).
    kv = rpc_pb2_grpc.KVStub(grpc.insecure_channel(m.endpoint))
    with pytest.raises(grpc.RpcError) as exc:
        kv.Put(rpc_pb2.PutRequest(key=b"learner", value=b"v"), timeout=15)
    assert (exc.value.code(), exc.value.details()) == (grpc.StatusCode.UNAVAILABLE,
                                                       "etcdserver: rpc not supported for learner")
    with pytest.raises(grpc.RpcError):
        kv.Range(rpc_pb2.RangeRequest(key=b"k"), timeout=15)
    kv.Range(rpc_pb2.RangeRequest(key=b"k", serializable=True), timeout=15)
    rpc_pb2_grpc.MaintenanceStub(grpc.insecure_channel(m.endpoint)).Status(rpc_pb2.StatusRequest(), timeout=15)
    retry(lambda: stub.MemberPromote(rpc_pb2.MemberPromoteRequest(ID=resp.member.ID), timeout=15),
          (NOT_READY,), timeout=120)
    return resp.member.ID


def remove(via: Member, mid: int) -> None:
    stub = cluster_stub(via)
    try:
        retry(lambda: stub.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=mid), timeout=15), (UNHEALTHY,))
    except grpc.RpcError as exc:  # an attempt that timed out may have removed it after all
        if exc.details() != "etcdserver: member not found" or mid in {x.ID for x in member_list(via)}:
            raise


def ids_by_name(m: Member) -> dict[str, int]:
    """{} while `m` cannot be reached (gRPC may still hold a failed connection to its port)."""
    try:
        return {x.name: x.ID for x in member_list(m)}
    except grpc.RpcError:
        return {}


def promotions(m: Member) -> float:
    with urllib.request.urlopen(f"{m.metrics_url}/metrics", timeout=10) as resp:
        found = re.search(r"^etcd_server_learner_promote_successes (\S+)$", resp.read().decode(), re.M)
    assert found, f"{m.name}: no etcd_server_learner_promote_successes"
    return float(found.group(1))


def hash_kv(m: Member, revision: int) -> int:
    stub = rpc_pb2_grpc.MaintenanceStub(grpc.insecure_channel(m.endpoint))
    return stub.HashKV(rpc_pb2.HashKVRequest(revision=revision), timeout=30).hash


def test_grow_to_five_shrink_to_three_and_replace_a_member_under_load(kv3, tmp_path):
    spec = kv3.spec
    m1, m2, m3 = spec.members
    kv3.wait_leader()
    writers = [FailoverWriter(spec, i) for i in range(2)]
    for w in writers:
        w.start()
    try:
        members = [m1, m2, m3]
        added = {}
        for name in ("m4", "m5"):  # grow 3 -> 5: learner, join, promote once caught up
            m = new_member(str(tmp_path), name)
            added[name] = add_and_promote(m1, kv3, m, members)
            members.append(m)
        wait_until(lambda: [x.isLearner for x in member_list(m2)] == [False] * 5, 30,
                   "m2 to list 5 voters")  # MemberList is not linearizable (as etcd 3.4's)
        wait_until(lambda: all(x.name for x in member_list(m1)), 30, "all 5 members published")
        # counted by the member that led each promotion (etcd_server_learner_promote_successes)
        assert sum(promotions(m) for m in members) == 2

        for name in ("m4", "m5"):  # shrink back to 3; a removed member stops by itself, exit 0
            remove(m2, added[name])
            proc = kv3.procs.procs[f"kv-{name}"]
            wait_until(lambda: proc.poll() is not None, 30, f"removed {name} to exit")
            assert proc.returncode == 0
            assert "the member has been permanently removed from the cluster" in kv3.procs.log_tail(f"kv-{name}", 400)
        assert sorted(x.name for x in member_list(m3)) == ["m1", "m2", "m3"]

        # Replace m3: remove it, wipe its data dir, add it back as a new member, rejoin.
        old_id = ids_by_name(m1)["m3"]
        remove(m1, old_id)
        proc = kv3.procs.procs["kv-m3"]
        wait_until(lambda: proc.poll() is not None, 30, "removed m3 to exit")
        shutil.rmtree(m3.data_dir)
        stub = cluster_stub(m1)
        resp = retry(lambda: stub.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=[m3.peer_url]), timeout=15),
                     (UNHEALTHY,))
        assert resp.member.ID != old_id and not resp.member.isLearner
        start_joining(kv3, m3, [m1, m2, m3])
        wait_until(lambda: ids_by_name(m3).get("m3") == resp.member.ID, 60, "m3 rejoined and published")
        rejoined = sum(len(w.acked) for w in writers)  # the writers keep going across the rejoin
        wait_until(lambda: sum(len(w.acked) for w in writers) >= rejoined + 20, 30,
                   "writes acknowledged after m3 rejoined")
    finally:
        for w in writers:
            w.stop()
    acked = [k for w in writers for k in w.acked]
    assert len(acked) > 20
    assert not [s for w in writers for s in w.stale_reads]
    revision = kv3.wait_converged(60)
    for m in (m1, m2, m3):
        kv = rpc_pb2_grpc.KVStub(grpc.insecure_channel(m.endpoint))
        got = kv.Range(rpc_pb2.RangeRequest(key=b"load/", range_end=b"load0", keys_only=True,
                                            serializable=True), timeout=30)
        missing = set(acked) - {x.key for x in got.kvs}
        assert not missing, f"{m.name} lost {len(missing)} acknowledged writes"
    assert len({hash_kv(m, revision) for m in (m1, m2, m3)}) == 1


def test_unsafe_changes_are_refused_with_etcds_errors(kv3, tmp_path):
    spec = kv3.spec
    m1, m2, m3 = spec.members
    kv3.wait_leader()
    stub = cluster_stub(m1)
    ids = ids_by_name(m1)

    # A learner that never started is not in sync: promoting it is refused.
    learner = new_member(str(tmp_path), "m4")
    resp = retry(lambda: stub.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=[learner.peer_url], isLearner=True),
                                        timeout=15), (UNHEALTHY,))
    with pytest.raises(grpc.RpcError) as exc:
        stub.MemberPromote(rpc_pb2.MemberPromoteRequest(ID=resp.member.ID), timeout=15)
    assert exc.value.details() == NOT_READY
    with pytest.raises(grpc.RpcError) as exc:  # etcd 3.4 allows one learner
        stub.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=[f"http://127.0.0.1:{free_port()}"], isLearner=True),
                       timeout=15)
    assert exc.value.details() == "etcdserver: too many learner members in cluster"
    # (as etcd, the sync check comes first and applies to voters too: retry while m2 lags)
    with pytest.raises(grpc.RpcError) as exc:
        retry(lambda: stub.MemberPromote(rpc_pb2.MemberPromoteRequest(ID=ids["m2"]), timeout=15), (NOT_READY,))
    assert exc.value.details() == "etcdserver: can only promote a learner member"
    with pytest.raises(grpc.RpcError) as exc:
        stub.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=[m2.peer_url]), timeout=15)
    assert exc.value.details() == "etcdserver: Peer URLs already exists"
    retry(lambda: stub.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=resp.member.ID), timeout=15), (UNHEALTHY,))
    for call in (lambda: stub.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=resp.member.ID), timeout=15),
                 lambda: stub.MemberUpdate(rpc_pb2.MemberUpdateRequest(ID=resp.member.ID,
                                                                      peerURLs=[learner.peer_url]), timeout=15)):
        with pytest.raises(grpc.RpcError) as exc:
            call()
        assert exc.value.details() == "etcdserver: member not found"
        assert exc.value.code() == grpc.StatusCode.NOT_FOUND

    # With m3 down: adding a voter, and removing a live voter, would endanger the quorum.
    leader = kv3.wait_leader()
    down = next(m for m in (m2, m3) if m.name != leader)
    live = next(m for m in (m1, m2, m3) if m.name not in (leader, down.name))
    kv3.kill(down.name)
    # Probe with an add that would fail its later check anyway (a used peer URL), until the
    # leader noticed; then a real add is refused too.
    wait_until(lambda: _refused(lambda: stub.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=[live.peer_url]),
                                                       timeout=15)) == UNHEALTHY, 30, "the leader to see a member down")
    assert _refused(lambda: stub.MemberAdd(
        rpc_pb2.MemberAddRequest(peerURLs=[f"http://127.0.0.1:{free_port()}"]), timeout=15)) == UNHEALTHY
    assert _refused(lambda: stub.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=ids[live.name]), timeout=15)) \
        == UNHEALTHY
    # Removing the member that is down is safe; it is refused when it comes back.
    stub.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=ids[down.name]), timeout=15)
    assert sorted(x.name for x in member_list(live)) == sorted([leader, live.name])
    proc = kv3.procs.start(f"kv-{down.name}", [*KVCLUSTER, *spec.argv(down)])
    wait_until(lambda: proc.poll() is not None, 60, f"removed {down.name} to exit after restart")
    assert proc.returncode == 0
    assert "the member has been permanently removed from the cluster" in kv3.procs.log_tail(f"kv-{down.name}", 400)


def _refused(call) -> str | None:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.details()
    return None


def test_restarted_and_snapshot_caught_up_members_report_the_current_membership(procs, tmp_path):
    spec = start_kv_cluster(procs, ClusterSpec.allocate(
        str(tmp_path), 3, extra_flags=["--log-level", "info", "--snapshot-count", "50",
                                       "--experimental-snapshot-catchup-entries", "10"]))
    view = ClusterView(procs, spec)
    m1, m2, m3 = spec.members
    try:
        view.wait_leader()
        m4 = new_member(str(tmp_path), "m4")
        stub = cluster_stub(m1)
        added = retry(lambda: stub.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=[m4.peer_url], isLearner=True),
                                             timeout=15), (UNHEALTHY,)).member.ID
        # A membership change m2 misses (an update needs no healthy cluster), then enough writes
        # for the leader to compact its log past it.
        view.kill("m2")
        moved = f"http://127.0.0.1:{free_port()}"
        retry(lambda: stub.MemberUpdate(rpc_pb2.MemberUpdateRequest(ID=added, peerURLs=[moved]), timeout=15), ())
        kv = rpc_pb2_grpc.KVStub(grpc.insecure_channel(m1.endpoint))
        for i in range(200):
            kv.Put(rpc_pb2.PutRequest(key=b"k%d" % i, value=b"v"), timeout=15)
        view.restart("m2")
        expected = sorted((x.ID, x.isLearner, tuple(x.peerURLs)) for x in member_list(m1))
        assert len(expected) == 4 and (added, True, (moved,)) in expected
        wait_until(lambda: sorted((x.ID, x.isLearner, tuple(x.peerURLs)) for x in member_list(m2)) == expected,
                   60, "m2 to learn the membership it missed")
        assert "installed leader snapshot" in procs.log_tail("kv-m2", 400)
        # Restarted after installing the leader's image, m2 is still m2 (the image carries the
        # leader's membership record: the member's own ID is kept outside the store).
        m2_id = view.clients["m2"].status(timeout=5).header.member_id
        view.kill("m2")
        view.restart("m2")
        assert view.clients["m2"].status(timeout=5).header.member_id == m2_id
        assert sorted((x.ID, x.isLearner, tuple(x.peerURLs)) for x in member_list(m2)) == expected
        view.kill("m1")  # and a plain restart keeps it
        view.restart("m1")
        assert sorted((x.ID, x.isLearner, tuple(x.peerURLs)) for x in member_list(m1)) == expected
    finally:
        view.close()


def test_removing_the_leader_through_a_follower(kv3):
    spec = kv3.spec
    leader = kv3.wait_leader()
    follower = next(m for m in spec.members if m.name != leader)
    ids = ids_by_name(follower)
    remove(follower, ids[leader])
    proc = kv3.procs.procs[f"kv-{leader}"]
    wait_until(lambda: proc.poll() is not None, 30, "the removed leader to exit")
    assert proc.returncode == 0
    rest = [m.name for m in spec.members if m.name != leader]
    new_leader = kv3.wait_leader(among=rest, timeout=30)
    assert new_leader != leader
    kv = rpc_pb2_grpc.KVStub(grpc.insecure_channel(follower.endpoint))
    retry(lambda: kv.Put(rpc_pb2.PutRequest(key=b"after", value=b"v"), timeout=15), ())
    assert sorted(x.name for x in member_list(follower)) == sorted(rest)


def test_joining_without_being_added_is_refused_with_a_clear_message(kv3, tmp_path):
    spec = kv3.spec
    m4 = new_member(str(tmp_path), "m4")
    initial = ",".join(f"{m.name}={m.peer_url}" for m in [*spec.members, m4])
    argv = [*KVCLUSTER, "--name", "m4", "--data-dir", m4.data_dir,
            "--listen-client-urls", m4.client_url, "--advertise-client-urls", m4.client_url,
            "--listen-peer-urls", m4.peer_url, "--initial-advertise-peer-urls", m4.peer_url,
            "--initial-cluster", initial, "--initial-cluster-state", "existing",
            "--initial-cluster-token", spec.token]
    proc = kv3.procs.start("kv-m4", argv)
    wait_until(lambda: proc.poll() is not None, 60, "m4 to refuse to join")
    assert proc.returncode == 2
    assert "error validating peerURLs" in kv3.procs.log_tail("kv-m4") and "member count is unequal" in \
        kv3.procs.log_tail("kv-m4")
    # No reachable peer at all: etcd's "cannot fetch cluster info from peer urls".
    dead = f"http://127.0.0.1:{free_port()}"
    argv[argv.index("--initial-cluster") + 1] = f"x={dead},m4={m4.peer_url}"
    proc = kv3.procs.start("kv-m4-alone", argv)
    wait_until(lambda: proc.poll() is not None, 60, "m4 to give up")
    assert proc.returncode == 2
    assert "cannot fetch cluster info from peer urls" in kv3.procs.log_tail("kv-m4-alone")
