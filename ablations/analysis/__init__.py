"""Analysis of the component grid: pure functions of the ``scores``/``items`` record frames."""

from ablations.analysis.effects import (MULTIPLICITY, ComponentAnalysis, analyse_components,
                                       grid_cells, grid_rows)
from ablations.analysis.factorial import factorial_ols
from ablations.analysis.games import IncompleteGridError

__all__ = ["MULTIPLICITY", "ComponentAnalysis", "IncompleteGridError", "analyse_components",
           "factorial_ols", "grid_cells", "grid_rows"]
