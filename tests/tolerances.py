"""One float tolerance for tests that compare two floating-point computations of the same quantity.

Used wherever a test compares two float32 paths (chunked vs plain loss, 4x1 vs 1x4 gradient
accumulation, resumed vs straight training, batched vs single rows, a float32 result vs a float64
reference). Hand examples with a closed-form answer keep ``pytest.approx``'s default (rel 1e-6),
unless their float32 evaluation cancels O(1) terms (a small KL): those pass ``scale=1``.

Error model (why the bound has this shape)
------------------------------------------
Let ``u = eps / 2`` be the unit roundoff (float32: ``eps = 2**-23``). A sum of ``n`` terms computed
in floating point differs from the exact sum by ``sum_k delta_k * s_k`` with ``|delta_k| <= u`` and
``s_k`` the partial sums. The rounding errors behave as independent zero-mean variables (Higham and
Mary, "A new approach to probabilistic rounding error analysis", SISC 2019), so the error is about
``u * sqrt(n) * S`` where ``S`` bounds the partial sums: for same-sign terms the result itself, for
terms of random sign also about the result (partial sums grow like ``sqrt(k)``). Reordering the sum
(another chunking, another micro-batch split, another CPU kernel: AVX2 and AVX-512 block matmuls
differently) changes the ``delta_k``, not this size. So the two paths differ per entry by about::

    sqrt(2 m) * u * sqrt(n) * S       (m rounding stages of that size, two independent paths)

``S`` is taken as the largest magnitude in the compared tensors (the max over ``expected`` and
``got``): an entry near zero is a cancellation of terms about as large as the tensor's typical
entries, which is why a purely relative tolerance fails on it (issue 13: one entry of 7e-4 of the
tied-embedding gradient differed by 2e-7 on another CPU, relative 2.7e-4; that tensor's largest
entry is 0.41, its bound here 3.8e-5), and why a fixed ``atol`` is wrong at another magnitude.

``k = 16`` (the default) is ``sqrt(2 m) / 2`` with m ~ 3 stages (matmul, log-sum-exp/softmax, the
backward product) = 1.2, times lambda = 6 so that the largest of ~1e6 entries stays inside (a
Gaussian exceeds 6 sigma with probability 2e-9), times 2 for ``S`` underestimating the partial
sums: 1.2 * 6 * 2 = 14.7, rounded up to 16. ``n`` (``terms``) is the summed length of the
reductions chained into one entry (a V-way softmax, then a sum over N tokens: V + N), since chained
stages add their errors in variance. The bound is in units of ``eps`` (``dtype=torch.bfloat16``:
2**-7); where bf16 inputs are rounded once and the rest runs in float32, the error does not grow
with a reduction, and those uses pass a smaller ``terms`` and ``k`` with the reason beside them.

Tight enough: a real change of relative size ``r`` on the largest entry fails the check by the
factor ``r / (k * eps * sqrt(n))``; for float32, n = 1000 terms: a change of 1e-3 (a gradient
scaled by 1.001) fails by 16x, a dropped 1/tau or a wrong temperature by orders more (the mutation
checks of issue 13). Each use states its ``terms`` in a comment. Measured 2026-12-03 on a 2-core
Xeon with AVX-512 (loaded and idle alike): the largest error / bound over ~1100 comparisons of
the suite's loss and training tests was 0.11.

Audit aid: with ``UNISD_TOLERANCE_LOG=<file>`` every comparison appends ``test, what, error /
tolerance`` to that file (how much room each check has on this machine).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch

K_DEFAULT = 16.0


def eps_of(dtype: torch.dtype = torch.float32) -> float:
    """Machine epsilon (the gap from 1 to the next float) of ``dtype``."""
    return float(torch.finfo(dtype).eps)


def _as_float64(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float64)
    return torch.as_tensor(np.asarray(value, dtype=np.float64))


def scaled_atol(got: Any, expected: Any, *, terms: int, k: float = K_DEFAULT,
                dtype: torch.dtype = torch.float32, scale: float | None = None) -> float:
    """``k * eps(dtype) * S * sqrt(terms)``, S = ``scale`` or the largest finite magnitude of both."""
    if terms < 1:
        raise ValueError(f"terms must be >= 1, got {terms}")
    if scale is None:
        both = torch.cat([_as_float64(got).flatten(), _as_float64(expected).flatten()])
        finite = both[torch.isfinite(both)]
        scale = float(finite.abs().max()) if finite.numel() else 0.0
    return k * eps_of(dtype) * scale * math.sqrt(terms)


def close_ratio(got: Any, expected: Any, *, terms: int, k: float = K_DEFAULT,
                dtype: torch.dtype = torch.float32, scale: float | None = None) -> float:
    """max |got - expected| / :func:`scaled_atol` (<= 1 passes); inf when non-finite entries differ."""
    got64, expected64 = _as_float64(got), _as_float64(expected)
    if got64.shape != expected64.shape:
        raise AssertionError(f"shapes differ: {tuple(got64.shape)} vs {tuple(expected64.shape)}")
    same_special = (torch.isnan(got64) == torch.isnan(expected64)).all() and bool(
        (got64[torch.isinf(expected64)] == expected64[torch.isinf(expected64)]).all())
    finite = torch.isfinite(got64) & torch.isfinite(expected64)
    if not same_special or bool((torch.isfinite(got64) != torch.isfinite(expected64)).any()):
        return math.inf
    error = float((got64 - expected64)[finite].abs().max()) if finite.any() else 0.0
    atol = scaled_atol(got64, expected64, terms=terms, k=k, dtype=dtype, scale=scale)
    if atol == 0.0:
        return 0.0 if error == 0.0 else math.inf
    return error / atol


def assert_close_scaled(got: Any, expected: Any, *, terms: int, k: float = K_DEFAULT,
                        dtype: torch.dtype = torch.float32, scale: float | None = None,
                        msg: str = "") -> None:
    """Assert max |got - expected| <= k * eps(dtype) * S * sqrt(terms) (see the module docstring).

    ``got``/``expected``: tensors, arrays or numbers of one shape; NaN and inf must sit at the same
    places. ``terms``: length of the longest float reduction that feeds one entry (a vocabulary
    softmax: V; a weight gradient summed over N tokens of a V-way softmax: N * V).
    """
    ratio = close_ratio(got, expected, terms=terms, k=k, dtype=dtype, scale=scale)
    if os.environ.get("UNISD_TOLERANCE_LOG"):  # audit aid: how close each comparison came
        with open(os.environ["UNISD_TOLERANCE_LOG"], "a", encoding="utf-8") as log:
            log.write(f"{os.environ.get('PYTEST_CURRENT_TEST', '?').split(' ')[0]}\t{msg}\t{ratio:.3g}\n")
    if ratio <= 1.0:
        return
    got64, expected64 = _as_float64(got), _as_float64(expected)
    atol = scaled_atol(got64, expected64, terms=terms, k=k, dtype=dtype, scale=scale)
    size = atol / (k * eps_of(dtype) * math.sqrt(terms))
    difference = (got64 - expected64).abs().nan_to_num(nan=math.inf)
    index = np.unravel_index(int(difference.flatten().argmax()), tuple(difference.shape)) if difference.dim() else ()
    index = tuple(int(i) for i in index)
    raise AssertionError(
        f"{msg + ': ' if msg else ''}max |got - expected| = {float(difference.max()):.3e} at {index} "
        f"(got {float(got64[index]):.6e}, expected {float(expected64[index]):.6e}) exceeds "
        f"{atol:.3e} = {k:g} * eps * {size:.3e} * sqrt({terms}) ({ratio:.3g}x the tolerance)")
