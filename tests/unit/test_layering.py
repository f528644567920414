"""Imports go one way (design.md): unisd_core knows no ray/mlflow/lm_eval, evaluation no ray/mlflow,
nothing imports tests, and lower layers never import upper ones. Checked on the AST, so lazy
imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN = {
    "unisd_core": {"ray", "mlflow", "lm_eval", "evaluation", "pipelines", "ablations", "tests"},
    "evaluation": {"ray", "mlflow", "pipelines", "ablations", "tests"},
    "pipelines": {"ablations", "tests"},
    "ablations": {"tests"},
}


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_layering(package: str) -> None:
    violations = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = imported_top_levels(path) & FORBIDDEN[package]
        if bad:
            violations.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not violations, "layering violated:\n" + "\n".join(violations)


def test_checker_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import ray.util\n    from mlflow import log_metric\n")
    assert {"ray", "mlflow"} <= imported_top_levels(bad)
