"""What happened inside a run, as events the host can observe (traces, timelines, fuzzers).

The Vm calls every observer with one `Event` per exit, exception taken, exception return,
injection, hypercall and SDEI dispatch. With no observer registered nothing is built, so
observation costs nothing unless somebody listens.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple


class Event(NamedTuple):
    """One thing that happened on a vCPU. `kind` is one of KINDS; `data` holds the values
    that kind carries (e.g. an ExceptionEntry under "entry" for "exception"). A named tuple:
    immutable, and the cheapest record Python builds (one is built per exception entry and
    return while anybody observes)."""

    kind: str
    vcpu: int  # vCPU index
    pc: int
    data: dict[str, Any]


KINDS = ("exit", "exception", "eret", "inject", "hypercall", "sdei_dispatch", "sdei_complete",
         "sdei_pend", "sdei_drop", "irq_pend", "irq_ack", "serror_pend", "serror_defer", "ghes", "step")
# serror_pend: a virtual SError became pending (data: esr); serror_defer: an ESB deferred it
# into DISR_EL1 (data: disr); ghes: firmware-first error recorded, queued or acknowledged
# (sandbox.ras.ghes); step: a scenario step fired (sandbox.scenario); sdei_pend / sdei_drop:
# SDEI instances made pending (injected, signalled, an interrupt, set by the VMM) or
# discarded (unregistration, release, PE reset, a lowered interrupt) (data: event, where,
# change, pending); irq_pend / irq_ack: the GIC latched an edge the host raised (a new
# pending instance) / a CPU interface acknowledged an interrupt (data: intid).

Observer = Callable[[Event], None]
