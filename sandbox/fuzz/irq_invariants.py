"""The IRQ invariant, on the GIC's notifications (sandbox/devices/gic.py):

    irq-delivery    every edge the host latched (`irq_pend`) is acknowledged exactly once
                    (`irq_ack`, GICC_IAR) or still pending at the end

Only INTIDs the host pulsed are counted: an interrupt the guest makes pending itself
(GICD_ISPENDR, an SGI) has no host edge to account for. That an IRQ handler gives the
interrupted context back is the `context` invariant's (IRQ and FIQ entries are asynchronous:
x0-x30 and SP are checked at their ERET), and that none is taken while PSTATE.I (F) masks it
the built-in `delivery`'s (sandbox/fuzz/invariants.py): they see the exception entries anyway.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..observe import Event
from .invariants import InvariantSpec, RunEnd, Violation, register_invariant

if TYPE_CHECKING:
    from .invariants import Checker

DELIVERY = "irq-delivery"


class IrqDelivery:
    WATCHES = frozenset({"irq_pend", "irq_ack"})

    def __init__(self, checker: "Checker", counts: dict[int, list[int]] | None = None):
        self.checker = checker
        self.counts = counts if counts is not None else {}  # INTID -> [edges latched, acknowledged]

    def fork(self, checker: "Checker") -> "IrqDelivery":
        return IrqDelivery(checker, {k: list(c) for k, c in self.counts.items()} if self.counts else {})

    def attach(self, vm: Any) -> None:
        self.counts = {}  # a restored machine: what is latched there was not pulsed in this run

    def on_event(self, event: Event) -> None:
        intid = event.data["intid"]
        if event.kind == "irq_pend":
            self.counts.setdefault(intid, [0, 0])[0] += 1
            return
        c = self.counts.get(intid)
        if c is None:
            return  # not pulsed by the host
        c[1] += 1
        if c[1] > c[0]:
            self.checker.flag(DELIVERY, f"INTID {intid} acknowledged {c[1]} times, {c[0]} edges latched "
                                        "(an interrupt delivered twice)", event.pc)

    def finish(self, end: RunEnd) -> list[Violation]:
        if not self.counts or self.checker.vm is None:
            return []
        gic = self.checker.vm.interrupt_controller
        out = []
        for intid, (made, acked) in sorted(self.counts.items()):
            pending = sum(intid in cpu.banked.latched for cpu in gic.cpus) if intid < 32 else int(
                intid in gic.spi.latched)
            if made - acked > pending:
                out.append(Violation(DELIVERY, f"INTID {intid}: {made} edges latched, {acked} acknowledged, "
                                               f"{pending} still pending: {made - acked - pending} lost"))
        return out


register_invariant(InvariantSpec(
    DELIVERY, "every interrupt edge the host latched is acknowledged once or still pending",
    IrqDelivery, IrqDelivery.WATCHES))
