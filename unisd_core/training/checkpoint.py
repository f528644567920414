"""Checkpoints that resume a run exactly: weights, optimizer, scheduler, EMA teacher, RNG, position.

A checkpoint is a folder ``checkpoints/step-00000N/`` holding ``state.pt`` (the trainable weights:
the adapter under LoRA, the full state dict otherwise; the float32 master weights of a bf16
full fine-tuning; optimizer; scheduler; EMA teacher; torch,
python and numpy RNG states) and ``meta.json`` (step, config fingerprint). The data position is
the step count itself (the data order is a pure function of (seed, epoch)). A checkpoint is
written to a temporary sibling folder and renamed into place, so a crash never leaves a partial
one; the previous checkpoint is removed only after the new one exists. The frozen base model is
not saved: it is the model the run started from and is reloaded from ``config.model``.

Departures from the paper: none (the authors delete checkpoints after evaluation; we keep the last).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from unisd_core.config import TrainConfig

STATE_FILE = "state.pt"
META_FILE = "meta.json"


def _trainable_state(model: nn.Module, lora: bool) -> dict[str, torch.Tensor]:
    if lora:
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return {n: t.detach().clone() for n, t in model.state_dict().items()}


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_root(output_dir: Path) -> Path:
    return Path(output_dir) / "checkpoints"


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return None
    done = [p for p in root.glob("step-*") if (p / META_FILE).is_file() and p.name[5:].isdigit()]
    return max(done, key=lambda p: int(p.name[5:]), default=None)


def save_checkpoint(output_dir: Path, step: int, *, config: TrainConfig, model: nn.Module, lora: bool,
                    optimizer: torch.optim.Optimizer, scheduler: Any, ema: Any | None,
                    master: Any | None = None) -> Path:
    """Write the checkpoint of ``step`` atomically and drop older ones. -> its folder."""
    root = checkpoint_root(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    temporary = root / f".tmp-step-{step:08d}-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    state = {
        "step": step,
        "model": _trainable_state(model, lora),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "rng": rng_state(),
        "master": master.state_dict() if master is not None else None,
    }
    torch.save(state, temporary / STATE_FILE)
    meta = {"step": step, "fingerprint": config.fingerprint(), "lora": lora}
    (temporary / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(temporary, final)
    for older in root.glob("step-*"):
        if older != final:
            shutil.rmtree(older, ignore_errors=True)
    return final


def load_checkpoint(path: Path, *, config: TrainConfig, model: nn.Module, lora: bool,
                    optimizer: torch.optim.Optimizer, scheduler: Any, ema: Any | None,
                    master: Any | None = None) -> int:
    """Restore everything saved in ``path`` (RNG last). -> the step it was taken after."""
    meta = json.loads((Path(path) / META_FILE).read_text(encoding="utf-8"))
    if meta["fingerprint"] != config.fingerprint():
        raise ValueError(
            f"checkpoint {path} belongs to another config (fingerprint {meta['fingerprint'][:12]} != "
            f"{config.fingerprint()[:12]}); use a fresh output_dir or resume=False"
        )
    state = torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=False)
    _load_weights(model, state["model"], lora)
    if master is not None:  # the float32 master weights of a bf16 full fine-tuning (precision.py)
        if state.get("master") is None:
            raise ValueError(f"checkpoint {path} has no float32 master weights; resume=False to restart")
        master.load_state_dict(state["master"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if ema is not None:
        ema.load_state_dict(state["ema"])
    restore_rng_state(state["rng"])
    return int(state["step"])


def _load_weights(model: nn.Module, weights: dict[str, torch.Tensor], lora: bool) -> None:
    if not lora:
        model.load_state_dict(weights)
        return
    parameters = dict(model.named_parameters())
    unknown = sorted(set(weights) - set(parameters))
    if unknown:
        raise ValueError(f"checkpoint adapter tensors not in the model: {unknown[:5]}")
    with torch.no_grad():
        for name, tensor in weights.items():
            parameters[name].copy_(tensor)
