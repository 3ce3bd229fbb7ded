"""The Python clients aetcd and etcd3, each in its own venv, against each target.

Each client script prints what it observed as JSON. The expected outcomes below are etcd 3.4.23's:
the `etcd` target checks them against a real etcd on every run.
"""

import json
import os
import subprocess

CLIENTS_DIR = os.path.join(os.path.dirname(__file__), "clients")
CLIENT_TIMEOUT = 120


def expected_smoke(prefix: str, event_kinds: tuple[str, str]) -> dict:
    put, delete = event_kinds
    return {
        "put_again_prev": "4",
        "get": ["5", 3, True],
        "get_missing": True,
        "range": [[f"{prefix}a", "5"], [f"{prefix}b", "2"], [f"{prefix}c", "3"]],
        "txn_succeeded": True,
        "txn_failed_branch": [False, ["yes"]],
        "txn_result": "yes",
        "watch": [[put, f"{prefix}w/1", "one", ""], [put, f"{prefix}w/1", "uno", "one"],
                  [delete, f"{prefix}w/1", "", "uno"]],
        "lease": {
            "granted_ttl": 30, "info_granted_ttl": 30, "remaining_ok": True, "keys": [f"{prefix}leased"],
            "refreshed_ttl": 30, "key_lease_matches": True, "gone_after_revoke": True, "ttl_after_revoke": -1,
        },
        "status": {"leader_name": "m1", "members": ["m1"], "raft_index_positive": True},
    }


def run_client(venvs: str, venv: str, script: str, endpoint: str, prefix: str) -> str:
    """Run clients/<script> with the venv's python; return its stdout (fails on a non-zero exit)."""
    p = subprocess.run([os.path.join(venvs, venv, "bin", "python"), os.path.join(CLIENTS_DIR, script),
                        endpoint, prefix], capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    assert p.returncode == 0, f"{script} against {endpoint} failed:\n{p.stdout}\n{p.stderr}"
    return p.stdout


def test_aetcd(client_venvs, target):
    result = json.loads(run_client(client_venvs, "aetcd", "aetcd_smoke.py", target.endpoint, "aetcd/"))
    assert result == {**expected_smoke("aetcd/", ("PUT", "DELETE")), "put_prev_key": "", "deleted": 1}


def test_etcd3(client_venvs, target):
    result = json.loads(run_client(client_venvs, "etcd3", "etcd3_smoke.py", target.endpoint, "etcd3/"))
    assert result == {**expected_smoke("etcd3/", ("PutEvent", "DeleteEvent")), "deleted": True}


def test_range_options_over_grpc(client_venvs, reference, target):
    """count_only, keys_only, limit and min/max mod/create revisions, with etcd's own stubs."""
    prefix = f"probe-{target.name}/"  # the reference serves every target of this module
    expected = run_client(client_venvs, "aetcd", "range_probe.py", reference.endpoint, prefix)
    actual = run_client(client_venvs, "aetcd", "range_probe.py", target.endpoint, prefix)
    assert actual.splitlines() == expected.splitlines()
