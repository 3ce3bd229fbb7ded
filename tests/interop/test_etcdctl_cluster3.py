"""etcdctl 3.4 against a 3-member kvcluster, compared with a 3-member etcd 3.4.23 (both with
`--quota-backend-bytes` QUOTA): move-leader, endpoint status/health/hashkv --cluster, snapshot
save, lock and elect (background commands: competing lockers, a candidate and an observer),
defrag --cluster, and the NOSPACE alarm flow (fill the quota, the alarm on every member, writes
refused, reads and deletes served, compact + defrag + disarm, writes again).

Each flow runs on both clusters and renders a transcript in which what legitimately differs
between two clusters is replaced: endpoints (`<EP>`), member IDs (`<MEMBER>`; which member is
the leader is kept as a role), lease IDs, `took`, and etcdctl's log-line prefixes (only their
message is kept). Outputs of `--cluster` commands come in member-ID order, which differs between
clusters, so their lines are sorted. Flows that depend on where bbolt and LMDB fill up (how many
puts fit under the quota) compare outcomes, not counts.
"""

from __future__ import annotations

import json
import os
import re

import pytest

from cluster.launch import ClusterSpec, ProcessGroup, wait_until
from tests.support.etcd_ref import start_etcd_cluster
from tests.support.kvstack import start_kv_cluster

from .etcdctl import BackgroundWatch, Etcdctl, Run

QUOTA = 4 * 1024 * 1024
BIG_VALUE_BYTES = 100_000
START_TIMEOUT = 60.0
BACKGROUND_TIMEOUT = 30.0


class Cluster3:
    """One 3-member cluster under test and etcdctl bound to all or one of its endpoints."""

    def __init__(self, name: str, spec: ClusterSpec):
        self.name = name
        self.spec = spec
        self.all = Etcdctl(spec.endpoints)
        self.one = [Etcdctl(m.endpoint) for m in spec.members]
        self._ids: list[int] = []

    def member_ids(self) -> list[int]:
        if not self._ids:
            out = self.all.run(["member", "list", "-w", "json"])
            assert out.rc == 0, out.stderr
            self._ids = [m["ID"] for m in json.loads(out.stdout)["members"]]
        return self._ids

    def statuses(self) -> list[dict]:
        out = self.all.run(["endpoint", "status", "--cluster", "-w", "json"])
        assert out.rc == 0, f"{self.name}: {out.stderr}"
        return json.loads(out.stdout)

    def leader_id(self) -> int:
        return self.statuses()[0]["Status"]["leader"]

    def endpoint_of(self, member_id: int) -> Etcdctl:
        for st in self.statuses():
            if st["Status"]["header"]["member_id"] == member_id:
                return Etcdctl(st["Endpoint"].removeprefix("http://"))
        raise AssertionError(f"{self.name}: no endpoint for member {member_id:x}")

    def normalise(self, text: str) -> str:
        text = text.replace(os.path.dirname(self.spec.members[0].data_dir), "<TMP>")
        leader = self.leader_id()
        for mid in self.member_ids():
            role = "<LEADER>" if mid == leader else "<MEMBER>"
            text = text.replace(f"{mid:x}", role).replace(str(mid), role)
        text = re.sub(r"(http://)?127\.0\.0\.1:\d+", "<EP>", text)
        text = re.sub(r"took = [0-9.]+[µnm]?s", "took = <TOOK>", text)
        text = re.sub(r"/[0-9a-f]{8,16}\b", "/<LEASE>", text)
        return text

    def render(self, args: str, run: Run, *, sort: bool = False) -> str:
        lines = self.normalise(run.stdout).splitlines()
        if sort:
            lines.sort()
        errors = [self.normalise(line) for line in run.stderr.splitlines() if not line.startswith("{")]
        return "\n".join([self.normalise(f"$ etcdctl {args}"), f"exit {run.rc}", *lines, *(f"stderr| {e}" for e in errors)])

    def cmd(self, args: str, *, ctl: Etcdctl | None = None, sort: bool = False) -> str:
        return self.render(args, (ctl or self.all).run(args.split()), sort=sort)


