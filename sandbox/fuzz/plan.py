"""What one fuzzed execution does: a few injections at exact instruction boundaries.

A `Plan` is plain data (JSON for the corpus and the findings); `plan_steps` turns it into
the scenario steps that perform it, which every execution path and every reproducer file use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .events import EVENT_KINDS


@dataclass(frozen=True)
class Injection:
    at: int  # instruction boundary: instructions retired since the start of the scenario
    kind: str  # an EVENT_KINDS name
    params: tuple[tuple[str, Any], ...] = ()  # sorted (name, value) pairs

    @property
    def args(self) -> dict[str, Any]:
        return dict(self.params)

    def describe(self) -> str:
        return f"{EVENT_KINDS[self.kind].describe(self.args)} @ {self.at}"

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "kind": self.kind, "params": self.args}

    @classmethod
    def make(cls, at: int, kind: str, params: dict[str, Any] | None = None) -> "Injection":
        return cls(at, kind, tuple(sorted((params or {}).items())))

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Injection":
        return cls.make(int(d["at"]), str(d["kind"]), dict(d.get("params", {})))


@dataclass(frozen=True)
class Plan:
    injections: tuple[Injection, ...]

    def describe(self) -> str:
        return ", ".join(i.describe() for i in self.injections) or "(nothing injected)"

    def to_json(self) -> list[dict[str, Any]]:
        return [i.to_json() for i in self.injections]

    @classmethod
    def from_json(cls, data: list[dict[str, Any]]) -> "Plan":
        return cls(tuple(Injection.from_json(d) for d in data))

    @classmethod
    def of(cls, *injections: Injection) -> "Plan":
        return cls(tuple(sorted(injections, key=lambda i: i.at)))


def plan_steps(plan: Plan) -> list[dict[str, Any]]:
    """The raw `[[steps]]` tables performing `plan`, in order of their boundaries."""
    steps: list[dict[str, Any]] = []
    for inj in sorted(plan.injections, key=lambda i: i.at):
        steps.extend(EVENT_KINDS[inj.kind].steps(inj.at, inj.args))
    return steps
