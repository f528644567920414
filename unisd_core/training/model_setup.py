"""The student as the loop trains it (LoRA via peft, or all weights) and the exported model folder.

``build_student`` loads the base model, seeds the adapter initialisation from the run seed and
wraps it with the LoRA settings of the config (``TrainConfig.lora = None``: full fine-tuning).
``export_model`` writes a folder that ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` load: under LoRA the adapter is merged into a copy of the
weights, so evaluation needs no peft.

Departures from the paper: none. Full fine-tuning of a bf16 model trains through float32 master
weights that the loop keeps (:mod:`.precision`), so its updates do not round away.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unisd_core.config import TrainConfig
from unisd_core.models.zoo import load_model_and_tokenizer


def build_student(config: TrainConfig, *, device: str = "cpu") -> tuple[nn.Module, Any]:
    """(student in train mode, tokenizer). Adapter weights are drawn under ``config.seed``."""
    model, tokenizer = load_model_and_tokenizer(config.model, dtype=config.dtype, device=device)
    torch.manual_seed(config.seed)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.lora is not None:
        from peft import LoraConfig, get_peft_model

        lora = config.lora
        peft_config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                 target_modules=list(lora.target_modules), task_type="CAUSAL_LM")
        model = get_peft_model(model, peft_config)
    else:
        model.requires_grad_(True)
    model.train()
    return model, tokenizer


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def export_model(model: nn.Module, tokenizer: Any, directory: Path, *, lora: bool,
                 extra: dict[str, Any] | None = None) -> Path:
    """Write the final model (adapter merged) + tokenizer to ``directory`` atomically.

    Under LoRA the adapter is merged *in place* (no second copy of the weights at paper scale):
    call this once, after the last step; the PeftModel must not be trained afterwards.
    """
    directory = Path(directory)
    temporary = directory.with_name(f".tmp-{directory.name}-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    plain = model.merge_and_unload() if lora else model
    was_training = plain.training
    plain.eval()
    plain.save_pretrained(temporary)
    plain.train(was_training)
    tokenizer.save_pretrained(temporary)
    (temporary / "unisd_training.json").write_text(json.dumps(extra or {}, indent=2, default=str),
                                                   encoding="utf-8")
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(temporary, directory)
    return directory
