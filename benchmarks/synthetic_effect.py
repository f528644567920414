"""Measure the self-distillation effect on the synthetic task with the real training loop (issues 7, 14).

    python -m benchmarks.synthetic_effect --out runs/synthetic_effect [--bases NAME ...] [--seeds 0 1 2]

Steps, per base (default: the three shipped bases ``tiny-qwen2-synth``, ``-s1``, ``-s2``): (1) the
base is scored greedily on the synthetic test split without and with the gold demonstration in
the context (the SDFT teacher's prompt); (2) each method (SFT, SDFT = the empty subset, single
components) is trained with :func:`unisd_core.training.train` on the synthetic train split for
every seed, with the training and component settings of ``studies/synthetic.yaml`` (read from
it, so the two cannot drift apart); (3) each trained model is scored the same way; (4) each
method's gain over the base gets the report's calibrated 95% interval
(:func:`ablations.analysis.intervals.contrast_intervals`: seed-level t plus the shared item term).
With several bases, a pooled line treats the base as a random factor: per base the seed-mean
gain per item, then the same interval with the bases in the seeds' place (t with B - 1 df over
base-level gains, plus the item term), so base-to-base variation widens it honestly.
Greedy decoding, the letter cascade of :func:`evaluation.scorers.score_letter`. Prints Markdown
tables and writes every per-item score to ``--out``/<base>/results.json (and all bases of the call
to ``--out``/results.json).

The same numbers come out of the study (``studies/synthetic.yaml``, base ``tiny-qwen2-synth``)
item for item; this script needs no Ray/MLflow/lm-eval. Departure from the paper: tiny model,
tiny budget; the paper's settings are in method.md 4.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ablations.analysis.intervals import contrast_intervals
from evaluation.scorers import score_letter
from ablations.study import load_study
from unisd_core.config import ClippingConfig, ComponentsConfig, EmaConfig, FeatureMatchingConfig
from unisd_core.data.datasets import load_records
from unisd_core.models.zoo import load_model_and_tokenizer, resolve_model
from unisd_core.presets import preset_config
from unisd_core.prompts import chat_prompt, teacher_prompt_text
from unisd_core.training import train

STUDY = Path(__file__).resolve().parents[1] / "studies" / "synthetic.yaml"
BASES = ("tiny-qwen2-synth", "tiny-qwen2-synth-s1", "tiny-qwen2-synth-s2")
METHOD_NAMES = ("sft", "sdft", "ema", "clipping", "feature_matching")


def study_settings() -> tuple[dict, ComponentsConfig, int, int | None]:
    """(training overrides, component settings, eval max_new_tokens, eval limit) of the demo study."""
    spec = load_study(STUDY)
    return (spec.training.model_dump(exclude_unset=True), spec.component_settings,
            spec.evaluation.max_new_tokens, spec.evaluation.limit)


def method_config(name: str, settings: ComponentsConfig) -> dict:
    """Preset and components of one method (single components take the study's settings)."""
    if name in ("sft", "sdft"):
        return {"preset": name}
    defaults = {"ema": EmaConfig(), "clipping": ClippingConfig(),
                "feature_matching": FeatureMatchingConfig()}
    config = getattr(settings, name) or defaults[name]
    return {"preset": "sdft", "components": ComponentsConfig(**{name: config})}


def greedy_completions(model, tokenizer, texts: list[str], *, batch_size: int = 50,
                       max_new_tokens: int = 32) -> list[str]:
    """Greedy chat completions of ``texts`` (left-padded batches; special tokens stripped)."""
    tokenizer.padding_side = "left"
    outputs: list[str] = []
    for start in range(0, len(texts), batch_size):
        prompts = [chat_prompt(tokenizer, text) for text in texts[start:start + batch_size]]
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            generated = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
        outputs += tokenizer.batch_decode(generated[:, batch["input_ids"].shape[1]:],
                                          skip_special_tokens=True)
    return outputs


def item_scores(model_dir: str, records, *, with_demonstration: bool = False,
                max_new_tokens: int = 32) -> tuple[list[float], list[str]]:
    """Per-item accuracy (0/1) of a model folder on ``records`` and its completions."""
    model, tokenizer = load_model_and_tokenizer(model_dir)
    texts = [teacher_prompt_text(r.prompt, r.demonstration) if with_demonstration else r.prompt
             for r in records]
    outputs = greedy_completions(model, tokenizer, texts, max_new_tokens=max_new_tokens)
    scores = [score_letter(text, r.answer, "".join(r.metadata["valid_letters"]))[0]
              for text, r in zip(outputs, records)]
    return scores, outputs


def gain_interval(method_SI: np.ndarray, base_I: np.ndarray) -> tuple[float, float, float]:
    """Mean gain over the (single) base run and its calibrated 95% interval (as the report's)."""
    seeds, items = method_SI.shape
    scores_KSI = np.stack([method_SI, np.broadcast_to(base_I, (seeds, items))]).astype(float)
    found = contrast_intervals(scores_KSI, np.array([[1.0], [-1.0]]))
    return float(found.estimate[0]), float(found.low[0]), float(found.high[0])


def run(out: Path, seeds: list[int], methods: list[str], *, base: str = BASES[0]) -> dict:
    """Score ``base`` with and without the demonstration, train and score every method x seed."""
    torch.set_num_threads(1)  # one thread: much faster than two on a busy 2-core machine
    started = time.perf_counter()
    training, components, max_new_tokens, limit = study_settings()
    train_records = load_records("synthetic", "train")
    test_records = load_records("synthetic", "test", limit=limit)
    base_dir = resolve_model(base)
    score = lambda folder, **kw: item_scores(folder, test_records, max_new_tokens=max_new_tokens, **kw)[0]  # noqa: E731
    results: dict = {"base_name": base, "base_dir": base_dir, "training": training,
                     "items": [r.id for r in test_records], "methods": {}}
    results["base"] = score(base_dir)
    results["base_with_demonstration"] = score(base_dir, with_demonstration=True)
    for name in methods:
        spec = method_config(name, components)
        per_seed = []
        for seed in seeds:
            config = preset_config(spec["preset"], model=base_dir, seed=seed,
                                   **({"components": spec["components"]} if "components" in spec else {}),
                                   **training)
            result = train(config, train_records, output_dir=out / Path(base).name / f"{name}-seed{seed}")
            per_seed.append(score(str(result.model_dir)))
        results["methods"][name] = per_seed
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


def pooled_gain(per_base: list[dict], method: str) -> tuple[float, float, float]:
    """Gain over the base pooled over bases as a random factor (module docstring): the report's
    interval with bases in the seeds' place, on per-base seed-mean scores."""
    method_BI = np.stack([np.mean(r["methods"][method], axis=0) for r in per_base]).astype(float)
    base_BI = np.stack([r["base"] for r in per_base]).astype(float)
    found = contrast_intervals(np.stack([method_BI, base_BI]), np.array([[1.0], [-1.0]]))
    return float(found.estimate[0]), float(found.low[0]), float(found.high[0])


def pooled_table(per_base: list[dict]) -> str:
    """Markdown: per method, each base's gain and the pooled gain with its interval."""
    names = [r["base_name"] for r in per_base]
    lines = ["| method | " + " | ".join(f"gain on {n}" for n in names) + " | pooled [95% CI, bases x items] |",
             "|---" * (len(names) + 2) + "|"]
    for method in per_base[0]["methods"]:
        gains = [float(np.mean(r["methods"][method]) - np.mean(r["base"])) for r in per_base]
        gain, low, high = pooled_gain(per_base, method)
        lines.append(f"| {method} | " + " | ".join(f"{g:+.3f}" for g in gains)
                     + f" | {gain:+.3f} [{low:+.3f}, {high:+.3f}] |")
    return "\n".join(lines)


def table(results: dict) -> str:
    """Markdown: accuracy (mean over seeds) and gain over the base with its 95% interval."""
    base = np.asarray(results["base"], dtype=float)
    lines = ["| model | accuracy | gain over base [95% CI, items x seeds] |", "|---|---|---|",
             f"| base (no demonstration) | {base.mean():.3f} | - |",
             f"| base + demonstration (teacher prompt) | "
             f"{np.mean(results['base_with_demonstration']):.3f} | - |"]
    for name, per_seed in results["methods"].items():
        scores_SI = np.asarray(per_seed, dtype=float)
        gain, low, high = gain_interval(scores_SI, base)
        lines.append(f"| {name} ({len(per_seed)} seeds) | {scores_SI.mean():.3f} | "
                     f"{gain:+.3f} [{low:+.3f}, {high:+.3f}] |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.synthetic_effect",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/synthetic_effect"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["sft", "sdft"], choices=METHOD_NAMES)
    parser.add_argument("--bases", nargs="+", default=list(BASES), help="base model names or folders")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    per_base = []
    for base in args.bases:
        results = run(args.out, args.seeds, args.methods, base=base)
        per_base.append(results)
        (args.out / Path(base).name).mkdir(parents=True, exist_ok=True)
        (args.out / Path(base).name / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
        (args.out / "results.json").write_text(json.dumps(per_base, indent=1), encoding="utf-8")
        print(f"## {base}\n\n{table(results)}\n\n{results['seconds']:.0f} s\n", flush=True)
    if len(per_base) > 1:
        print(f"## pooled over {len(per_base)} bases\n\n{pooled_table(per_base)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
