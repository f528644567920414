"""Hostile study files (issue 18, items 6-8): every one gives the same listed error as any other
bad study file (``unisd study validate`` exits 2, names the problem, no traceback), bounded in
size; what is accepted but changed or unchecked is said in a note."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ablations.cli import app
from ablations.grid import expand_grid
from ablations.study import StudyValidationError, load_study

GOOD = "name: hostile\nmodels: [tiny-qwen2]\ntraining_sets: [synthetic]\npresets: [sdft]\n"


def _validate(tmp_path: Path, content: str | bytes, *extra: str, command: str = "validate"):
    path = tmp_path / "study.yaml"
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return CliRunner().invoke(app, ["study", command, str(path), *extra])


def _invalid(tmp_path: Path, content: str | bytes, *needles: str, extra: tuple[str, ...] = (),
             command: str = "validate") -> str:
    result = _validate(tmp_path, content, *extra, command=command)
    assert result.exit_code == 2, result.output
    assert "invalid study" in result.output and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in result.output, (needle, result.output)
    return result.output


def test_the_good_study_is_valid(tmp_path: Path) -> None:
    result = _validate(tmp_path, GOOD)
    assert result.exit_code == 0, result.output


# ---- item 6: tracebacks become listed errors -----------------------------------------------


def test_non_utf8_bytes_are_a_listed_error(tmp_path: Path) -> None:
    _invalid(tmp_path, GOOD.encode() + b"description: caf\xe9\n", "not UTF-8", "0xe9")


def test_ten_thousand_levels_of_nesting_are_a_listed_error(tmp_path: Path) -> None:
    _invalid(tmp_path, GOOD + "description: " + "[" * 10_000 + "]" * 10_000 + "\n", "nesting deeper")
    _invalid(tmp_path, GOOD + "description:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 3000)),
             "nesting deeper")


@pytest.mark.parametrize("payload", ["[1, 2]", "not json {", '"qwen2"'])
def test_model_folder_whose_config_is_not_an_object_is_a_listed_error(tmp_path: Path, payload: str) -> None:
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text(payload, encoding="utf-8")
    study = GOOD.replace("[tiny-qwen2]", f"[{json.dumps(str(folder))}]")
    _invalid(tmp_path, study, "models[0]", "config.json")


# ---- item 7: alias bombs -------------------------------------------------------------------

BOMB = GOOD + """description: x
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
"""


def test_alias_bomb_is_refused_with_a_short_message(tmp_path: Path) -> None:
    output = _invalid(tmp_path, BOMB, "aliases")
    assert len(output) < 2000


def test_few_aliases_that_expand_past_the_bound_are_refused(tmp_path: Path) -> None:
    # 6 aliases, each doubling: 2^k growth without many alias events.
    lines = ['a0: &a0 ["' + "x" * 10 + '"' + ', "x"' * 40 + "]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
              f"*a{i - 1}]" for i in range(1, 7)]
    output = _invalid(tmp_path, GOOD + "\n".join(lines) + "\n", "expands to more than")
    assert len(output) < 2000


def test_a_huge_bad_value_prints_only_its_beginning(tmp_path: Path) -> None:
    output = _invalid(tmp_path, GOOD + "seeds: [" + ", ".join(["x" * 50] * 5000) + "]\n", "seeds")
    assert len(output) < 20_000


# ---- item 8: accepted silently before --------------------------------------------------------


@pytest.mark.parametrize("where", ["/", "runs/../../elsewhere", "..", "   "])
def test_output_dir_root_or_climbing_is_refused(tmp_path: Path, where: str) -> None:
    _invalid(tmp_path, GOOD + f"output_dir: {json.dumps(where)}\n", "output_dir")


def test_output_dir_flag_is_checked_too(tmp_path: Path) -> None:
    _invalid(tmp_path, GOOD, "--output-dir", "root", extra=("--output-dir", "/"), command="status")


def test_duplicate_keys_are_refused_with_both_lines(tmp_path: Path) -> None:
    study = GOOD + "seeds: [0]\ntraining:\n  max_steps: 2\n  max_steps: 3\nseeds: [1]\n"
    output = _invalid(tmp_path, study, "duplicate key 'seeds'", "duplicate key 'max_steps'")
    assert "line 9" in output and "line 5" in output


@pytest.mark.parametrize("line,path", [
    ("training: {max_steps: '3'}", "training.max_steps"),
    ("halve_batch_for_unisd_star: yes", "halve_batch_for_unisd_star"),
    ("halve_batch_for_unisd_star: 'true'", "halve_batch_for_unisd_star"),
    ("training: {learning_rate: .inf}", "training.learning_rate"),
    ("training: {temperature: .nan}", "training.temperature"),
    ("training: {max_steps: 1.0e21}", "training.max_steps"),
    ("training: {max_steps: 1000000000000000000000}", "training.max_steps"),
    ("seeds: [340282366920938463463374607431768211456]", "seeds[0]"),
    ("training: {max_steps: 1:30}", "training.max_steps"),
])
def test_lax_coercions_and_absurd_values_are_refused(tmp_path: Path, line: str, path: str) -> None:
    _invalid(tmp_path, GOOD + line + "\n", path)


def test_equivalent_subsets_and_empty_subset_with_sdft_collapse_with_a_note(tmp_path: Path) -> None:
    study = GOOD + "components: [[agreement, ema], [ema, agreement], []]\nseeds: [0]\n"
    result = _validate(tmp_path, study)
    assert result.exit_code == 0, result.output
    notes = result.stderr
    assert "components[0], components[1] are the same subset [agreement, ema]" in notes
    assert "empty subset [] and the preset sdft are the same run" in notes
    spec = load_study(tmp_path / "study.yaml")
    assert len(expand_grid(spec)) == 2  # {agreement, ema} once, plain SDFT once
    assert "2 cells" in result.stdout


def test_misspelled_hub_id_of_a_known_family_is_said_unverified_offline(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = _validate(tmp_path, GOOD.replace("[tiny-qwen2]", "[Qwen/Qwen2.5-0.5B-Instrct]"))
    assert result.exit_code == 0, result.output
    assert "could not be verified" in result.stderr and "offline" in result.stderr
    assert "did you mean 'Qwen/Qwen2.5-0.5B-Instruct'" in result.stderr
    listed = _validate(tmp_path, GOOD.replace("[tiny-qwen2]", "[Qwen/Qwen2.5-0.5B-Instruct]"))
    assert listed.exit_code == 0 and "could not be verified" not in listed.stderr


def test_every_problem_is_listed_together(tmp_path: Path) -> None:
    study = (GOOD + "output_dir: /\nseeds: ['1']\ntraining: {learning_rate: .inf}\nseeds: [2]\n")
    path = tmp_path / "study.yaml"
    path.write_text(study, encoding="utf-8")
    with pytest.raises(StudyValidationError) as caught:
        load_study(path)
    paths = {error.path for error in caught.value.errors}
    messages = " ".join(error.message for error in caught.value.errors)
    assert {"output_dir", "training.learning_rate"} <= paths and "duplicate key 'seeds'" in messages


def test_a_few_anchors_and_merges_still_work(tmp_path: Path) -> None:
    study = GOOD + ("training: &shared {max_steps: 2, per_device_batch: 2}\n"
                    "per_model:\n  tiny-qwen2: {<<: *shared, max_steps: 3}\n")
    result = _validate(tmp_path, study)
    assert result.exit_code == 0, result.output
    spec = load_study(tmp_path / "study.yaml")
    assert spec.training_overrides("tiny-qwen2") == {"max_steps": 3, "per_device_batch": 2}
