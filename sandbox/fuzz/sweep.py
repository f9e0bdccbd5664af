"""`sandbox sweep`: every instruction boundary of the window, every event kind that applies
there, one execution each.

Points are the window's boundaries (sandbox.fuzz.target) crossed with the event kinds; the
masking state of a point is what the guest has there (PSTATE.A for an SError, the PE mask
and running handlers for SDEI; an SDEI point is also tried with the PE masked by the host),
shown in the table. `unique=True` keeps one point per (PC,
PSTATE, what the kind's probe saw) and kind, for windows that run the
same code many times. Executions go through `sandbox.fuzz.workers` (this process, a pool of
processes or Ray); results come back in point order whatever ran them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..arch import pstate as ps
from ..disasm import disassemble_one
from .events import EVENT_KINDS, Boundary
from .outcome import Outcome
from .plan import Injection, Plan
from .target import Target


@dataclass(frozen=True)
class SweepPoint:
    boundary: Boundary
    kind: str
    plan: Plan

    def masking(self) -> str:
        masked = EVENT_KINDS[self.kind].masked(self.boundary)
        mode = ps.mode_name(self.boundary.pstate)
        return mode if masked is None else f"{mode} {'masked' if masked else 'unmasked'}"


@dataclass
class SweepRow:
    point: SweepPoint
    outcome: Outcome
    disassembly: str

    def to_json(self) -> dict[str, Any]:
        b = self.point.boundary
        return {"boundary": b.count, "pc": f"{b.pc:#x}", "insn": self.disassembly, "event": self.point.kind,
                "masking": self.point.masking(), "outcome": self.outcome.summary(),
                "violations": [v.to_json() for v in self.outcome.violations], "plan": self.point.plan.to_json()}


@dataclass
class SweepResult:
    target: Target
    rows: list[SweepRow] = field(default_factory=list)
    path: str = "fast"

    @property
    def violating(self) -> list[SweepRow]:
        return [r for r in self.rows if not r.outcome.ok]


def sweep_points(target: Target, *, unique: bool = False) -> list[SweepPoint]:
    points = []
    seen: set[tuple[int, int, object, str]] = set()
    for b in target.boundaries():
        for kind in target.kinds:
            if not kind.applies(b):
                continue
            tries = kind.sweep(b) if kind.sweep is not None else [(b, kind.bind(b, {}))]
            for state, params in tries:
                if unique:
                    key = (state.pc, state.pstate, state.probe(kind.name), kind.name)
                    if key in seen:
                        continue
                    seen.add(key)
                points.append(SweepPoint(state, kind.name, Plan.of(Injection.make(b.count, kind.name, params))))
    return points


def disassemble(b: Boundary) -> str:
    return disassemble_one(b.insn, b.pc) if b.insn is not None else "(not readable)"


def sweep(target: Target, *, unique: bool = False, pool: Any = None,
          progress: Callable[[int, int], None] | None = None) -> SweepResult:
    """Run every point; `pool` is a sandbox.fuzz.workers pool (default: this process)."""
    from .workers import LocalPool

    points = sweep_points(target, unique=unique)
    pool = pool or LocalPool(target.spec_key())
    start = points[0].boundary.count if points else None
    outcomes = pool.execute([p.plan for p in points], start=start, progress=progress)
    result = SweepResult(target, path=pool.path)
    for p, o in zip(points, outcomes):
        result.rows.append(SweepRow(p, o, disassemble(p.boundary)))
    return result
