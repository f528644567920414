"""Typed, frozen configuration of one training run and of each of the five components.

Every component owns its config here so that the study loader (``ablations``), the job runner
(``pipelines``) and the training loop (``unisd_core.training``) share one definition. A component
whose config is ``None`` is off and costs nothing. Defaults follow method.md section 2 for a
component studied alone; :mod:`unisd_core.presets` holds the UniSD* values.

Departures from the paper: none in the paper's defaults; where the paper gives none, the negative
demonstration budget (``ContrastiveConfig.negative_max_new_tokens`` = 256) is below the authors'
1024 (docs/departures.md); ``ContrastiveConfig.negative_source = "template"`` is a stand-in
for models too small to write negatives (the paper's negatives are model-written). ``AgreementConfig.sequence_parity`` exists only
to reproduce the authors' weighted normaliser, under which sequence-level weights cancel.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

COMPONENT_NAMES: tuple[str, ...] = (
    "agreement",
    "contrastive",
    "feature_matching",
    "ema",
    "clipping",
)
METHODS: tuple[str, ...] = ("sdft", "sft", "gkd", "ssd", "opsd")
# Bounds on what a run can be asked for: seeds fit numpy's 32-bit seed (the loop seeds numpy with
# seed mod 2^32, so larger seeds would alias); ten million optimizer steps is far past any study
# (the paper's largest run is one epoch of ~10k items).
SEED_MAX = 2**32 - 1
MAX_STEPS = 10_000_000
MAX_EPOCHS = 1_000


class Frozen(BaseModel):
    """Base of every config: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class AgreementConfig(Frozen):
    """Multi-teacher agreement (method.md 2.1)."""

    num_contexts: int = Field(3, ge=2, le=16)
    statistic: Literal["var", "range"] = "var"
    granularity: Literal["token", "sequence"] = "token"
    context_source: Literal["random", "retrieval", "induction"] = "retrieval"
    gamma: float = Field(0.01, ge=0.0)
    quantile: float = Field(0.95, gt=0.0, le=1.0)
    max_ratio: float = Field(10.0, gt=0.0)
    weight_floor: float = Field(0.01, ge=0.0, le=1.0)
    sequence_parity: bool = False
    induction_examples: int = Field(3, ge=1)
    induction_max_new_tokens: int = Field(256, ge=1)


class ContrastiveConfig(Frozen):
    """Token-level contrastive learning against a bad teacher (method.md 2.2)."""

    weight: float = Field(0.1, ge=0.0)
    margin: float = Field(0.5, ge=0.0)
    num_negatives: int = Field(4, ge=1)
    negative_max_new_tokens: int = Field(256, ge=1)
    # "model": the model writes them (the paper); "template": the gold demonstration with its
    # answer swapped to an assigned wrong option, for models too small to write structured
    # negatives (multiple choice only; components/negatives.py).
    negative_source: Literal["model", "template"] = "model"


class FeatureMatchingConfig(Frozen):
    """Last-hidden-state matching (method.md 2.3)."""

    weight: float = Field(0.1, ge=0.0)
    mode: Literal["joint", "repr"] = "joint"


class EmaConfig(Frozen):
    """EMA teacher (method.md 2.4); ``beta`` is the weight of the old teacher."""

    every_steps: int = Field(10, ge=1)
    beta: float = Field(0.9, ge=0.0, le=1.0)


class ClippingConfig(Frozen):
    """Per-token divergence clipping (method.md 2.5): static cap or micro-batch quantile."""

    mode: Literal["static", "quantile"] = "static"
    cap: float = Field(10.0, gt=0.0)
    quantile: float = Field(0.95, gt=0.0, le=1.0)


class ComponentsConfig(Frozen):
    """Which components are on (non-``None``) and their settings."""

    agreement: AgreementConfig | None = None
    contrastive: ContrastiveConfig | None = None
    feature_matching: FeatureMatchingConfig | None = None
    ema: EmaConfig | None = None
    clipping: ClippingConfig | None = None

    def enabled(self) -> tuple[str, ...]:
        """Names of the components that are on, in canonical order."""
        return tuple(name for name in COMPONENT_NAMES if getattr(self, name) is not None)

    def subset_label(self) -> str:
        """``"none"`` or the enabled names joined by ``+`` (canonical order)."""
        return "+".join(self.enabled()) or "none"


