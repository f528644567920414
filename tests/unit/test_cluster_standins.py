"""The cluster simulation's cell selection and step durations (benchmarks/cluster_standins.py),
against the paper study expanded independently and the plan's own per-step estimates."""

from __future__ import annotations

import pytest

from ablations.costs import load_cost_table
from ablations.grid import expand_grid
from ablations.plan import plan_cells, train_seconds
from ablations.study import load_study
from benchmarks.cluster_standins import select_cells, step_durations
from pipelines.graph import build_graph


@pytest.fixture(scope="module")
def paper_cells():
    return expand_grid(load_study("studies/paper.yaml"))


def test_fractions_keep_every_kth_cell_in_name_order(paper_cells):
    names = sorted(cell.name for cell in paper_cells)
    for fraction, k in (("1/16", 16), ("1/4", 4), ("1", 1)):
        chosen = [cell.name for cell in select_cells(paper_cells, fraction)]
        assert chosen == names[::k]
        assert len(chosen) == -(-len(names) // k)
    # independent of the expansion order
    assert select_cells(list(reversed(paper_cells)), "1/16") == select_cells(paper_cells, "1/16")
    assert [c.name for c in select_cells(paper_cells, "1/16", 5)] == names[::16][:5]


def test_bad_fraction_or_cap_is_refused(paper_cells):
    with pytest.raises(ValueError, match="fraction"):
        select_cells(paper_cells, "1/3")
    with pytest.raises(ValueError, match="max_cells"):
        select_cells(paper_cells, "1", 0)


def test_durations_cover_every_step_and_scale_the_plan(paper_cells):
    cells = select_cells(paper_cells, "1/16", 30)
    durations = step_durations(cells, 1e-3)
    graph = build_graph(cells)
    assert set(durations["steps"]) == set(graph.steps)
    # every accelerator step has a ledger key a stand-in can find, distinct per step
    keys = [info["ledger_key"] for info in durations["steps"].values() if info["kind"] != "record"]
    assert len(keys) == len(set(keys)) and all(key in durations["seconds"] for key in keys)
    table = load_cost_table()
    for step in graph.steps.values():
        if step.kind == "train":
            expected = train_seconds(graph.cells[step.cells[0]], table) * 1e-3
            assert durations["steps"][step.step_id]["seconds"] == expected  # same operations
    total = sum(info["seconds"] for info in durations["steps"].values())
    # the same positive terms summed in another order and scaled: relative error <= n * eps
    bound = (len(graph.steps) + 1) * 2.3e-16
    assert total == pytest.approx(plan_cells(cells, table).total_seconds * 1e-3, rel=bound)