@pytest.fixture(scope="module")
def clusters(tmp_path_factory):
    """(etcd 3.4.23 × 3, kvcluster × 3), both with --quota-backend-bytes QUOTA."""
    groups = []
    started = []
    try:
        for name, start in (("etcd", start_etcd_cluster), ("kv", start_kv_cluster)):
            base = str(tmp_path_factory.mktemp(f"{name}3"))
            procs = ProcessGroup(os.path.join(base, "logs"))
            groups.append(procs)
            spec = ClusterSpec.allocate(base, 3, extra_flags=["--quota-backend-bytes", str(QUOTA)])
            start(procs, spec, timeout=START_TIMEOUT)
            c = Cluster3(name, spec)
            wait_until(lambda c=c: c.all.run(["endpoint", "health", "--cluster"]).rc == 0, START_TIMEOUT,
                       f"{name}: 3 healthy members\n" + "\n".join(procs.log_tail(p) for p in procs.procs))
            started.append(c)
        yield tuple(started)
    finally:
        for procs in groups:
            procs.close()


def same(flow, clusters) -> str:
    """Run `flow(cluster)` on both clusters; assert equal transcripts; return kv's."""
    etcd, kv = clusters
    expected, got = flow(etcd), flow(kv)
    assert got == expected, f"etcd:\n{expected}\n\nkv:\n{got}"
    return got


def distinct_alarms(transcript: str) -> str:
    """`transcript` with every member as `<MEMBER>` (which one raised NOSPACE, leader or not,
    depends on timing) and repeated lines dropped: how many members raise NOSPACE (each for
    itself, when its own store reaches the quota) depends on timing too, in etcd as in kvcluster."""
    return "\n".join(dict.fromkeys(transcript.replace("<LEADER>", "<MEMBER>").split("\n")))


def test_endpoint_commands_with_cluster(clusters):
    def flow(c: Cluster3) -> str:
        assert c.all.run(["put", "status-key", "v"]).rc == 0
        sts = c.statuses()
        summary = sorted((st["Status"]["leader"] == st["Status"]["header"]["member_id"],
                          st["Status"]["errors"] if "errors" in st["Status"] else None) for st in sts)
        leaders = {st["Status"]["leader"] for st in sts}
        terms = {st["Status"]["raftTerm"] for st in sts}
        hashkv = json.loads(c.all.run(["endpoint", "hashkv", "--cluster", "-w", "json"]).stdout)
        return "\n".join([
            f"status: {summary} one leader={len(leaders) == 1} one term={len(terms) == 1}",
            f"hashkv: members={len(hashkv)} distinct hashes={len({h['HashKV']['hash'] for h in hashkv})}",
            c.cmd("endpoint health --cluster", sort=True),
            c.cmd("endpoint hashkv --cluster", sort=True).split("\n")[1],  # exit code
            c.cmd("endpoint status --cluster -w table").split("\n")[1],  # exit code
        ])

    same(flow, clusters)


def test_move_leader(clusters):
    def flow(c: Cluster3) -> str:
        leader = c.leader_id()
        target = next(m for m in c.member_ids() if m != leader)
        follower_ctl = c.endpoint_of(target)
        lines = [
            # asked through a follower only: etcdctl finds no leader among its endpoints
            c.cmd(f"move-leader {target:x}", ctl=follower_ctl),
            c.cmd("move-leader 1234"),  # not a member
        ]
        moved = c.all.run(["move-leader", f"{target:x}"])
        assert moved.rc == 0, f"{c.name}: {moved.stderr}"
        lines.append("moved: " + moved.stdout.strip().replace(f"{leader:x}", "<OLD>").replace(f"{target:x}", "<NEW>"))
        wait_until(lambda: c.leader_id() == target, 30, f"{c.name}: {target:x} leads")
        lines.append(f"every member reports the new leader: {len({s['Status']['leader'] for s in c.statuses()}) == 1}")
        return "\n".join(lines)

    same(flow, clusters)


def test_snapshot_save(clusters):
    def flow(c: Cluster3) -> str:
        path = os.path.join(os.path.dirname(c.spec.members[0].data_dir), "saved.db")
        run = c.one[0].run(["snapshot", "save", path])
        out = [f"exit {run.rc}", c.normalise(run.stdout).strip(),
               f"file not empty: {os.path.getsize(path) > 0}"]
        many = c.all.run(["snapshot", "save", path + ".2"])  # more than one endpoint: refused
        out += [f"exit {many.rc}", *[c.normalise(e) for e in many.stderr.splitlines() if not e.startswith("{")]]
        return "\n".join(out)

    same(flow, clusters)