class LoraSettings(Frozen):
    """LoRA adapter settings (method.md 4); ``TrainConfig.lora = None`` means full fine-tuning."""

    rank: int = Field(64, ge=1)
    alpha: float = Field(128.0, gt=0.0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: tuple[str, ...] = (
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
    )


LOSS_PATH_FIELDS = ("loss_path", "loss_chunk_tokens", "loss_chunk_budget_mib")


class TrainConfig(Frozen):
    """Everything that decides the result of one training run.

    ``method="sdft"`` with components is UniSD; the other methods are the baselines of
    method.md section 3 and take no components.
    """

    model: str
    method: Literal["sdft", "sft", "gkd", "ssd", "opsd"] = "sdft"
    components: ComponentsConfig = ComponentsConfig()
    alpha: float = Field(0.0, ge=0.0, le=1.0)
    temperature: float = Field(0.7, gt=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    normalizer: Literal["sequence", "global"] = "sequence"
    learning_rate: float = Field(2e-5, gt=0.0)
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    max_grad_norm: float = Field(1.0, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    epochs: int = Field(1, ge=1, le=MAX_EPOCHS)
    max_steps: int | None = Field(None, ge=1, le=MAX_STEPS)
    per_device_batch: int = Field(16, ge=1)
    grad_accum: int = Field(4, ge=1)
    max_prompt_tokens: int = Field(3072, ge=8)
    max_new_tokens: int = Field(1024, ge=1)
    lora: LoraSettings | None = LoraSettings()
    dtype: Literal["float32", "bfloat16"] = "float32"
    gradient_checkpointing: bool = False
    generation_backend: Literal["hf", "vllm"] = "hf"
    seed: int = Field(0, ge=0, le=SEED_MAX)
    gkd_on_policy_fraction: float = Field(0.5, ge=0.0, le=1.0)
    gkd_beta: float = Field(0.5, ge=0.0, le=1.0)
    ssd_temperature: float = Field(1.0, gt=0.0)
    ssd_top_p: float = Field(0.95, gt=0.0, le=1.0)
    checkpoint_every: int = Field(50, ge=1)
    # How the distillation loss meets the vocabulary: "plain" builds full [B,T,V] student and
    # teacher logits; "chunked" (losses/chunked.py) runs both models to the last hidden state
    # and computes the same loss and exact gradients over chunks of tokens. Teacher-side scores
    # (agreement contexts, bad teacher) are always chunked. ``loss_chunk_tokens`` None = chosen
    # from ``loss_chunk_budget_mib`` and the vocabulary (losses.chunked.chunk_tokens_for_vocab).
    loss_path: Literal["plain", "chunked"] = "chunked"
    loss_chunk_tokens: int | None = Field(None, ge=1)
    loss_chunk_budget_mib: float = Field(1024.0, gt=0.0)
    # Order a step's examples by completion length (longest first) before cutting micro-batches,
    # so that rows pad to lengths close to their own (at 1024 new tokens completions of one step
    # ran 543 to 1023 tokens: 12 to 39% of the student's tokens were padding). Off by default:
    # method.md leaves the grouping open, and it moves the per-micro-batch statistics (quantile
    # cap, agreement scale) onto length-homogeneous groups.
    group_by_length: bool = False

    @model_validator(mode="after")
    def _baselines_take_no_components(self) -> "TrainConfig":
        if self.method != "sdft" and self.components.enabled():
            raise ValueError(
                f"method {self.method!r} is a baseline and takes no components; "
                f"got {list(self.components.enabled())} (components apply to method 'sdft')"
            )
        return self

    @property
    def effective_batch(self) -> int:
        """Prompts per optimizer step: per_device_batch x grad_accum."""
        return self.per_device_batch * self.grad_accum

    def fingerprint(self) -> str:
        """Hex digest of what a run's checkpoints and outputs belong to; stable across runs.

        Every field enters except how the effective batch is split into micro-batches (their size
        and ``group_by_length``): an out-of-memory retry halves the micro-batch and doubles the
        accumulation, and must still resume the run's checkpoints (likewise the loss path
        settings, ``LOSS_PATH_FIELDS``). The optimizer steps see the same prompts and the same
        averaged per-sequence losses; only the statistics method.md takes per micro-batch
        (quantile caps, the agreement scale) are then taken over the smaller micro-batches.
        """
        payload = self.model_dump(mode="json")
        payload.pop("per_device_batch")
        payload.pop("group_by_length")  # which prompts share a micro-batch: the split's kind
        # How the loss meets the vocabulary changes memory and float rounding, not the objective:
        # a run may resume on the other path (e.g. chunked after an out-of-memory plain run).
        for name in LOSS_PATH_FIELDS:
            payload.pop(name)
        payload["grad_accum"] = self.effective_batch  # the split's product, under the old name
        return config_hash(payload)


def config_hash(payload: object) -> str:
    """sha256 of the canonical JSON of ``payload`` (sorted keys, no whitespace)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
