"""What one execution produced: the violations, and enough of what happened to compare two
execution paths (exits, what the model delivered, what the guest recorded, where it ended)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..firmware import exception_records
from .invariants import Checker, Violation


@dataclass
class Outcome:
    violations: list[Violation]
    exits: list[str]
    delivered: list[tuple[int, int, int, int]]  # (vector, ESR, ELR, SPSR) the model entered
    recorded: list[tuple[int, int, int, int, int]]  # firmware/vectors.S's records of vCPU 0:
    # (vector, ESR, ELR, SPSR, ISR_EL1 at entry)
    instructions: int  # retired when the run ended
    end_pc: int
    coverage: frozenset[int] = field(default_factory=frozenset)  # basic blocks (fuzzing only)

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> str:
        if self.ok:
            return "ok"
        return "; ".join(v.text() for v in self.violations)

    def brief(self, width: int = 110) -> str:
        """One line: the invariants broken, then the first violation."""
        if self.ok:
            return "ok"
        names = ", ".join(dict.fromkeys(v.invariant for v in self.violations))
        text = f"{names}: {self.violations[0].message}"
        return text if len(text) <= width else text[:width - 3] + "..."

    def comparable(self) -> dict[str, Any]:
        """Everything two execution paths must agree on."""
        return {"violations": [v.to_json() for v in self.violations], "exits": self.exits,
                "delivered": self.delivered, "recorded": self.recorded, "instructions": self.instructions,
                "end_pc": self.end_pc}


def outcome_of(checker: Checker, vm: Any, ring: int | None, exits: list[str], instructions: int,
               coverage: frozenset[int] = frozenset()) -> Outcome:
    delivered = [(e.vector_offset, e.esr or 0, e.elr, e.spsr) for cpu, e in checker.entries if cpu == 0]
    recorded = []
    if ring is not None:
        cpu = vm.vcpus[0].mpidr & 0xFF
        records = checker.records.get(cpu)
        if records is None:
            records = exception_records(vm, ring, cpu)
        recorded = [(r.vector, r.esr, r.elr, r.spsr, r.isr) for r in records]
    return Outcome(list(checker.violations), exits, delivered, recorded, instructions,
                   vm.vcpus[0].reg("pc"), coverage)
