"""Fuzzing exception vectors: sweeps of every injection point, seeded coverage-guided
campaigns, invariants, and the machinery that makes an execution cheap.

    from sandbox.fuzz import Target, sweep
    result = sweep(Target("scenarios/fuzz/syscall-serror.toml", variant="unmask-early"))
    for row in result.violating: print(row.point.boundary.count, row.outcome.brief())

One module per job: `events` (what can be injected: a registry; `sdei_kind` and `irq_kind`
add the SDEI and IRQ kinds), `invariants` (what must hold: a registry; the checker on the
observer stream; `sdei_invariants` and `irq_invariants` add theirs), `section` (the scenario file's
`[fuzz]` table), `target` (baseline and window), `plan` (injections as data), `general` and
`fastpath` (the two execution paths; `fastregs` and `restore_point` make the fast one
fast), `sweep`, `generate` + `campaign` (sandbox fuzz), `minimise`, `reproducer`,
`workers` (processes, Ray), `cli`.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "Target": "target", "TargetError": "target", "sweep": "sweep", "sweep_points": "sweep",
    "Campaign": "campaign", "Plan": "plan", "Injection": "plan", "FastExecutor": "fastpath",
    "run_general": "general", "EVENT_KINDS": "events", "EventKind": "events",
    "register_event_kind": "events", "INVARIANTS": "invariants", "InvariantSpec": "invariants",
    "register_invariant": "invariants", "make_pool": "workers",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # Lazy: the scenario loader imports sandbox.fuzz.section for every file it reads.
    if name in _EXPORTS:
        import importlib
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(name)
