"""cpu_policy.configure(): our server processes switch themselves to SCHED_BATCH, unless the
operator chose a policy (chrt) or opted out; threads started afterwards inherit it."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROBE = """
import os, threading
from cluster import cpu_policy
changed = cpu_policy.configure()
seen = []
t = threading.Thread(target=lambda: seen.append(os.sched_getscheduler(0)))
t.start(); t.join()
print(changed, os.sched_getscheduler(0), seen[0])
"""


def probe(env_extra: dict, prefix: list[str] = ()) -> tuple[str, int, int]:
    env = {k: v for k, v in os.environ.items() if k != "KVSTACK_CPU_POLICY"}
    out = subprocess.run([*prefix, sys.executable, "-c", PROBE], cwd=ROOT, env={**env, **env_extra},
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0], int(out[1]), int(out[2])


def test_switches_to_batch_and_new_threads_inherit_it():
    assert probe({}) == ("True", os.SCHED_BATCH, os.SCHED_BATCH)


def test_opt_out_keeps_the_default_policy():
    assert probe({"KVSTACK_CPU_POLICY": "other"}) == ("False", os.SCHED_OTHER, os.SCHED_OTHER)


def test_a_policy_the_operator_chose_is_kept():
    assert probe({}, prefix=["chrt", "--idle", "0"]) == ("False", os.SCHED_IDLE, os.SCHED_IDLE)
