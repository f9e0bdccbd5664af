"""Scenario files: a machine, its firmware, injections at triggers and what must be observed.

    from sandbox.scenario import Scenario
    result = Scenario.load("scenarios/ras/kvm-4715c14bc136-vserror-impdef-esr.toml").run()
    assert result.passed, result.text()

`Scenario.load` reports a bad file with one `ScenarioError` (file, line, field). `run()`
runs every variant (e.g. "buggy" with a quirk, "fixed" without) and returns a
`ScenarioResult`. `prepare(variant)` gives the `ScenarioRun` itself, for fuzzers: exact
instruction boundaries, actions on demand, checkpoints.
"""

from __future__ import annotations

from pathlib import Path

from .actions import ACTIONS, ActionSpec, register_action
from .fields import ScenarioError
from .load import load_spec
from .model import ScenarioSpec
from .result import ScenarioResult, VariantResult
from .runner import ScenarioRun, check_buildable
from .sections import SECTIONS, SectionSpec, register_section
from .triggers import TRIGGERS, TriggerSpec, register_trigger
from . import sdei_steps  # noqa: F401  (registers the SDEI actions and triggers)

__all__ = ["ACTIONS", "ActionSpec", "SECTIONS", "Scenario", "ScenarioError", "ScenarioResult", "ScenarioRun",
           "SectionSpec", "TRIGGERS", "TriggerSpec", "VariantResult", "register_action", "register_section",
           "register_trigger"]


class Scenario:
    def __init__(self, spec: ScenarioSpec, doc: object):
        self.spec = spec
        self._doc = doc

    @classmethod
    def load(cls, path: str | Path) -> "Scenario":
        """Parse, assemble and check a scenario file (ScenarioError if it is bad)."""
        spec, doc = load_spec(path)
        check_buildable(spec, doc)
        return cls(spec, doc)

    @property
    def purpose(self) -> str:
        return self.spec.purpose

    @property
    def variants(self) -> list[str]:
        return [v.name for v in self.spec.variants]

    def prepare(self, variant: str | None = None, *, recorder: object = None,
                count_instructions: bool = False) -> ScenarioRun:
        """A built, not yet started run of one variant (the first when None)."""
        chosen = self.spec.variants[0] if variant is None else next(
            (v for v in self.spec.variants if v.name == variant), None)
        if chosen is None:
            raise KeyError(f"{self.spec.file}: no variant {variant!r} (has {', '.join(self.variants)})")
        return ScenarioRun(self.spec, chosen, self._doc, recorder=recorder,  # type: ignore[arg-type]
                           count_instructions=count_instructions)

    def run(self, variants: list[str] | None = None, *, recorder: object = None,
            count_instructions: bool = False) -> ScenarioResult:
        """Run the variants (all by default) and compare each with its expectations."""
        result = ScenarioResult(str(self.spec.file), self.spec.purpose, self.spec.source)
        for name in variants or self.variants:
            result.variants.append(self.prepare(name, recorder=recorder, count_instructions=count_instructions).execute())
        return result
