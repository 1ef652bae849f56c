"""The package's layers import downward only: the project's own guard of its structure.

    cli, cli_data                       5
    stages                              4   (only stages/demo.py composes other stages)
    training, evaluation, web           3   (siblings: no imports between them)
    models, run_dir                     2   (siblings)
    data                                1.5
    config                              1
    errors, paths, hub                  0

Every ``vlmtune.*`` import counts, function-level ones included. A function-level import of
vlmtune code is allowed only in the CLI modules, which nothing imports (deferring there keeps
``vlmtune --help`` fast and cannot hide a cycle). Run it alone: ``pytest tests/unit/test_layers.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "src" / "vlmtune"
RANK = {"cli": 5, "cli_data": 5, "stages": 4, "training": 3, "evaluation": 3, "web": 3, "models": 2, "run_dir": 2,
        "data": 1.5, "config": 1, "errors": 0, "paths": 0, "hub": 0}
TOP = {"cli", "cli_data"}
COMPOSER = "stages/demo.py"  # the one stage that runs other stages


def layer_of(module: str) -> str:
    """'vlmtune.models.lora' -> 'models'; the package's __init__ and __main__ sit on top."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "cli"


def imports(tree: ast.AST) -> list[tuple[int, str, bool]]:
    """(line, vlmtune module, inside a function) for every vlmtune import in the file."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                names = [child.module]
            elif isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            else:
                names = []
            found.extend((child.lineno, n, in_function) for n in names if n == "vlmtune" or n.startswith("vlmtune."))
            visit(child, nested)

    visit(tree, False)
    return found


def violations(root: Path = ROOT) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        me = rel.split("/")[0].removesuffix(".py")
        if me in ("__init__", "__main__"):
            me = "cli"
        for line, module, deferred in imports(ast.parse(path.read_text(), str(path))):
            other = layer_of(module)
            where = f"{rel}:{line} imports {module}"
            if me not in RANK or other not in RANK:
                bad.append(f"{where}: layer {me if me not in RANK else other!r} has no rank in test_layers.py")
            elif deferred and me not in TOP:
                bad.append(f"{where} inside a function: import it at the top (a deferred import can hide a cycle)")
            elif other == me == "stages" and rel != COMPOSER and not rel.endswith("__init__.py"):
                bad.append(f"{where}: a stage imports another stage; move the shared code down a layer")
            elif other != me and RANK[other] >= RANK[me] and {me, other} != TOP:
                bad.append(f"{where}: {me} (layer {RANK[me]}) may not import {other} (layer {RANK[other]})")
    return bad


def test_every_import_points_down():
    assert violations() == []


@pytest.mark.parametrize("source, expected", [
    ("from vlmtune.stages.train import train_run\n", "may not import stages"),
    ("def f():\n    from vlmtune.models.lora import plan_for\n", "inside a function"),
    ("import vlmtune.evaluation.metrics\n", "may not import evaluation"),
])
def test_the_guard_catches_an_upward_import(tmp_path, source, expected):
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "x.py").write_text(source)
    (tmp_path / "training" / "ok.py").write_text("from vlmtune.models.lora import plan_for\n")
    assert len(violations(tmp_path)) == 1 and expected in violations(tmp_path)[0]


def test_the_guard_catches_a_stage_importing_a_stage(tmp_path):
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "chat.py").write_text("from vlmtune.stages.predict import open_picture\n")
    (tmp_path / "stages" / "demo.py").write_text("from vlmtune.stages.train import train_run\n")
    assert violations(tmp_path) == ["stages/chat.py:1 imports vlmtune.stages.predict: a stage imports another stage; "
                                    "move the shared code down a layer"]
