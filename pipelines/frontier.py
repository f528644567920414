"""Which steps the driver's loop looks at: those whose inputs changed since it last did.

The loop used to scan every step of the graph for readiness and for failed inputs at each turn,
and it turns once per finished step or poll: work that grows with the square of the grid (a
5,376-cell study has about 16,000 steps). Here a step is looked at when the study starts, when
one of its inputs reaches a final status (done, failed, skipped), and when it is set back to
pending (a retry, a run it waited for); a step that is not ready then is looked at again when
its next input finishes. Order: the graph's (topological: prepare and base evaluations first),
so a batch of ready steps is launched in the order the graph lists them.

Departures from the paper: none.
"""

from __future__ import annotations

from typing import Any

from pipelines.state import StepState

BLOCKING = frozenset({"failed", "skipped"})


class Frontier:
    """The steps of ``graph`` (a :class:`pipelines.graph.Graph`) to look at next."""

    def __init__(self, graph: Any):
        self.graph = graph
        self.order = {step_id: index for index, step_id in enumerate(graph.steps)}
        self.dependents: dict[str, list[str]] = {step_id: [] for step_id in graph.steps}
        for step_id, step in graph.steps.items():
            for dep in step.deps:
                self.dependents[dep].append(step_id)
        self.to_check: set[str] = set(graph.steps)

    def finished(self, step_id: str) -> None:
        """``step_id`` reached a final status: its dependents may be ready or blocked now."""
        self.to_check.update(self.dependents[step_id])

    def again(self, step_ids: list[str] | str) -> None:
        """Look at these steps again (set back to pending, or what they waited for arrived)."""
        self.to_check.update([step_ids] if isinstance(step_ids, str) else step_ids)

    def blocked(self, states: dict[str, StepState], looked: set[str]) -> list[tuple[str, str]]:
        """``(step, its failed or skipped input)`` for pending steps to look at, not yet in
        ``looked`` (which this fills): call again after skipping them, for their dependents."""
        todo = sorted((step_id for step_id in self.to_check
                       if step_id not in looked and states[step_id].status == "pending"),
                      key=self.order.__getitem__)
        found = []
        for step_id in todo:
            looked.add(step_id)
            blocker = next((dep for dep in self.graph.steps[step_id].deps
                            if states[dep].status in BLOCKING), None)
            if blocker is not None:
                found.append((step_id, blocker))
        return found

    def ready(self, states: dict[str, StepState]) -> list[str]:
        """Pending steps whose inputs are all done, in graph order; forgets the rest until an
        input of theirs finishes."""
        candidates = sorted(self.to_check, key=self.order.__getitem__)
        self.to_check = set()
        return [step_id for step_id in candidates if states[step_id].status == "pending"
                and all(states[dep].status == "done" for dep in self.graph.steps[step_id].deps)]
