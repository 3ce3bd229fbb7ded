"""A tiny script language to drive ``SimCluster`` step by step, producing a readable trace.

A script is a list of commands, one per line; ``#`` lines are comments and are echoed, so a
script's output reads as a narrated transcript. Each command is echoed as ``> command`` and
followed by its output, indented, then by every role/term change it caused. The invariant
checker of harness.py runs throughout.

Commands (``ids`` is a list of node ids or ``all``)::

    cluster IDS [pre_vote=on|off] [check_quorum=on|off] [election=N] [heartbeat=N]
            [max_msg=BYTES] [from-logs]
                                  new cluster; bootstrapped and settled, or (from-logs) with
                                  empty disks to be filled by set-log
    set-log ID TERMS.. [term=T]   node ID's disk holds a snapshot at index 1 (first term) and
                                  entries of the given terms at 2, 3, ...; (re)starts it
    campaign ID | tick IDS [N] | propose ID DATA | read ID | transfer ID TO
    conf ID add|learner|remove NODE | add-node ID | compact ID [KEEP]
    process IDS                   take and persist Readies until there are none
    ready ID | persist ID         Ready phase 1 (early messages sent) / phase 2 (durable)
    deliver [A->B] [TYPE]         deliver matching in-flight messages, in send order
    drop [A->B] [TYPE]            discard matching in-flight messages
    stabilize [verbose]           process and deliver until nothing moves
    run N                         N times: tick every node once, then stabilize
    crash ID | restart ID | isolate ID | partition A B | C D | block A B | heal
    status [IDS] | log [IDS] | inflight
"""
from __future__ import annotations

import struct

from cluster.raft import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    HardState,
    MemoryStorage,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)

from .harness import SimCluster, format_message

_CONF_KINDS = {
    "add": ConfChangeType.ADD_NODE,
    "learner": ConfChangeType.ADD_LEARNER_NODE,
    "remove": ConfChangeType.REMOVE_NODE,
}


class ScenarioError(Exception):
    """A malformed script line."""


