"""Fixtures for the interop tests: targets (etcd, our member, our proxy) and the client venvs.

Every test module gets its own reference etcd 3.4.23 and, in turn, one instance of each target
(module scope), so that scripts in a module share a member and a module's revisions carry on
from one test to the next. The `etcd` target is a second, independent etcd: comparing it to the
reference proves that the normalisation hides only what legitimately differs.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support.etcd_ref import ClusterSpec, start_etcd_cluster
from tests.support.kvstack import start_kv_cluster, start_kvproxy
from cluster.launch import ProcessGroup, wait_until

from .etcdctl import Etcdctl
from .script import Target

TARGETS = ["etcd", "kv", "proxy-etcd", "proxy-kv"]
# With its default 1.5 MiB send limit the proxy itself refuses a request between 1.5 and 2 MiB
# (ResourceExhausted, as etcd's grpc-proxy does); raised so that such a request reaches the member
# and the member's own error ("request is too large") comes back through the proxy.
PROXY_FLAGS = ["--max-send-bytes", str(2 * 1024 * 1024)]
START_TIMEOUT = 60.0

CLIENTS_DIR = os.path.join(os.path.dirname(__file__), "clients")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENVS_DIR = os.path.join(REPO_ROOT, ".venv-clients")


def start_target(name: str, procs: ProcessGroup, base_dir: str) -> Target:
    """Start target `name` (one member, behind a proxy for proxy-*) and wait until it serves."""
    spec = ClusterSpec.allocate(base_dir, 1)
    if name in ("kv", "proxy-kv"):
        start_kv_cluster(procs, spec, timeout=START_TIMEOUT)
    else:
        start_etcd_cluster(procs, spec, timeout=START_TIMEOUT)
    if name.startswith("proxy-"):
        endpoint = start_kvproxy(procs, spec, extra_flags=PROXY_FLAGS, timeout=START_TIMEOUT).listen_addr
    else:
        endpoint = spec.endpoints
    scratch = os.path.join(base_dir, "scratch")
    os.makedirs(scratch, exist_ok=True)
    ctl = Etcdctl(endpoint)
    wait_until(lambda: ctl.run(["endpoint", "health"]).rc == 0, START_TIMEOUT,
               f"{name} healthy at {endpoint}\n" + "\n".join(procs.log_tail(p) for p in procs.procs))
    return Target(name, endpoint, scratch)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The reference etcd 3.4.23 of this module; its transcripts are what every target must print."""
    base = str(tmp_path_factory.mktemp("reference"))
    procs = ProcessGroup(os.path.join(base, "logs"))
    try:
        yield start_target("reference", procs, base)
    finally:
        procs.close()


@pytest.fixture(scope="module", params=TARGETS)
def target(request, tmp_path_factory):
    """One target under test, started once per module; stopped before the next one starts."""
    base = str(tmp_path_factory.mktemp(request.param))
    procs = ProcessGroup(os.path.join(base, "logs"))
    try:
        yield start_target(request.param, procs, base)
    finally:
        procs.close()


@pytest.fixture(scope="session")
def client_venvs() -> str:
    """The aetcd and etcd3 venvs (created by clients/setup_venvs.sh if missing); their parent dir."""
    subprocess.run(["bash", os.path.join(CLIENTS_DIR, "setup_venvs.sh"), VENVS_DIR], check=True,
                   timeout=900)
    return VENVS_DIR
