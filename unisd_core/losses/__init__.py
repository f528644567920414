"""unisd_core.losses: the pure loss math (divergences, reductions, clipping, agreement weights,
contrastive hinge, feature matching) and its single composition point, :mod:`.objective`.

Nothing here holds state; every function is a function of tensors, float32 inside.
"""

from unisd_core.losses.divergences import sampled_token_logprobs, token_divergence, token_entropy
from unisd_core.losses.objective import LossOutput, distillation_loss, sft_loss
from unisd_core.losses.chunked import chunked_distillation_loss

__all__ = [
    "LossOutput",
    "chunked_distillation_loss",
    "distillation_loss",
    "sampled_token_logprobs",
    "sft_loss",
    "token_divergence",
    "token_entropy",
]
