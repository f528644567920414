"""unisd_core: the self-distillation library (data, prompts, teachers, components, losses, loop).

It knows nothing of Ray, MLflow or lm-eval; those live in ``pipelines`` and ``evaluation``.
"""

from unisd_core.version import LIBRARY_VERSION

__all__ = ["LIBRARY_VERSION"]
