"""Watch over a real kvcluster process: many watchers per stream, ids, history, filters, progress."""

from __future__ import annotations

import grpc

from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from protos.mvccpb import kv_pb2

from tests.support.watch_stream import WatchStream

from .conftest import metric, start_member
from cluster.launch import ClusterSpec
from cluster.launch import wait_until

PUT, DELETE = kv_pb2.Event.PUT, kv_pb2.Event.DELETE


def test_many_watchers_on_one_stream_with_auto_and_custom_ids(member):
    ws = WatchStream(member.watch)
    try:
        first = ws.create(b"a")
        assert first.created and first.watch_id == 0
        custom = ws.create(b"b", watch_id=7)
        assert custom.created and custom.watch_id == 7
        dup = ws.create(b"c", watch_id=7)
        assert (dup.watch_id, dup.created, dup.canceled) == (-1, True, True)
        assert dup.cancel_reason == "mvcc: duplicate watch ID provided on the WatchStream"
        prefix = ws.create(b"p", range_end=b"q")
        assert prefix.watch_id == 1

        member.put(b"a", b"1")
        member.put(b"b", b"2")
        member.put(b"p/x", b"3")
        got = {}
        for _ in range(3):
            r = ws.recv()
            got[r.watch_id] = [(e.type, e.kv.key, e.kv.value) for e in r.events]
        assert got == {0: [(PUT, b"a", b"1")], 7: [(PUT, b"b", b"2")], 1: [(PUT, b"p/x", b"3")]}
        assert metric(member, "etcd_debugging_mvcc_watcher_total") == 3
        assert metric(member, "etcd_debugging_mvcc_watch_stream_total") == 1
    finally:
        ws.close()
    # closing the stream removes its watchers
    wait_until(lambda: metric(member, "etcd_debugging_mvcc_watcher_total") == 0
               and metric(member, "etcd_debugging_mvcc_watch_stream_total") == 0, 10, "watchers removed")


def test_replay_from_revision_with_prev_kv_and_filters(member):
    start = member.put(b"k", b"1").header.revision
    member.put(b"k", b"2")
    member.kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"k"))
    ws = WatchStream(member.watch)
    try:
        assert ws.create(b"k", start_revision=start, prev_kv=True, watch_id=1).created
        events = []
        while len(events) < 3:
            events.extend(ws.recv().events)
        assert [(e.type, e.kv.value, e.kv.mod_revision) for e in events] == [
            (PUT, b"1", start), (PUT, b"2", start + 1), (DELETE, b"", start + 2)]
        assert not events[0].HasField("prev_kv")
        assert events[1].prev_kv.value == b"1" and events[2].prev_kv.value == b"2"

        assert ws.create(b"k", start_revision=start, watch_id=2,
                         filters=[rpc_pb2.WatchCreateRequest.NOPUT]).created
        only_delete = ws.recv()
        assert only_delete.watch_id == 2
        assert [e.type for e in only_delete.events] == [DELETE]
        assert not only_delete.events[0].HasField("prev_kv")

        assert ws.create(b"k", watch_id=3, filters=[rpc_pb2.WatchCreateRequest.NODELETE]).created
        member.kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"k"))  # nothing to delete: no event
        member.put(b"k", b"3")
        seen = {}
        while set(seen) != {1, 2, 3} or len(seen.get(1, [])) < 1:
            r = ws.recv()
            seen.setdefault(r.watch_id, []).extend(r.events)
            if set(seen) == {1, 3}:
                break
        assert [e.kv.value for e in seen[3]] == [b"3"]
        assert seen[1][0].kv.value == b"3" and not seen[1][0].HasField("prev_kv")
        assert 2 not in seen  # NOPUT
    finally:
        ws.close()


def test_compacted_start_revision_is_created_then_canceled(member):
    for i in range(4):
        member.put(b"c", str(i).encode())
    rev = member.get(b"c").header.revision
    member.kv.Compact(rpc_pb2.CompactionRequest(revision=rev, physical=True))
    ws = WatchStream(member.watch)
    try:
        created = ws.create(b"c", start_revision=rev - 2, watch_id=5)
        assert created.created and created.watch_id == 5 and not created.canceled
        canceled = ws.recv()
        assert (canceled.watch_id, canceled.canceled, canceled.compact_revision) == (5, True, rev)
        assert canceled.header.revision == 0  # as etcd 3.4.23
        # the stream still works, and the id can be used again
        assert ws.create(b"c", watch_id=5).created
        member.put(b"c", b"after")
        assert ws.recv().events[0].kv.value == b"after"
    finally:
        ws.close()


