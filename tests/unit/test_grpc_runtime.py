"""The member CLI and the ceiling server configure gRPC core before grpc is first imported (core
reads GRPC_EXPERIMENTS once, when it loads), and an operator's own setting wins."""

import os
import subprocess
import sys

import pytest

from cluster import grpc_runtime

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def import_order(module: str, env: dict) -> tuple[list[str], str]:
    """Modules in the order `import module` loads them in a fresh interpreter, and the
    GRPC_EXPERIMENTS it ends with."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c",
         f"import os, {module}; print(os.environ.get('GRPC_EXPERIMENTS', ''))"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    loaded = [line.split("|")[-1].strip() for line in out.stderr.splitlines()
              if line.startswith("import time:") and "|" in line]
    return loaded, out.stdout.strip()


@pytest.mark.parametrize("module", ["cluster.cli", "bench.null_server"])
def test_configured_before_grpc_loads(module):
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    loaded, experiments = import_order(module, env)
    # -X importtime lists a module when its import finishes; the importer calls configure()
    # right after importing cluster.grpc_runtime, so grpc must come later
    assert experiments == grpc_runtime.POLLER_ENDPOINTS
    assert "cluster.grpc_runtime" in loaded and "grpc" in loaded
    assert loaded.index("cluster.grpc_runtime") < loaded.index("grpc")


def test_an_operators_setting_wins():
    env = dict(os.environ, GRPC_EXPERIMENTS="-event_engine_dns")
    _, experiments = import_order("cluster.cli", env)
    assert experiments == "-event_engine_dns"
