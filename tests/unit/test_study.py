"""Study files: strict validation with every error at once, shipped studies, designs, the CLI's
exit code for an invalid study (2, no traceback, nothing run)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ablations.cli import app
from ablations.study import (StudyValidationError, all_subsets, half_fraction, load_study,
                             validate_study)

ROOT = Path(__file__).resolve().parents[2]
STUDIES = ROOT / "studies"

BROKEN = """
name: broken
models: [tiny-qwen2, mistralai/Mistral-7B-Instruct-v0.3]
training_sets: [scienceqa, sciencqa]
components:
  - []
  - [agreemnt, ema]
component_settings:
  ema: {beta: 1.5, evry_steps: 2}
presets: [base, unisd_star, gkdd]
seeds: [0, one]
training: {max_step: 2, per_device_batch: 0}
evaluation: {limit: 16}
"""


def _errors(text: str) -> dict[str, str]:
    with pytest.raises(StudyValidationError) as caught:
        validate_study(yaml.safe_load(text), source="broken.yaml")
    return {error.path: error.render() for error in caught.value.errors}


def test_broken_study_lists_every_error_at_once() -> None:
    errors = _errors(BROKEN)
    assert set(errors) == {
        "models[1]", "training_sets[1]", "components[1][0]", "component_settings.ema.beta",
        "component_settings.ema.evry_steps", "presets[2]", "seeds[1]", "training.max_step",
        "training.per_device_batch",
    }
    assert "did you mean 'agreement'" in errors["components[1][0]"]
    assert "did you mean 'scienceqa'" in errors["training_sets[1]"]
    assert "did you mean 'gkd'" in errors["presets[2]"]
    assert "did you mean 'every_steps'" in errors["component_settings.ema.evry_steps"]
    assert "did you mean 'max_steps'" in errors["training.max_step"]
    assert "'one'" in errors["seeds[1]"] and "integer" in errors["seeds[1]"]
    assert "unknown model family" in errors["models[1]"] and "qwen2" in errors["models[1]"]
    assert "1.5" in errors["component_settings.ema.beta"] and "<= 1" in errors[
        "component_settings.ema.beta"]
    assert ">= 1" in errors["training.per_device_batch"]


def test_seed_given_as_numeric_text_is_rejected() -> None:
    errors = _errors("name: s\nmodels: [tiny-qwen2]\ntraining_sets: [cose]\n"
                     "presets: [base]\nseeds: ['1']\n")
    assert list(errors) == ["seeds[0]"]


def test_cross_field_errors_are_reported_together() -> None:
    errors = _errors("""
