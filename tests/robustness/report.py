"""The round report: one row per round, printed and written beside the kept histories."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RoundReport:
    """Everything a round checked and found."""

    round: int
    fault: str
    victims: list[str]
    seed: int
    ops_total: int = 0
    ops_checked: int = 0
    maybes_dropped: int = 0
    watch_events: int = 0
    leases: int = 0
    compactions: int = 0
    recovery: float | None = None
    outage: float = 0.0     # longest interval without an acknowledged write, seen by clients
    check_seconds: float = 0.0
    violations: dict[str, list[str]] = field(default_factory=dict)  # checker -> problems

    @property
    def n_violations(self) -> int:
        return sum(len(v) for v in self.violations.values())


HEAD = ("round", "fault", "victims", "seed", "ops", "lin-checked", "maybe-dropped", "watch-ev",
        "leases", "compacts", "recovery-s", "outage-s", "check-s", "violations")


def table(reports: list[RoundReport], title: str) -> str:
    rows = [HEAD] + [(str(r.round), r.fault, ",".join(r.victims), str(r.seed), str(r.ops_total),
                      str(r.ops_checked), str(r.maybes_dropped), str(r.watch_events), str(r.leases),
                      str(r.compactions), "-" if r.recovery is None else f"{r.recovery:.2f}", f"{r.outage:.2f}",
                      f"{r.check_seconds:.2f}", str(r.n_violations)) for r in reports]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEAD))]
    fmt = lambda row: "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"
    lines = [title, fmt(rows[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += [fmt(r) for r in rows[1:]]
    total = sum(r.n_violations for r in reports)
    lines.append(f"rounds: {len(reports)}, ops checked: {sum(r.ops_checked for r in reports)}, "
                 f"violations: {total}")
    for r in reports:
        for checker, problems in r.violations.items():
            for p in problems[:20]:
                lines.append(f"  round {r.round} [{checker}] {p.splitlines()[0]}")
    return "\n".join(lines)
