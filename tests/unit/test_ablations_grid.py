"""Grid expansion (study -> CellSpec) and the plan: job counts by kind and GPU seconds."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from ablations.cli import app
from ablations.grid import cell_label, expand_grid
from ablations.plan import plan_cells
from ablations.study import load_study, validate_study
from unisd_core.presets import UNISD_STAR

ROOT = Path(__file__).resolve().parents[2]


def _study(**extra) -> dict:
    return {"name": "g", "models": ["tiny-qwen2"], "training_sets": ["scienceqa"], **extra}


def test_subsets_use_study_settings_and_defaults() -> None:
    spec = validate_study(_study(components=[[], ["ema"], ["agreement", "clipping"]],
                                 component_settings={"ema": {"beta": 0.5}}, seeds=[0, 3]))
    cells = expand_grid(spec)
    assert len(cells) == 6
    ema = [c for c in cells if c.subset == "ema"]
    assert {c.seed for c in ema} == {0, 3}
    assert all(c.train.components.ema.beta == 0.5 and c.method == "unisd" for c in ema)
    pair = next(c for c in cells if c.subset == "agreement+clipping")
    assert pair.train.components.agreement.gamma == 0.01  # the alone default
    empty = next(c for c in cells if c.subset == "none")
    assert empty.method == "sdft" and empty.benchmarks == ("scienceqa", "gpqa")
    assert len({c.run_key() for c in cells}) == len(cells)


def test_presets_base_once_sdft_deduplicated_unisd_star_halved() -> None:
    spec = validate_study(_study(components=[[]], presets=["base", "sdft", "sft", "unisd_star"],
                                 seeds=[0, 1], training={"per_device_batch": 8},
                                 halve_batch_for_unisd_star=True))
    cells = expand_grid(spec)
    labels = sorted(cell_label(c.name) for c in cells)
    # base once; the sdft preset is the empty subset (same run key), kept once.
    assert labels == ["base", "none", "none", "sft", "sft", "unisd_star", "unisd_star"]
    star = [c for c in cells if cell_label(c.name) == "unisd_star"]
    assert all(c.train.components == UNISD_STAR for c in star)
    assert all(c.train.per_device_batch == 4 for c in star)
    assert all(c.train.per_device_batch == 8 for c in cells if c.method in ("sdft", "sft"))


def test_per_model_overrides_win_over_study_training() -> None:
    spec = validate_study({"name": "m", "models": ["tiny-qwen2", "tiny-llama"],
                           "training_sets": ["cose"], "presets": ["sft"],
                           "training": {"per_device_batch": 4, "max_steps": 3},
                           "per_model": {"tiny-llama": {"per_device_batch": 2}}})
    batch = {c.model: c.train.per_device_batch for c in expand_grid(spec)}
    assert batch == {"tiny-qwen2": 4, "tiny-llama": 2}
    assert all(c.train.max_steps == 3 for c in expand_grid(spec))


def test_paper_plan_counts_jobs_by_kind() -> None:
    spec = load_study(ROOT / "studies" / "paper.yaml")
    cells = expand_grid(spec)
    plan = plan_cells(cells)
    models, training_sets, seeds = 6, 4, 3
    trained = models * training_sets * seeds * (32 + 5)  # sdft preset = the empty subset
    assert plan.jobs == {"prepare": models * training_sets, "base-eval": models * training_sets,
                         "train": trained, "evaluate": trained}
    assert len(cells) == trained + models * training_sets
    assert plan.total_seconds > 0 and plan.gpu_hours == plan.total_seconds / 3600


def test_plan_seconds_grow_with_components_and_steps() -> None:
    base = dict(_study(components=[[], ["agreement", "contrastive"]], training={"max_steps": 4}))
    cells = expand_grid(validate_study(base))
    plan = plan_cells(cells)
    by_subset = {c.subset: plan_cells([c]).seconds["train"] for c in cells}
    assert by_subset["agreement+contrastive"] > by_subset["none"] > 0
    longer = expand_grid(validate_study({**base, "training": {"max_steps": 8}}))
    assert plan_cells(longer).seconds["train"] == 2 * plan.seconds["train"]


def test_cli_plan_paper_prints_jobs_and_gpu_hours() -> None:
    result = CliRunner().invoke(app, ["study", "plan", str(ROOT / "studies" / "paper.yaml")])
    assert result.exit_code == 0, result.output
    for kind, count in (("prepare", 24), ("base-eval", 24), ("train", 2664),
                        ("evaluate", 2664)):
        assert re.search(rf"{kind}\s*│\s*{count}\s*│", result.output), result.output
    assert "GPU hours" in result.output and "GPU seconds" in result.output


def test_cli_validate_and_plan_smoke() -> None:
    runner = CliRunner()
    study = str(ROOT / "studies" / "smoke.yaml")
    validated = runner.invoke(app, ["study", "validate", study])
    assert validated.exit_code == 0 and "3 cells" in validated.output
    planned = runner.invoke(app, ["study", "plan", study, "--cells"])
    assert planned.exit_code == 0
    assert "tiny-qwen2__scienceqa__ema__seed0" in planned.output
