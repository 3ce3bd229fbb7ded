"""The core is pure: no I/O, clock, global RNG or framework imports (only wal/snapfile do I/O)."""
from __future__ import annotations

import ast
from pathlib import Path

import cluster.raft

RAFT_DIR = Path(cluster.raft.__file__).parent
STORAGE_MODULES = {"wal.py", "snapfile.py"}
FORBIDDEN_MODULES = {"asyncio", "grpc", "lmdb", "time", "random", "os", "io", "threading",
                     "socket", "selectors", "datetime"}
FORBIDDEN_CALLS = {"open", "print", "input"}


def _runtime_imports(tree: ast.Module):
    """Imports outside ``if TYPE_CHECKING:`` blocks."""
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module.split(".")[0]


def test_core_modules_import_nothing_impure() -> None:
    core = [p for p in RAFT_DIR.glob("*.py") if p.name not in STORAGE_MODULES]
    assert len(core) >= 10
    for path in core:
        tree = ast.parse(path.read_text())
        bad = set(_runtime_imports(tree)) & FORBIDDEN_MODULES
        assert not bad, f"{path.name} imports {bad}"
        calls = {
            n.func.id for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
        }
        assert not calls & FORBIDDEN_CALLS, f"{path.name} calls {calls & FORBIDDEN_CALLS}"
