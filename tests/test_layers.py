"""Imports run one way, down the layers: no module imports an entry point or a layer above its own.
Function-level imports count too. Also: the repository speaks only of mmrec."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Lowest first. A module may import its own package and any lower layer, nothing else of mmrec.
LAYERS = [
    ("mmrec.io", "mmrec.configs", "mmrec.distributed"),
    ("mmrec.data", "mmrec.checkpoint"),
    ("mmrec.models", "mmrec.evaluation"),
    ("mmrec.losses", "mmrec.modalities"),
    ("mmrec.training",),
    ("mmrec.build",),
    ("mmrec.serving", "mmrec.runs"),
]
ENTRY_POINTS = (
    "mmrec.train",
    "mmrec.evaluate",
    "mmrec.export",
    "mmrec.serve",
    "mmrec.recommend",
    "mmrec.benchmark",
    "mmrec.report",
    "mmrec.validate",
)


def unit_of(module: str) -> str:
    """The layer entry a module belongs to (its package, or itself for a top-level module)."""
    for units in LAYERS:
        for unit in units:
            if module == unit or module.startswith(unit + "."):
                return unit
    if module in ENTRY_POINTS or module == "mmrec":
        return module
    raise AssertionError(f"{module} is in no layer of tests/test_layers.py: place it")


def level(unit: str) -> int:
    for k, units in enumerate(LAYERS):
        if unit in units:
            return k
    return len(LAYERS)  # entry points, above everything


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {m for m in found if m == "mmrec" or m.startswith("mmrec.")}


def test_imports_run_down_the_layers():
    wrong = []
    for path in sorted((ROOT / "mmrec").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mine = unit_of(module)
        for imported in imports(path):
            theirs = unit_of(imported)
            if theirs == mine or theirs == "mmrec":
                continue
            if theirs in ENTRY_POINTS or level(theirs) >= level(mine):
                wrong.append(f"{module} imports {imported}")
    assert not wrong, "imports that run up or sideways:\n" + "\n".join(wrong)


def test_the_repository_speaks_only_of_mmrec():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    words = (
        "../" + "shared",
        "/wor" + "k/",
        "/tm" + "p/",
        "this " + "task",
        "the quality " + "issue",
        "lent a " + "GPU",
    )
    hits = [
        f"{name}: {word}"
        for name in tracked
        if (ROOT / name).is_file() and not name.endswith((".png", ".jpg")) and name != "tests/test_layers.py"
        for word in words
        if word in (ROOT / name).read_text(errors="ignore")
    ]
    assert not hits, "\n".join(hits)
