"""Set-function math over the component subsets: Banzhaf, Shapley, interaction indices.

A game is a vector ``values_S`` over coalitions encoded as bitmasks (bit i = player i on), so
``values_S[mask]`` is v(S). Every index here is linear in v, so each function returns (or uses) a
coefficient matrix ``weights_SP`` with index = values_S @ weights_SP: bootstrap replicates of v
then give replicates of every index with one matrix product.

- Banzhaf value (main effect): mean over S without i of v(S + i) - v(S) = mean with minus mean
  without on a complete grid.
- Shapley value: sum over S without i of |S|! (n-|S|-1)! / n! (v(S + i) - v(S)).
- Shapley interaction index (Grabisch): sum over S without i, j of
  |S|! (n-|S|-2)! / (n-1)! (v(S+ij) - v(S+i) - v(S+j) + v(S)).
- Banzhaf interaction: the unweighted mean of the same second differences.
Departure from the paper: none; the paper names the indices without formulas.
"""

from __future__ import annotations

import itertools
from math import factorial

import numpy as np


class IncompleteGridError(ValueError):
    """An exact index needs every coalition; ``missing`` lists the absent bitmasks."""

    def __init__(self, missing: list[int], players: tuple[str, ...]):
        self.missing = missing
        self.players = players
        names = ["{" + ", ".join(subset_of(mask, players)) + "}" for mask in missing]
        super().__init__(f"{len(missing)} of {2 ** len(players)} subsets missing: "
                         + "; ".join(names))


def subset_of(mask: int, players: tuple[str, ...]) -> tuple[str, ...]:
    """Players whose bit is set in ``mask``."""
    return tuple(name for index, name in enumerate(players) if mask >> index & 1)


def mask_of(subset: tuple[str, ...] | list[str], players: tuple[str, ...]) -> int:
    """Bitmask of a subset of ``players``."""
    return sum(1 << players.index(name) for name in subset)


def require_complete(present: set[int], players: tuple[str, ...]) -> None:
    """Raise ``IncompleteGridError`` unless every coalition is present."""
    missing = [mask for mask in range(2 ** len(players)) if mask not in present]
    if missing:
        raise IncompleteGridError(missing, players)


def shapley_weights(n_players: int) -> np.ndarray:
    """``weights_SP`` (2^n x n): Shapley value = values_S @ weights_SP."""
    weights = np.zeros((2 ** n_players, n_players))
    for player in range(n_players):
        for mask in range(2 ** n_players):
            if mask >> player & 1:
                continue
            size = bin(mask).count("1")
            share = factorial(size) * factorial(n_players - size - 1) / factorial(n_players)
            weights[mask | 1 << player, player] += share
            weights[mask, player] -= share
    return weights


def banzhaf_weights(n_players: int, present: set[int] | None = None) -> np.ndarray:
    """``weights_SP``: mean of v(S+i) - v(S) over the pairs (S, S+i) both present.

    On a complete grid this is mean with minus mean without. Columns of players with no
    complete pair are NaN (nothing can be said without imputing).
    """
    present = set(range(2 ** n_players)) if present is None else present
    weights = np.zeros((2 ** n_players, n_players))
    for player in range(n_players):
        pairs = [mask for mask in range(2 ** n_players)
                 if not mask >> player & 1 and mask in present and mask | 1 << player in present]
        if not pairs:
            weights[:, player] = np.nan
            continue
        for mask in pairs:
            weights[mask | 1 << player, player] += 1.0 / len(pairs)
            weights[mask, player] -= 1.0 / len(pairs)
    return weights


def contrast_weights(n_players: int, present: set[int]) -> np.ndarray:
    """``weights_SP``: mean of v over present S with i minus mean over present S without i.

    The main-effect estimator of a balanced fraction (e.g. the half fraction), where no pair
    (S, S+i) is present.
    """
    weights = np.zeros((2 ** n_players, n_players))
    for player in range(n_players):
        with_i = [m for m in present if m >> player & 1]
        without_i = [m for m in present if not m >> player & 1]
        if not with_i or not without_i:
            weights[:, player] = np.nan
            continue
        weights[with_i, player] = 1.0 / len(with_i)
        weights[without_i, player] = -1.0 / len(without_i)
    return weights


def pairs_of(n_players: int) -> list[tuple[int, int]]:
    """All player pairs (i < j) in lexicographic order."""
    return list(itertools.combinations(range(n_players), 2))


def shapley_interaction_weights(n_players: int) -> np.ndarray:
    """``weights_SQ`` (2^n x pairs): Shapley interaction index of every pair."""
    pairs = pairs_of(n_players)
    weights = np.zeros((2 ** n_players, len(pairs)))
    for column, (first, second) in enumerate(pairs):
        both = 1 << first | 1 << second
        for mask in range(2 ** n_players):
            if mask & both:
                continue
            size = bin(mask).count("1")
            share = factorial(size) * factorial(n_players - size - 2) / factorial(n_players - 1)
            _add_second_difference(weights[:, column], mask, first, second, share)
    return weights


def banzhaf_interaction_weights(n_players: int, present: set[int] | None = None) -> np.ndarray:
    """``weights_SQ``: mean second difference over the present complete quadruples (NaN if none)."""
    present = set(range(2 ** n_players)) if present is None else present
    pairs = pairs_of(n_players)
    weights = np.zeros((2 ** n_players, len(pairs)))
    for column, (first, second) in enumerate(pairs):
        both = 1 << first | 1 << second
        bases = [mask for mask in range(2 ** n_players) if not mask & both and {
            mask, mask | 1 << first, mask | 1 << second, mask | both} <= present]
        if not bases:
            weights[:, column] = np.nan
        for mask in bases:
            _add_second_difference(weights[:, column], mask, first, second, 1.0 / len(bases))
    return weights


def factorial_interaction_weights(n_players: int, present: set[int]) -> np.ndarray:
    """``weights_SQ`` for a balanced fraction: 2 x the +/-1 contrast of the product column.

    For a full grid this equals the Banzhaf interaction; in the resolution-V half fraction it is
    its unbiased estimate when interactions of order three and more vanish.
    """
    pairs = pairs_of(n_players)
    weights = np.zeros((2 ** n_players, len(pairs)))
    for column, (first, second) in enumerate(pairs):
        same = [m for m in present if (m >> first & 1) == (m >> second & 1)]
        differ = [m for m in present if (m >> first & 1) != (m >> second & 1)]
        if not same or not differ:
            weights[:, column] = np.nan
            continue
        weights[same, column] = 2.0 / len(same)
        weights[differ, column] = -2.0 / len(differ)
    return weights


def _add_second_difference(column: np.ndarray, mask: int, first: int, second: int,
                           share: float) -> None:
    column[mask | 1 << first | 1 << second] += share
    column[mask | 1 << first] -= share
    column[mask | 1 << second] -= share
    column[mask] += share


def shapley_values(values_S: np.ndarray) -> np.ndarray:
    """Exact Shapley values of a complete game (length 2^n) -> shape (n,)."""
    n_players = int(np.log2(len(values_S)))
    return (values_S - values_S[0]) @ shapley_weights(n_players)


def shapley_interactions(values_S: np.ndarray) -> np.ndarray:
    """Shapley interaction index of every pair of a complete game -> shape (pairs,)."""
    n_players = int(np.log2(len(values_S)))
    return values_S @ shapley_interaction_weights(n_players)


def banzhaf_values(values_S: np.ndarray) -> np.ndarray:
    """Banzhaf values (main effects) of a complete game -> shape (n,)."""
    n_players = int(np.log2(len(values_S)))
    return values_S @ banzhaf_weights(n_players)
