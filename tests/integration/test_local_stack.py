"""`kvcluster local`: the README's main command brings up members plus a proxy, and Ctrl-C stops all."""

import json
import re
import signal
import subprocess
import sys
import urllib.parse
import urllib.request

from cluster.launch import port_open, wait_until
from tests.support.etcd_ref import ETCDCTL_BIN


def etcdctl(endpoints: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ETCDCTL_BIN, "--endpoints", endpoints, *args],
                          capture_output=True, text=True, timeout=30, env={"ETCDCTL_API": "3"})


def prometheus_value(base: str, query: str) -> float | None:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as resp:
        result = json.load(resp)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_local_stack_serves_through_the_proxy_with_prometheus_and_stops_on_ctrl_c(tmp_path):
    out_path = tmp_path / "stdout"
    with open(out_path, "w") as out:
        stack = subprocess.Popen([sys.executable, "-m", "cluster.cli", "local", "--ephemeral-ports", "--with-prometheus",
                                  "--data-dir", str(tmp_path / "data")], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "Ctrl-C stops everything" in out_path.read_text() or stack.poll() is not None,
                   90, "kvcluster local to report its endpoints")
        banner = out_path.read_text()
        assert stack.poll() is None, banner
        proxy = re.search(r"proxy\s+client http://(\S+)", banner).group(1)
        members = re.findall(r"member m\d\s+client http://(\S+)", banner)
        assert len(members) == 3, banner

        assert etcdctl(proxy, "put", "greeting", "hello").stdout == "OK\n"
        assert etcdctl(proxy, "get", "greeting", "--print-value-only").stdout == "hello\n"
        status = json.loads(etcdctl(",".join(members), "endpoint", "status", "-w", "json").stdout)
        leaders = {s["Status"]["leader"] for s in status}
        assert len(status) == 3 and len(leaders) == 1 and 0 not in leaders

        prometheus = re.search(r"prometheus\s+(http://\S+)", banner).group(1)
        wait_until(lambda: prometheus_value(prometheus, "sum(etcd_server_has_leader)") == 3.0, 60,
                   "Prometheus to scrape a leader on all 3 members")

        stack.send_signal(signal.SIGINT)
        assert stack.wait(timeout=60) == 0
        still_open = [ep for ep in [proxy, *members] if port_open(int(ep.rsplit(":", 1)[1]))]
        assert still_open == [], f"still serving after Ctrl-C: {still_open}"
    finally:
        if stack.poll() is None:
            stack.kill()
            stack.wait()
