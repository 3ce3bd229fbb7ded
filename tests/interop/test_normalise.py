"""The normaliser hides only what legitimately differs, and keeps every real difference visible."""

import json

from .normalise import Normaliser

EP = "127.0.0.1:40001"


def norm(text: str) -> str:
    return Normaliser(EP, "/tmp/t1").text(text)


def test_ids_get_consistent_tokens_across_formats():
    n = Normaliser(EP, "/tmp/t1")
    assert n.text("lease 000000000000abcd granted with TTL(60s)") == "lease <LEASE1> granted with TTL(60s)"
    out = json.loads(n.text('{"header":{"cluster_id":7,"member_id":9,"revision":4,"raft_term":2},'
                            '"kvs":[{"key":"YQ==","lease":43981,"version":3}]}'))
    assert out["kvs"][0]["lease"] == "<LEASE1>"  # the same lease, first seen in hex
    assert out["header"] == {"cluster_id": "<CLUSTER1>", "member_id": "<MEMBER1>", "revision": 4,
                             "raft_term": "<TERM1>"}
    assert out["kvs"][0]["version"] == 3  # a key's version is data, not the server's version
    assert n.text("lease 0000000000000001 revoked") == "lease <LEASE2> revoked"


def test_revisions_values_errors_and_exit_data_are_kept():
    text = ('{"header":{"revision":12},"kvs":[{"key":"YQ==","create_revision":3,"mod_revision":12,'
            '"value":"dg=="}],"count":1}')
    assert json.loads(norm(text)) == json.loads(text)
    assert norm("Error: etcdserver: mvcc: required revision has been compacted") == \
        "Error: etcdserver: mvcc: required revision has been compacted"
    assert norm(f"{EP}, 3581052765") == "<ENDPOINT>, 3581052765"  # hashkv: the hash is kept


def test_status_line_and_table_hide_ids_sizes_and_versions_only():
    simple = norm(f"{EP}, 2e1259d415f2a040, 3.4.23, 20 kB, true, false, 2, 6, 6, ")
    assert simple == "<ENDPOINT>, <MEMBER1>, <VERSION>, <SIZE>, true, false, <TERM1>, <INDEX1>, <INDEX1>, "
    table = norm("+----+\n| ENDPOINT | ID | VERSION | DB SIZE | IS LEADER | IS LEARNER | RAFT TERM | "
                 "RAFT INDEX | RAFT APPLIED INDEX | ERRORS |\n"
                 f"| {EP} | 2e1259d415f2a040 |  3.4.23 |   20 kB |      false |      false |  2 |  7 |  6 |  |")
    assert table.splitlines()[-1] == \
        "| <ENDPOINT> | <MEMBER1> | <VERSION> | <SIZE> | false | false | <TERM1> | <INDEX1> | <INDEX2> |  |"


def test_remaining_ttl_is_a_timing_only_near_the_granted_ttl():
    assert norm("lease 000000000000000a granted with TTL(600s), remaining(598s)") == \
        "lease <LEASE1> granted with TTL(600s), remaining(<REMAINING>s)"
    assert norm("lease 000000000000000a granted with TTL(600s), remaining(0s)") == \
        "lease <LEASE1> granted with TTL(600s), remaining(0s)"


def test_go_map_orders_are_sorted():
    n = Normaliser(EP, "/tmp/t1")
    n.text("lease 00000000000000aa granted with TTL(60s)\nlease 00000000000000bb granted with TTL(60s)")
    assert n.text("found 2 leases\n00000000000000bb\n00000000000000aa") == "found 2 leases\n<LEASE1>\n<LEASE2>"
    assert n.text("lease 00000000000000aa granted with TTL(60s), remaining(60s), attached keys([b a])") \
        .endswith("attached keys([a b])")


def test_watch_responses_become_one_line_per_event():
    response = ('{"Header":{"cluster_id":1,"member_id":2,"revision":9,"raft_term":3},"Events":['
                '{"kv":{"key":"YQ==","mod_revision":8}},{"type":1,"kv":{"key":"Yg==","mod_revision":9}}],'
                '"CompactRevision":0,"Canceled":false,"Created":false}')
    assert norm(response).splitlines() == [
        '{"Event": {"kv": {"key": "YQ==", "mod_revision": 8}}}',
        '{"Event": {"type": 1, "kv": {"key": "Yg==", "mod_revision": 9}}}',
    ]


def test_etcdctl_log_lines_lose_timestamps_and_client_ids_only():
    line = ('{"level":"warn","ts":"2026-11-21T15:10:57.256Z","caller":"clientv3/retry_interceptor.go:62",'
            '"msg":"retrying of unary invoker failed","target":"endpoint://client-16b45be5-2e11-4ec7-b1de-'
            f'4e8c60806f66/{EP}","attempt":0,"error":"rpc error: code = NotFound desc = etcdserver: '
            'requested lease not found"}')
    out = json.loads(norm(line))
    assert out["ts"] == "<TS>"
    assert out["target"] == "endpoint://client-<UUID>/<ENDPOINT>"
    assert out["error"] == "rpc error: code = NotFound desc = etcdserver: requested lease not found"
