"""The "irq" event kind: at the boundary the host pulses an interrupt line the scenario's GIC
delivers to the vCPU (`raise_interrupt` then `lower_interrupt`, Vm.raise_interrupt: KVM_IRQ_LINE
up and down), so the GIC latches one edge (IHI 0048B 4.3.13: an edge-triggered interrupt is
pending from the rising edge until acknowledged).

Which INTIDs: those the kind's probe finds at the boundary, enabled and edge-triggered in the
GIC and routed to this vCPU (its PPIs; SPIs whose GICD_ITARGETSR names it), not bound to an
SDEI event (that would make the pulse an SDEI instance). A level-sensitive interrupt is left
out: a pulse on it is pending only while the line is high, so nothing would stay to deliver.

Masking is PSTATE.I at EL0/EL1 (HCR_EL2.IMO=1: the virtual IRQ, Arm ARM D1.16.1): `masked`
answers it for the boundary; a masked pulse waits, latched, for the guest to unmask.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..arch import pstate as ps
from ..hyp.sdei_abi import PPI_FIRST, SPI_FIRST  # the GIC's INTID ranges (IHI 0048B 2.2.1)
from .events import Boundary, EventKind, register_event_kind

if TYPE_CHECKING:
    from .target import Target

NAME = "irq"


def probe(vcpu: Any) -> tuple[int, ...] | None:
    """The INTIDs a pulse makes pending for `vcpu` here; None without a GIC."""
    gic = vcpu.vm.interrupt_controller
    if gic is None or not hasattr(gic, "cpus"):
        return None
    banked, spi = gic.cpus[vcpu.index].banked, gic.spi
    ppis = {i for i in banked.enabled & banked.edge if PPI_FIRST <= i < SPI_FIRST}
    spis = {i for i in spi.enabled & spi.edge if gic.targets.get(i, 0) & (1 << vcpu.index)}
    table = vcpu.vm.hypervisor.sdei.table
    return tuple(sorted(i for i in ppis | spis if table.bound(i) is None))


def _masked(b: Boundary) -> bool | None:
    if b.probe(NAME) is None:
        return None
    return bool(b.pstate & ps.I) and ps.el(b.pstate) <= 1


def _applies(b: Boundary) -> bool:
    return bool(b.probe(NAME))


def _bind(b: Boundary, params: dict[str, Any]) -> dict[str, Any]:
    """An INTID the GIC delivers here: the drawn one if it does, else one chosen by it."""
    intids = b.probe(NAME) or ()
    out = dict(params)
    if intids and out.get("intid") not in intids:
        out["intid"] = intids[out.get("intid", 0) % len(intids)]
    return out


def _steps(at: int, params: dict[str, Any]) -> list[dict[str, Any]]:
    line = {"intid": params["intid"]}
    return [{"name": f"fuzz: pulse INTID {params['intid']} at instruction boundary {at}",
             "when": {"instructions": at}, "do": [{"raise_interrupt": line}, {"lower_interrupt": line}]}]


def _for_target(target: "Target") -> EventKind:
    found: list[tuple[int, ...]] = []  # the window's INTIDs, read once, when first needed

    def random_params(rng: random.Random) -> dict[str, Any]:
        if not found:
            found.append(tuple(sorted({i for b in target.boundaries() for i in b.probe(NAME) or ()})) or (0,))
        return {"intid": rng.choice(found[0])}
    return replace(KIND, random_params=random_params)


KIND = EventKind(
    NAME, "the host pulses an edge-triggered interrupt the scenario's GIC delivers (masked by PSTATE.I)",
    applies=_applies, masked=_masked, random_params=lambda rng: {}, steps=_steps, bind=_bind, probe=probe,
    for_target=_for_target, essential=("intid",))
register_event_kind(KIND)