name: cross
models: [tiny-qwen2]
training_sets: [mbpp]
benchmarks: [gpqa]
presets: [sft]
seeds: [1, 1]
per_model: {tiny-qwen: {per_device_batch: 2}}
""")
    assert "did you mean 'tiny-qwen2'" in errors["per_model.tiny-qwen"]
    assert "duplicate" in errors["seeds"]
    assert "training_sets[0]" in errors and "benchmarks" in errors


@pytest.mark.parametrize("name", ["smoke", "paper", "unisd_star"])
def test_shipped_studies_validate(name: str) -> None:
    spec = load_study(STUDIES / f"{name}.yaml")
    assert spec.name == name


def test_paper_study_covers_the_grid_and_the_baselines() -> None:
    spec = load_study(STUDIES / "paper.yaml")
    assert len(spec.subsets()) == 32 and len(spec.models) == 6 and len(spec.seeds) == 3
    assert set(spec.presets) == {"base", "sft", "sdft", "gkd", "ssd", "opsd", "unisd_star"}
    assert spec.training_overrides("Qwen/Qwen2.5-0.5B-Instruct")["per_device_batch"] == 16
    assert spec.training_overrides("meta-llama/Llama-3.1-8B-Instruct")["per_device_batch"] == 4


def test_defaults_for_output_and_tracking() -> None:
    spec = validate_study({"name": "demo", "models": ["tiny-llama"],
                           "training_sets": ["cose"], "presets": ["base"]})
    assert spec.resolved_output_dir() == Path("runs/demo")
    assert spec.resolved_tracking_uri().startswith("sqlite:///")
    assert spec.resolved_tracking_uri().endswith("runs/demo/mlflow.db")


def test_half_fraction_is_resolution_five() -> None:
    fraction = half_fraction()
    assert len(fraction) == 16 and len(all_subsets()) == 32
    assert all(len(subset) % 2 == 1 for subset in fraction)  # I = ABCDE
    # Resolution V: every pair of factors sees all four on/off combinations equally often,
    # and so does every triple (no main effect or 2fi is aliased with another one).
    names = ["agreement", "contrastive", "feature_matching", "ema", "clipping"]
    for size in (2, 3, 4):
        for combo in itertools.combinations(names, size):
            patterns = [tuple(n in s for n in combo) for s in fraction]
            assert len(set(patterns)) == 2 ** size
            assert len({patterns.count(p) for p in set(patterns)}) == 1


def test_cli_invalid_study_exits_2_with_all_errors_and_runs_nothing(tmp_path: Path) -> None:
    study = tmp_path / "broken.yaml"
    output = tmp_path / "out"
    study.write_text(BROKEN + f"output_dir: {output}\n")
    runner = CliRunner()
    for command in (["study", "validate"], ["study", "plan"], ["study", "run"], ["report"]):
        result = runner.invoke(app, [*command, str(study)])
        assert result.exit_code == 2, result.output
        assert "9 error(s)" in result.output
        assert "Traceback" not in result.output
        assert isinstance(result.exception, SystemExit)
    assert not output.exists()


def test_local_model_folder_family_from_its_config(tmp_path: Path) -> None:
    known, unknown = tmp_path / "my-model", tmp_path / "other-model"
    known.mkdir()
    unknown.mkdir()
    (known / "config.json").write_text('{"model_type": "gemma3_text"}')
    (unknown / "config.json").write_text('{"model_type": "mistral"}')
    base = {"name": "local", "training_sets": ["cose"], "presets": ["base"]}
    assert validate_study({**base, "models": [str(known)]}).models == [str(known)]
    with pytest.raises(StudyValidationError) as caught:
        validate_study({**base, "models": [str(known), str(unknown)]})
    assert [error.path for error in caught.value.errors] == ["models[1]"]


def test_dict_keys_and_duplicates_are_reported_with_paths() -> None:
    errors = _errors("""
name: keys
models: [tiny-qwen2]
training_sets: [scienceqa]
components: [[ema, ema]]
data: {sources: {sciqa: /tmp/x.jsonl}}
resources: {gpus: 1}
""")
    assert "did you mean 'scienceqa'" in errors["data.sources.sciqa"]
    assert "did you mean 'num_gpus'" in errors["resources.gpus"]
    assert len(errors) == 2  # field errors first; the duplicate needs valid fields to be seen
    errors = _errors("name: d\nmodels: [tiny-qwen2]\ntraining_sets: [cose]\n"
                     "components: [[ema, ema]]\n")
    assert "twice" in errors["components[0]"]


def test_synthetic_is_a_training_set_and_benchmark_of_its_own() -> None:
    from ablations.grid import expand_grid
    from evaluation.results import benchmarks_for
    from unisd_core.data.records import BENCHMARKS, EXTRA_BENCHMARKS

    assert benchmarks_for("synthetic") == ("synthetic",)
    assert "synthetic" in EXTRA_BENCHMARKS and "synthetic" not in BENCHMARKS
    spec = load_study(STUDIES / "synthetic.yaml")
    assert spec.training_sets == ["synthetic"] and spec.data.sources == {}
    cells = expand_grid(spec)
    assert len(cells) == 16  # base once + (SFT + 4 subsets) x 3 seeds
    assert {cell.benchmarks for cell in cells} == {("synthetic",)}
    assert {cell.data.source for cell in cells} == {None}  # generated splits, nothing to write
    assert {cell.method for cell in cells} == {"base", "sft", "sdft", "unisd"}
    # Without a benchmarks section the implied benchmark is still accepted (ours, not the six).
    implied = validate_study({"name": "s", "models": ["tiny-qwen2"], "training_sets":
                              ["synthetic"], "presets": ["base"]})
    assert {cell.benchmarks for cell in expand_grid(implied)} == {("synthetic",)}


def test_synthetic_benchmark_needs_the_synthetic_training_set() -> None:
    errors = _errors("name: s\nmodels: [tiny-qwen2]\ntraining_sets: [scienceqa]\n"
                     "benchmarks: [synthetic]\npresets: [base]\n")
    assert any("no listed training set evaluates" in text for text in errors.values())
    errors = _errors("name: s\nmodels: [tiny-qwen2]\ntraining_sets: [synthetc]\n"
                     "presets: [base]\n")
    assert "synthetic" in errors["training_sets[0]"]
