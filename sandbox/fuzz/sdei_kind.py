"""The "sdei" event kind: at the boundary the host injects an SDEI event with
KVM_SDEI_CMD_INJECT_EVENT (the scenario action `sdei_inject`, sandbox/scenario/sdei_steps.py).

Which events: those the scenario's own steps expose (`sdei_expose`) and event 0, which
always exists (DEN0054C 4.4, reference/sdei.md 1.3); an injection draws one of them and a
count of 1 or 2 instances (v5 event_count), and now and then has the host mask the PE first
(`sdei_set_masked`, KVM_SDEI_CMD_SET_VCPU_STATE), so a masked PE is tried where the guest
leaves it unmasked; a sweep tries both at every boundary where the PE is unmasked. The host never unmasks: that would run the handler where the guest
forbade it, a fault of the host and not of the guest.

Masking is not PSTATE: SDEI events are dispatched from EL2/EL3 whatever PSTATE.DAIF says.
What makes an injected instance wait is the dispatcher's state on the PE, which the kind's
probe reads at every boundary of the window:

    masked   the PE is masked (PE_MASK, or never unmasked: PEs start masked, TF-A
             sdei_cpu_on_init) or a handler already runs there (a normal event waits for its
             COMPLETE, reference/sdei.md 3.1): `masked` answers True, the instance stays
             pending; False: it is dispatched before the next instruction.
    enabled  the events registered and enabled on the PE (EVENT_STATUS bit 1): only those
             can be injected (KVM answers EPERM for the others), so the kind applies at a
             boundary only where one is, and `bind` picks one of them. Injections placed
             elsewhere (nested ones a mutation adds) use `if_enabled`, so a refused one
             injects nothing instead of stopping the run.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..hyp.sdei_abi import SW_SIGNALED_EVENT
from ..kvm import Cap
from .events import Boundary, EventKind, register_event_kind

if TYPE_CHECKING:
    from .target import Target

NAME = "sdei"
MAX_COUNT = 2  # instances per injection: 1 or 2 (a second one waits for the first COMPLETE)


def probe(vcpu: Any) -> tuple[bool, tuple[int, ...]] | None:
    """(masked, events enabled on this PE) at the boundary `vcpu` stands at; None when the
    Vm offers no SDEI."""
    vm = vcpu.vm
    if not vm.check_extension(Cap.ARM_SDEI):
        return None
    sdei = vm.hypervisor.sdei
    pe = sdei.pes[vcpu.index]
    enabled = tuple(num for num, ev in sorted(sdei.table.events.items()) if sdei.table.enabled_on(ev, vcpu.index))
    return (pe.masked or bool(pe.stack), enabled)


def _masked(b: Boundary) -> bool | None:
    seen = b.probe(NAME)
    return None if seen is None else seen[0]


def _applies(b: Boundary) -> bool:
    seen = b.probe(NAME)
    return seen is not None and bool(seen[1])


def _bind(b: Boundary, params: dict[str, Any]) -> dict[str, Any]:
    """An event the PE has enabled here: the drawn one if it is, else one chosen by it."""
    seen = b.probe(NAME)
    enabled = seen[1] if seen is not None else ()
    out = {"count": 1, **params}
    if enabled and out.get("event") not in enabled:
        out["event"] = enabled[out.get("event", 0) % len(enabled)]
    return out


def _sweep(b: Boundary) -> list[tuple[Boundary, dict[str, Any]]]:
    """One instance as the guest's state has it; and, where the PE is unmasked, one with
    the host masking the PE first (the boundary then shows masked)."""
    params = _bind(b, {})
    out = [(b, params)]
    seen = b.probe(NAME)
    if seen is not None and not seen[0]:
        masked = tuple((k, (True, v[1]) if k == NAME else v) for k, v in b.probes)
        out.append((replace(b, probes=masked), {**params, "mask": 1}))
    return out


def _random(events: tuple[int, ...], rng: random.Random) -> dict[str, Any]:
    params: dict[str, Any] = {"event": rng.choice(events), "count": rng.randint(1, MAX_COUNT)}
    if rng.random() < 0.25:
        params["mask"] = 1  # the host masks the PE first
    return params


def _steps(at: int, params: dict[str, Any]) -> list[dict[str, Any]]:
    do: list[dict[str, Any]] = []
    if params.get("mask"):
        do.append({"sdei_set_masked": {"masked": True}})
    do.append({"sdei_inject": {"event": params["event"], "count": params.get("count", 1), "if_enabled": True}})
    return [{"name": f"fuzz: KVM_SDEI_CMD_INJECT_EVENT at instruction boundary {at}", "when": {"instructions": at},
             "do": do}]


def exposed_events(target: "Target") -> tuple[int, ...]:
    """Event 0 and the events the scenario's steps expose, in order."""
    found = [SW_SIGNALED_EVENT]
    for step in target.spec.steps:
        for call in step.actions:
            if call.name == "sdei_expose" and call.args["num"] not in found:
                found.append(call.args["num"])
    return tuple(found)


def _for_target(target: "Target") -> EventKind:
    events = exposed_events(target)
    return replace(KIND, random_params=lambda rng: _random(events, rng))


KIND = EventKind(
    NAME, "KVM_SDEI_CMD_INJECT_EVENT of an event the scenario exposes (count 1-2; the host may mask the PE first)",
    applies=_applies, masked=_masked, random_params=lambda rng: _random((SW_SIGNALED_EVENT,), rng),
    steps=_steps, bind=_bind, probe=probe, for_target=_for_target, essential=("event",), sweep=_sweep)
register_event_kind(KIND)