def test_lock_with_competing_lockers_and_exec(clusters):
    def flow(c: Cluster3) -> str:
        out = [c.cmd("lock exec-lock echo held-while-running")]
        first = BackgroundWatch(c.one[0].argv(["lock", "mylock"]))
        second = None
        try:
            assert first.wait_for(("mylock/",), BACKGROUND_TIMEOUT, "first locker holds the lock")
            second = BackgroundWatch(c.one[1].argv(["lock", "mylock"]))
            # while the first holds it, the second waits: it holds only after the first lets go,
            # seen as its lock key's revision being after the first one's release
            keys = json.loads(c.all.run(["get", "mylock", "--prefix", "-w", "json"]).stdout).get("kvs", [])
            out.append(f"waiting lockers' keys: {len(keys) in (1, 2)}")
            assert not second.wait_for(("mylock/",), 1.0, "second locker waits")
            first_run = first.interrupt()
            assert second.wait_for(("mylock/",), BACKGROUND_TIMEOUT, "second locker holds the lock")
        finally:
            first.stop()
            second_run = second.interrupt() if second else None
        out += [c.render("lock mylock &  (first, then Ctrl-C)", first_run),
                c.render("lock mylock &  (second, then Ctrl-C)", second_run)]
        left = json.loads(c.all.run(["get", "mylock", "--prefix", "-w", "json"]).stdout).get("kvs", [])
        out.append(f"lock keys left: {len(left)}")
        return "\n".join(out)

    same(flow, clusters)


def test_elect_with_an_observer(clusters):
    def flow(c: Cluster3) -> str:
        observer = BackgroundWatch(c.one[2].argv(["elect", "-l", "myelection"]))
        p1 = BackgroundWatch(c.one[0].argv(["elect", "myelection", "p1"]))
        p2 = None
        try:
            assert p1.wait_for(("p1",), BACKGROUND_TIMEOUT, "p1 elected")
            assert observer.wait_for(("p1",), BACKGROUND_TIMEOUT, "observer sees p1")
            p2 = BackgroundWatch(c.one[1].argv(["elect", "myelection", "p2"]))
            assert not p2.wait_for(("p2",), 1.0, "p2 waits while p1 leads")
            p1_run = p1.interrupt()
            assert p2.wait_for(("p2",), BACKGROUND_TIMEOUT, "p2 elected after p1 resigned")
            assert observer.wait_for(("p2",), BACKGROUND_TIMEOUT, "observer sees p2")
        finally:
            p1.stop()
            p2_run = p2.interrupt() if p2 else None
            observer_run = observer.stop()
        return "\n".join([c.render("elect myelection p1 &  (then Ctrl-C)", p1_run),
                          c.render("elect myelection p2 &  (then Ctrl-C)", p2_run),
                          c.render("elect -l myelection &", observer_run)])

    same(flow, clusters)


def test_nospace_alarm_on_every_member_then_compact_defrag_disarm(clusters):
    """Runs last: fills the quota."""

    def flow(c: Cluster3) -> str:
        value = "x" * BIG_VALUE_BYTES
        failed = None
        for i in range(10 * QUOTA // BIG_VALUE_BYTES):
            run = c.all.run(["put", f"big/{i:04d}", value])
            if run.rc != 0:
                failed = run
                break
        assert failed is not None, f"{c.name}: the quota was never reached"
        out = [c.render("put big/N <100 kB>  (the first one refused)", failed)]
        out.append(distinct_alarms(c.cmd("alarm list")))
        for i, ctl in enumerate(c.one):  # every member knows the alarm (it went through Raft)
            out.append(distinct_alarms(c.cmd("alarm list", ctl=ctl)).replace("$ etcdctl", f"$ [member {i}] etcdctl"))
        out.append(c.cmd("put small v"))
        out.append(c.cmd("get big/0000 --keys-only"))
        out.append(c.cmd("endpoint health --cluster", sort=True))
        sts = c.statuses()
        out.append("status errors: " + repr([distinct_alarms("\n".join(sorted(
            c.normalise(e) for e in s["Status"].get("errors", [])))) for s in sts]))
        deleted = c.all.run(["del", "big/", "--prefix"])
        out.append(f"del big/ --prefix: exit {deleted.rc}, deleted some: {int(deleted.stdout.strip() or 0) > 0}")
        revision = json.loads(c.all.run(["get", "x", "-w", "json"]).stdout)["header"]["revision"]
        out.append(c.cmd(f"compaction {revision} --physical").replace(str(revision), "<REV>"))
        out.append(c.cmd("defrag --cluster", sort=True))
        out.append(distinct_alarms(c.cmd("alarm disarm")))
        out.append(c.cmd("alarm list"))
        out.append(c.cmd("put small v"))
        out.append(c.cmd("endpoint health --cluster", sort=True))
        return "\n".join(out)

    got = same(flow, clusters)
    assert "alarm:NOSPACE" in got and "etcdserver: mvcc: database space exceeded" in got
