"""Scripted scenarios (scenarios/*.txt) compared with their expected transcripts (*.out).

Regenerate the expected transcripts after an intended change with
``RAFT_SCENARIO_REGEN=1 python -m pytest tests/unit/raft/test_scenarios.py`` and review the
diff: the .out files are the specification.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

from .scenario import run_scenario

SCENARIOS = Path(__file__).parent / "scenarios"


@pytest.mark.parametrize(
    "script", sorted(p.name for p in SCENARIOS.glob("*.txt")), ids=lambda n: n[:-4]
)
def test_scenario(script: str) -> None:
    path = SCENARIOS / script
    expected_path = path.with_suffix(".out")
    actual = run_scenario(path.read_text())
    if os.environ.get("RAFT_SCENARIO_REGEN"):
        expected_path.write_text(actual)
        return
    expected = expected_path.read_text()
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(True), actual.splitlines(True), str(expected_path), "actual"
            )
        )
        pytest.fail(
            f"{script} diverged from {expected_path.name} (regenerate with "
            f"RAFT_SCENARIO_REGEN=1 if intended):\n{diff}"
        )
