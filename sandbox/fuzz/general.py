"""The general execution path: one fresh ScenarioRun per execution, the plan performed by
ordinary scenario steps. Slow (a new machine every time) and exact by construction: it is
what `sandbox run` does with a reproducer file, and what the fast path must agree with."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .invariants import RunEnd
from .outcome import Outcome, outcome_of
from .plan import Plan
from .section import checker_of

if TYPE_CHECKING:
    from ..scenario.runner import ScenarioRun
    from .target import Target


def run_general(target: "Target", plan: Plan, *, run: "ScenarioRun | None" = None, result: Any = None,
                budget: int | None = None) -> Outcome:
    """Execute `plan` on a fresh machine (or judge `run`, already executed)."""
    if run is None:
        run = target.run_for(plan, budget=target.baseline.budget if budget is None else budget)
        result = run.execute()
    checker = checker_of(run)
    assert checker is not None and result is not None
    checker.finish(RunEnd(run.exits, run.host_error, run.failure))
    return outcome_of(checker, run.vm, run.program.symbols.get("exc_ring"), [e.reason.name for e in run.exits],
                      run.instruction_count())
