"""The flow runs one way: YAML → model → plan → render → lab → scenarios → analysis, with
the CLI on top and agents/ beneath everything. A room imports only rooms before it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROOMS = ["model", "render", "lab", "scenarios", "analysis", "export", "cli"]
# What each room may import besides itself and agents/.
ALLOWED = {
    "model": set(),
    "render": {"model"},
    "lab": {"model", "render"},
    "scenarios": {"model", "render", "lab", "analysis"},  # scenarios hand raw files on
    "analysis": {"model"},
    # exports read the model, the rendered configs and the lab's daemon declarations
    "export": {"model", "render", "lab"},
    "cli": set(ROOMS),
}


def imports(py: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(py.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_rooms_import_only_rooms_before_them() -> None:
    wrong = []
    for room in ROOMS:
        for py in (ROOT / "topologies" / room).rglob("*.py"):
            for mod in imports(py):
                parts = mod.split(".")
                if parts[0] != "topologies" or len(parts) < 2 or parts[1] == room:
                    continue
                if parts[1] not in ALLOWED[room]:
                    wrong.append(f"{py.relative_to(ROOT)} imports {mod}")
    assert wrong == []


def test_agents_never_import_the_lab() -> None:
    wrong = [f"{py.relative_to(ROOT)} imports {m}" for py in (ROOT / "agents").rglob("*.py")
             for m in imports(py) if m.split(".")[0] == "topologies"]
    assert wrong == []
