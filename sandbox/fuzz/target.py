"""A scenario variant prepared for fuzzing: its configuration, its baseline and its window.

The baseline is the scenario run with nothing injected. It must keep every invariant (else
there is nothing to compare with), and it gives the instruction count at which the run
ends (the per-execution budget follows from it). The window is where injections go: from
the first execution of `[fuzz] from` after the scenario's own steps have fired (or right
after them) to `[fuzz] to` (or the end); `boundaries()` lists every instruction boundary the
guest executes there, found by stepping the guest one instruction at a time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from ..arch.decode import decode_load_store, effective_address
from ..kvm import Cap, ExitReason
from ..scenario import Scenario
from ..scenario.fields import Doc, Ref
from ..scenario.load import parse_step
from ..scenario.model import ScenarioSpec, Step, TriggerCall, Variant
from ..scenario.runner import ScenarioRun
from .events import EVENT_KINDS, Boundary, EventKind
from .plan import Plan, plan_steps
from .section import FuzzConfig

MAX_BOUNDARIES = 200_000


class TargetError(Exception):
    """The scenario cannot be fuzzed as asked (bad window, baseline breaks an invariant...)."""


@dataclass(frozen=True)
class Baseline:
    end: int  # instruction count where the run ends
    exits: tuple[str, ...]
    budget: int  # absolute instruction cap of every execution


class Target:
    def __init__(self, path: str | Path, *, variant: str | None = None, events: list[str] | None = None,
                 start: str | None = None, end: str | None = None, max_instructions: int | None = None):
        self.path = Path(path)
        self._args = (str(path), variant, None if events is None else tuple(events), start, end, max_instructions)
        self.scenario = Scenario.load(path)
        spec = self.scenario.spec
        self.variant: Variant = spec.variants[0] if variant is None else next(
            (v for v in spec.variants if v.name == variant), None)  # type: ignore[assignment]
        if self.variant is None:
            raise TargetError(f"{path}: no variant {variant!r} (has {', '.join(self.scenario.variants)})")
        config: FuzzConfig = spec.sections.get("fuzz") or FuzzConfig(events=tuple(EVENT_KINDS))
        changes: dict[str, Any] = {"expect_violations": None}
        if events is not None:
            unknown = [e for e in events if e not in EVENT_KINDS]
            if unknown:
                raise TargetError(f"unknown event kind {unknown[0]!r} (known: {', '.join(EVENT_KINDS)})")
            changes["events"] = tuple(events)
        if start is not None:
            changes["start"] = Ref(start, ("fuzz", "from"))
        if end is not None:
            changes["end"] = Ref(end, ("fuzz", "to"))
        if max_instructions is not None:
            changes["max_instructions"] = max_instructions
        self.config = dataclasses.replace(config, **changes)
        self.doc: Doc = self.scenario._doc  # type: ignore[assignment]
        for ref in (self.config.start, self.config.end):
            if ref is not None:
                try:
                    self.doc.resolve(ref, self.program.symbols)
                except Exception as e:
                    raise TargetError(str(e)) from None
        generic = [EVENT_KINDS[e] for e in self.config.events]
        self.spec = self._fuzzable(spec, generic)
        self.kinds: list[EventKind] = [k.for_target(self) if k.for_target is not None else k for k in generic]
        self._parsed: dict[tuple[str, Any], tuple[Step, ...]] = {}

    def spec_key(self) -> Any:
        """What a worker process needs to build this same target (sandbox.fuzz.workers)."""
        from .workers import TargetKey
        path, variant, events, start, end, budget = self._args
        return TargetKey(path, variant or self.variant.name, events, start, end, budget)

    @property
    def program(self) -> Any:
        return self.variant.program

    def _fuzzable(self, spec: ScenarioSpec, kinds: list[EventKind]) -> ScenarioSpec:
        """The scenario as every execution runs it: counting instructions, the [fuzz]
        checker attached, and the capabilities the event kinds need enabled."""
        machine = spec.machine
        for kind in kinds:
            for name in kind.needs_caps:
                cap = Cap[name]
                if cap in machine.enable:
                    continue
                if spec.poison:
                    raise TargetError(f"event kind {kind.name!r} needs KVM_CAP_{name}, which changes what the "
                                      f"scenario's own [[poison]] does: enable it in [machine] enable")
                machine = dataclasses.replace(machine, enable=machine.enable + (cap,))
        limits = dataclasses.replace(spec.limits, count_instructions=True)
        return dataclasses.replace(spec, machine=machine, limits=limits, sections={"fuzz": self.config},
                                   variants=[self.variant])

    def resolve(self, ref: Ref) -> int:
        return self.doc.resolve(ref, self.program.symbols)

    # -- runs ----------------------------------------------------------------------------------

    def steps_for(self, plan: Plan, raw_extra: list[dict[str, Any]] | None = None) -> tuple[Step, ...]:
        """The scenario's steps followed by the plan's (every injection lies after the
        scenario's own steps: the window starts there)."""
        own = self.spec.steps
        if raw_extra:
            doc = Doc(f"{self.path} (fuzz injection)", {})
            extra = plan_steps(plan) + raw_extra
            return own + tuple(parse_step(doc, len(own) + i, raw, self.spec.machine.vcpus)
                               for i, raw in enumerate(extra))
        steps: list[Step] = []
        for inj in sorted(plan.injections, key=lambda i: i.at):
            for step in self._injection_steps(inj.kind, inj.params):
                trigger = step.trigger
                if trigger is not None and trigger.name == "instructions":
                    trigger = TriggerCall(trigger.name, inj.at, trigger.count, trigger.path)
                # The constructors, not dataclasses.replace: this runs for every execution, and
                # replace() costs ~2 us a call in introspection.
                steps.append(Step(len(own) + len(steps), step.name, step.vcpu, trigger, step.actions, step.optional,
                                  step.path))
        return own + tuple(steps)

    def _injection_steps(self, kind: str, params: tuple[tuple[str, Any], ...]) -> tuple[Step, ...]:
        """An injection's steps, parsed once per kind and parameters (the boundary is filled
        in by steps_for: parsing is most of what building a plan costs)."""
        key = (kind, params)
        cached = self._parsed.get(key)
        if cached is None:
            doc = Doc(f"{self.path} (fuzz injection)", {})
            raw = EVENT_KINDS[kind].steps(0, dict(params))
            cached = tuple(parse_step(doc, i, r, self.spec.machine.vcpus) for i, r in enumerate(raw))
            if len(self._parsed) > 4096:
                self._parsed.clear()
            self._parsed[key] = cached
        return cached

    def run_for(self, plan: Plan, *, budget: int | None = None, raw_extra: list[dict[str, Any]] | None = None,
                recorder: Any = None) -> ScenarioRun:
        """A built ScenarioRun that performs `plan` (the general execution path)."""
        limits = self.spec.limits
        if budget is not None:
            limits = dataclasses.replace(limits, max_instructions=budget)
        spec = dataclasses.replace(self.spec, steps=self.steps_for(plan, raw_extra), limits=limits)
        return ScenarioRun(spec, self.variant, self.doc, recorder=recorder, count_instructions=True)

    # -- the baseline and the window -------------------------------------------------------

    @cached_property
    def baseline(self) -> Baseline:
        from .general import run_general  # the general path judges the baseline too

        probe = self.run_for(Plan(()), budget=self.config.max_instructions)
        result = probe.execute()
        assert result is not None
        outcome = run_general(self, Plan(()), run=probe, result=result)
        if outcome.violations:
            raise TargetError(f"{self.path}: the scenario breaks an invariant with nothing injected: "
                              + "; ".join(v.text() for v in outcome.violations))
        end = probe.instruction_count()
        budget = self.config.max_instructions or (2 * end + 10_000)
        return Baseline(end, tuple(outcome.exits), budget)

    def _run_to_window(self) -> ScenarioRun:
        """A run standing at the start of the window: every scenario step fired, then (with
        `from`) the first execution of that address."""
        raw = [] if self.config.start is None else [
            {"name": "fuzz: the window starts", "when": {"pc": self.resolve(self.config.start)}}]
        run = self.run_for(Plan(()), raw_extra=raw)
        if run.execute(until_step=len(run.spec.steps)) is not None:
            what = "`from` is never executed" if raw else "the scenario's steps do not all fire"
            raise TargetError(f"{self.path}: no window to fuzz: {what} in the baseline run")
        return run

    def boundaries(self) -> list[Boundary]:
        """Every instruction boundary of the window, in execution order."""
        return self._boundaries

    @cached_property
    def _boundaries(self) -> list[Boundary]:
        run = self._run_to_window()
        vcpu = run.vm.vcpus[0]
        stop = None if self.config.end is None else self.resolve(self.config.end)
        probes = [(k.name, k.probe) for k in self.kinds if k.probe is not None]
        out: list[Boundary] = []
        while len(out) < MAX_BOUNDARIES:
            b = boundary_here(vcpu, run.instruction_count(), probes)
            if out and b.pc == stop:
                break
            out.append(b)
            ex = vcpu.run(max_instructions=1, timeout=None)
            if ex.reason is not ExitReason.INSTRUCTION_BUDGET:
                break
        return out


def boundary_here(vcpu: Any, count: int, probes: list[tuple[str, Any]] | None = None) -> Boundary:
    """The boundary `vcpu` stands at: PC, PSTATE, the instruction, for a load/store to RAM
    the guest-physical address it accesses first, and what each (kind, probe) reads."""
    regs = vcpu.regs()
    pc, pstate = regs["pc"], regs["pstate"]
    insn = vcpu._fetch(pc)
    address = None
    if insn is not None and decode_load_store(insn) is not None:
        sp = vcpu.reg("sp")
        va = effective_address(insn, pc, lambda n: regs[f"x{n}"], sp)
        pa = None if va is None else vcpu.translate(va)
        if pa is not None and vcpu.vm.memory.ram_at(pa) is not None:
            address = pa
    return Boundary(count, pc, pstate, insn, address, tuple((name, probe(vcpu)) for name, probe in probes or ()))
