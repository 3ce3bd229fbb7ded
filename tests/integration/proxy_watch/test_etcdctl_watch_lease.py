"""etcdctl 3.4's `watch` and `lease` commands work through `kvproxy` and print what they print
against etcd 3.4.23 itself."""

from __future__ import annotations

import os
import re
import subprocess
import threading

from tests.support.etcd_ref import ETCDCTL_BIN
from cluster.launch import wait_until


def etcdctl(endpoint: str, *args: str) -> str:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}, "ETCDCTL_API": "3"}
    p = subprocess.run([ETCDCTL_BIN, "--endpoints", endpoint, *args], capture_output=True, text=True,
                       timeout=30, env=env)
    assert p.returncode == 0, f"etcdctl {' '.join(args)}: {p.stderr}"
    return p.stdout


class EtcdctlWatch:
    """`etcdctl watch ...` running in the background, its stdout collected."""

    def __init__(self, endpoint: str, *args: str):
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}, "ETCDCTL_API": "3"}
        self.proc = subprocess.Popen([ETCDCTL_BIN, "--endpoints", endpoint, "watch", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self._reader.start()

    def wait_lines(self, n: int) -> list[str]:
        wait_until(lambda: len(self.lines) >= n or self.proc.poll() is not None, 20,
                   f"{n} lines from etcdctl watch (have {self.lines})")
        return self.lines[:n]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def test_etcdctl_watch_prefix_rev_prev_kv(etcd1, proxy1):
    direct = etcd1.endpoints
    first = None
    for i in range(3):
        out = etcdctl(direct, "put", f"foo{i}", f"a{i}", "-w", "json")
        first = first or int(re.search(r'"revision":(\d+)', out).group(1))
    etcdctl(direct, "put", "other", "x")
    variants = [("--prefix", "foo", "--rev", str(first)),
                ("--prefix", "foo", "--rev", str(first), "--prev-kv"),
                ("foo1", "--rev", str(first), "--prev-kv")]
    watches = [(EtcdctlWatch(direct, *v), EtcdctlWatch(proxy1.listen_addr, *v)) for v in variants]
    try:
        # Replayed: 3 puts; then live: overwrite foo1, delete foo2.
        want_lines = [9, 9, 3]
        for (d, p), n in zip(watches, want_lines):
            assert p.wait_lines(n) == d.wait_lines(n)
        etcdctl(direct, "put", "foo1", "b1")
        etcdctl(direct, "del", "foo2")
        want_lines = [9 + 3 + 2, 9 + 5 + 5, 3 + 5]
        for (d, p), n in zip(watches, want_lines):
            got = p.wait_lines(n)
            assert got == d.wait_lines(n)
        assert "DELETE\n" in watches[1][1].lines and "a1\n" in watches[2][1].lines
    finally:
        for d, p in watches:
            d.stop()
            p.stop()


def test_etcdctl_lease_commands(etcd1, proxy1):
    proxy = proxy1.listen_addr
    out = etcdctl(proxy, "lease", "grant", "60")
    lease = re.match(r"lease ([0-9a-f]+) granted with TTL\(60s\)", out).group(1)
    etcdctl(etcd1.endpoints, "put", "leased", "v", "--lease", lease)
    out = etcdctl(proxy, "lease", "keep-alive", "--once", lease)
    assert out.strip() == f"lease {lease} keepalived with TTL(60)"
    out = etcdctl(proxy, "lease", "timetolive", "--keys", lease)
    assert re.match(rf"lease {lease} granted with TTL\(60s\), remaining\((59|60)s\), attached keys\(\[leased\]\)",
                    out), out
    assert lease in etcdctl(proxy, "lease", "list")
    assert etcdctl(proxy, "lease", "revoke", lease).strip() == f"lease {lease} revoked"
    assert etcdctl(etcd1.endpoints, "get", "leased") == ""
    assert lease not in etcdctl(proxy, "lease", "list")