def test_progress_request_and_cancel(member):
    rev = member.put(b"x", b"1").header.revision
    ws = WatchStream(member.watch)
    try:
        ws.create(b"x", watch_id=3)
        ws.send(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
        progress = ws.recv()
        assert progress.watch_id == -1 and progress.header.revision == rev and not progress.events
        ws.send(rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=3)))
        canceled = ws.recv()
        assert canceled.watch_id == 3 and canceled.canceled
        ws.send(rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=99)))
        member.put(b"x", b"2")
        assert ws.recv_nothing(0.5)  # no event for a canceled watcher, no answer to an unknown cancel
    finally:
        ws.close()


def test_periodic_progress_notify(procs, tmp_path):
    m = start_member(procs, ClusterSpec.allocate(str(tmp_path), 1),
                     ["--experimental-watch-progress-notify-interval", "300ms"])
    rev = m.put(b"p", b"1").header.revision
    ws = WatchStream(m.watch)
    try:
        ws.create(b"p", watch_id=4, progress_notify=True)
        ws.create(b"q", watch_id=5)  # no progress_notify: never notified
        notes = [ws.recv(timeout=5) for _ in range(2)]
        assert all(n.watch_id == 4 and not n.events and n.header.revision == rev for n in notes)
    finally:
        ws.close()
        m.channel.close()


def test_fragmented_watch_response(procs, tmp_path):
    m = start_member(procs, ClusterSpec.allocate(str(tmp_path), 1), ["--max-request-bytes", "4096"])
    ops = [rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"f%02d" % i, value=b"v" * 1000))
           for i in range(3)]
    # three 1000-byte puts in one txn -> one revision, one response of about 3 KiB: not fragmented
    start = m.kv.Txn(rpc_pb2.TxnRequest(success=ops)).header.revision
    m.kv.Txn(rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(
        key=b"f%02d" % i, value=b"w" * 1000)) for i in range(3)]))
    ws = WatchStream(m.watch)
    try:
        ws.create(b"f", range_end=b"g", start_revision=start, fragment=True)
        pieces = []
        while True:
            r = ws.recv()
            pieces.append(r)
            if not r.fragment:
                break
        assert len(pieces) > 1 and all(p.fragment for p in pieces[:-1])
        assert sum(len(p.events) for p in pieces) == 6
        assert all(p.ByteSize() < 4096 for p in pieces)
    finally:
        ws.close()
        m.channel.close()


def test_slow_stream_does_not_block_others_and_catches_up_without_gap(member):
    """A stream whose client stops reading falls behind; another stream keeps getting events;
    when the slow client reads again it gets every revision exactly once, in order."""
    # its own connection, with a fixed 64 KiB HTTP/2 window (no BDP growth), so that the server
    # soon cannot write to it
    slow_channel = grpc.insecure_channel(member.endpoint, options=[("grpc.http2.bdp_probe", 0)])
    slow = rpc_pb2_grpc.WatchStub(slow_channel).Watch(iter([rpc_pb2.WatchRequest(
        create_request=rpc_pb2.WatchCreateRequest(key=b"s", range_end=b"t"))]))
    created = next(slow)
    assert created.created
    fast = WatchStream(member.watch)
    try:
        fast.create(b"s", range_end=b"t")
        value = b"z" * 2000
        n = 1200  # ~2.4 MB of events: more than the slow stream's outbox and transport windows
        revs = [member.put(b"s%04d" % i, value).header.revision for i in range(n)]
        got_fast = []
        while len(got_fast) < n:
            got_fast.extend(e.kv.mod_revision for e in fast.recv().events)
        assert got_fast == revs
        # the slow stream's watcher was moved off the live path (etcd's unsynced watchers)
        assert metric(member, "etcd_debugging_mvcc_slow_watcher_total") == 1
        got_slow = []
        for resp in slow:
            got_slow.extend(e.kv.mod_revision for e in resp.events)
            if len(got_slow) >= n:
                break
        assert got_slow == revs
        wait_until(lambda: metric(member, "etcd_debugging_mvcc_slow_watcher_total") == 0, 10,
                   "the caught-up watcher to rejoin the synced set")
    finally:
        fast.close()
        slow.cancel()
        slow_channel.close()