class ScenarioRunner:
    """Runs a script and returns its transcript."""

    def __init__(self) -> None:
        self.c: SimCluster | None = None
        self.out: list[str] = []
        self._reads_reported = 0

    def run(self, text: str) -> str:
        for lineno, line in enumerate(text.splitlines(), 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                self.out.append(line.rstrip())
                continue
            self.out.append(f"> {stripped}")
            before = {} if stripped.startswith("cluster") else self._roles()
            try:
                self._command(stripped.split())
            except ScenarioError as exc:
                raise ScenarioError(f"line {lineno}: {exc}") from None
            self._report_role_changes(before)
        return "\n".join(self.out) + "\n"

    # -- helpers ----------------------------------------------------------------------------

    def _say(self, text: str) -> None:
        self.out.append(f"  {text}")

    def _ids(self, args: list[str]) -> list[int]:
        if not args or args == ["all"]:
            return [n.id for n in self.c.nodes.values() if n.alive]
        return [int(a) for a in args]

    def _roles(self) -> dict[int, tuple]:
        if self.c is None:
            return {}
        return {
            n.id: (n.raw.raft.state, n.raw.raft.term) if n.alive else None
            for n in self.c.nodes.values()
        }

    def _report_role_changes(self, before: dict) -> None:
        for node_id, now in self._roles().items():
            was = before.get(node_id)
            if now is None or now == was:
                continue
            role, term = now
            if was is None:
                self._say(f"n{node_id} is {role.name} (term {term})")
            elif was[0] != role:
                self._say(f"n{node_id}: {was[0].name} -> {role.name} (term {term})")
            else:
                self._say(f"n{node_id}: term {was[1]} -> {term} ({role.name})")

    def _message_filter(self, args: list[str]):
        pair = next((a for a in args if "->" in a), None)
        kind = next((a for a in args if a.startswith("Msg")), None)
        frm = to = None
        if pair is not None:
            a, b = pair.split("->")
            frm = int(a) if a else None
            to = int(b) if b else None
        mtype = MessageType[kind] if kind else None

        def pred(m) -> bool:
            return (
                (frm is None or m.frm == frm)
                and (to is None or m.to == to)
                and (mtype is None or m.type == mtype)
            )

        return pred

    def _process(self, node_id: int) -> None:
        c = self.c
        while c.nodes[node_id].alive and c.handle_ready(node_id):
            c.check()
        self._report_reads()

    def _report_reads(self) -> None:
        served = self.c.served_reads
        for node_id, rs in served[self._reads_reported:]:
            self._say(f"n{node_id}: read {rs.ctx.decode()} at index {rs.index}")
        self._reads_reported = len(served)

    # -- commands ---------------------------------------------------------------------------

    def _command(self, words: list[str]) -> None:
        cmd, args = words[0], words[1:]
        handler = getattr(self, "cmd_" + cmd.replace("-", "_"), None)
        if handler is None:
            raise ScenarioError(f"unknown command {cmd!r}")
        handler(args)

    def cmd_cluster(self, args: list[str]) -> None:
        ids = [int(a) for a in args if a.isdigit()]
        opts = dict(a.split("=") for a in args if "=" in a)
        onoff = {"on": True, "off": False}
        kwargs = dict(
            election_tick=int(opts.get("election", 10)),
            heartbeat_tick=int(opts.get("heartbeat", 1)),
            pre_vote=onoff[opts.get("pre_vote", "on")],
            check_quorum=onoff[opts.get("check_quorum", "on")],
            max_size_per_msg=int(opts.get("max_msg", 1 << 20)),
        )
        self._reads_reported = 0
        if "from-logs" in args:
            self.c = SimCluster(int(opts.get("seed", 1)), (), **kwargs)
            self.c.scenario_voters = tuple(ids)
        else:
            self.c = SimCluster(int(opts.get("seed", 1)), tuple(ids), **kwargs)
            self.c.stabilize()

    def cmd_set_log(self, args: list[str]) -> None:
        c = self.c
        node_id = int(args[0])
        terms = [int(a) for a in args[1:] if a.isdigit()]
        opts = dict(a.split("=") for a in args[1:] if "=" in a)
        voters = getattr(c, "scenario_voters", None) or tuple(sorted(c.nodes))
        st = MemoryStorage()
        conf = ConfState(voters=tuple(voters))
        st.apply_snapshot(
            Snapshot(SnapshotMetadata(1, terms[0], conf), struct.pack("<QI", 1, 0))
        )
        st.append([Entry(t, i) for i, t in enumerate(terms[1:], start=2)])
        term = int(opts.get("term", terms[-1]))
        st.set_hard_state(HardState(term=term, vote=int(opts.get("vote", 0)), commit=1))
        c.replace_disk(node_id, st)
        c.history.digests.setdefault(1, 0)

    def cmd_campaign(self, args: list[str]) -> None:
        self.c.campaign(int(args[0]))

    def cmd_tick(self, args: list[str]) -> None:
        times = 1
        if args and args[-1].startswith("x"):
            times = int(args[-1][1:])
            args = args[:-1]
        for _ in range(times):
            for node_id in self._ids(args):
                self.c.tick(node_id)
                self.c.check()

    def cmd_propose(self, args: list[str]) -> None:
        if not self.c.propose(int(args[0]), args[1].encode()):
            self._say("dropped")

    def cmd_read(self, args: list[str]) -> None:
        ctx = self.c.read_index(int(args[0]))
        self._say("dropped" if ctx is None else f"requested {ctx.decode()}")

    def cmd_transfer(self, args: list[str]) -> None:
        self.c.transfer_leader(int(args[0]), int(args[1]))

    def cmd_conf(self, args: list[str]) -> None:
        cc = ConfChange(_CONF_KINDS[args[1]], int(args[2]))
        if not self.c.propose_conf_change(int(args[0]), cc):
            self._say("dropped")

    def cmd_add_node(self, args: list[str]) -> None:
        self.c.add_node(int(args[0]))

    def cmd_compact(self, args: list[str]) -> None:
        keep = int(args[1]) if len(args) > 1 else 0
        self.c.compact(int(args[0]), keep)
        st = self.c.nodes[int(args[0])].storage
        self._say(f"n{args[0]}: log now starts at {st.first_index()}")

    def cmd_process(self, args: list[str]) -> None:
        for node_id in self._ids(args):
            self._process(node_id)

    def cmd_ready(self, args: list[str]) -> None:
        self.c.ready(int(args[0]))
        self._report_reads()

    def cmd_persist(self, args: list[str]) -> None:
        self.c.persist(int(args[0]))
        self.c.check()

    def cmd_deliver(self, args: list[str]) -> None:
        c = self.c
        pred = self._message_filter(args)
        for m in [m for m in c.inflight if pred(m)]:
            lost = (m.frm, m.to) in c.blocked or not c.nodes[m.to].alive
            self._say(("lost " if lost else "") + format_message(m))
            for i, x in enumerate(c.inflight):
                if x is m:
                    c.deliver(i)
                    c.check()
                    break

    def cmd_drop(self, args: list[str]) -> None:
        pred = self._message_filter(args)
        kept = []
        for m in self.c.inflight:
            if pred(m):
                self._say("dropped " + format_message(m))
            else:
                kept.append(m)
        self.c.inflight[:] = kept

    def cmd_inflight(self, args: list[str]) -> None:
        for m in self.c.inflight:
            self._say(format_message(m))

    def cmd_stabilize(self, args: list[str]) -> None:
        c = self.c
        verbose = "verbose" in args
        for _ in range(1000):
            for node_id in [n.id for n in c.nodes.values() if n.alive]:
                self._process(node_id)
            if not c.inflight:
                return
            for m in list(c.inflight):
                if verbose:
                    lost = (m.frm, m.to) in c.blocked or not c.nodes[m.to].alive
                    self._say(("lost " if lost else "") + format_message(m))
                for i, x in enumerate(c.inflight):
                    if x is m:
                        c.deliver(i)
                        c.check()
                        break
        raise ScenarioError("stabilize did not converge")

    def cmd_run(self, args: list[str]) -> None:
        for _ in range(int(args[0])):
            for node_id in self._ids([]):
                self.c.tick(node_id)
                self.c.check()
            self.cmd_stabilize([])

    def cmd_crash(self, args: list[str]) -> None:
        for node_id in self._ids(args):
            self.c.crash(node_id)

    def cmd_restart(self, args: list[str]) -> None:
        for node_id in [int(a) for a in args]:
            self.c.restart(node_id)

    def cmd_isolate(self, args: list[str]) -> None:
        self.c.isolate(int(args[0]))

    def cmd_partition(self, args: list[str]) -> None:
        groups, group = [], []
        for a in args:
            if a == "|":
                groups.append(group)
                group = []
            else:
                group.append(int(a))
        groups.append(group)
        self.c.partition(*groups)

    def cmd_block(self, args: list[str]) -> None:
        self.c.block(int(args[0]), int(args[1]))

    def cmd_heal(self, args: list[str]) -> None:
        self.c.heal()

    def cmd_status(self, args: list[str]) -> None:
        for node_id in self._ids(args) if args else sorted(self.c.nodes):
            node = self.c.nodes[node_id]
            if not node.alive:
                self._say(f"n{node_id}: {'removed' if node.removed else 'down'}")
                continue
            r = node.raw.raft
            self._say(
                f"n{node_id}: {r.state.name.lower()} term={r.term} lead={r.lead} vote={r.vote} "
                f"commit={r.log.committed} applied={node.applied} last={r.log.last_index()}"
                + (f" voters={sorted(r.trk.voters)}" if args else "")
                + (f" learners={sorted(r.trk.learners)}" if args and r.trk.learners else "")
            )

    def cmd_log(self, args: list[str]) -> None:
        for node_id in self._ids(args) if args else sorted(self.c.nodes):
            node = self.c.nodes[node_id]
            if not node.alive:
                self._say(f"n{node_id}: down")
                continue
            log = node.raw.raft.log
            first, last = log.first_index(), log.last_index()
            if first > last:
                self._say(f"n{node_id}: empty after snapshot {last} | commit={log.committed}")
                continue
            terms = " ".join(str(log.term(i)) for i in range(first, last + 1))
            self._say(f"n{node_id}: [{first}..{last}] terms {terms} | commit={log.committed}")


def run_scenario(text: str) -> str:
    return ScenarioRunner().run(text)


__all__ = ["run_scenario", "ScenarioRunner", "ScenarioError"]
