"""Shrinking a violating plan to what it needs.

Greedy, in a fixed order (so the same finding shrinks the same way): drop injections one at
a time, then reset each remaining injection's parameters to the kind's defaults (KVM's own
SError syndrome, no extra abort ISS, one SDEI instance; the kind's `essential` ones stay),
then move each injection to the earliest boundary of
the window that still breaks the same invariant (fewer instructions to read). A candidate
is kept when its run still violates at least one of the invariants the original broke.
"""

from __future__ import annotations

from typing import Callable

from .events import EVENT_KINDS
from .outcome import Outcome
from .plan import Injection, Plan

MAX_TRIES = 200


def minimise(plan: Plan, outcome: Outcome, execute: Callable[[Plan], Outcome],
             earliest: Callable[[Injection], list[int]] | None = None) -> tuple[Plan, Outcome]:
    """The smallest plan found that still breaks one of `outcome`'s invariants, and its outcome.
    `earliest(injection)` lists earlier boundaries to try for it (nearest first)."""
    wanted = {v.invariant for v in outcome.violations}
    tries = 0

    def still(candidate: Plan) -> Outcome | None:
        nonlocal tries
        tries += 1
        o = execute(candidate)
        return o if {v.invariant for v in o.violations} & wanted else None

    best, best_outcome = plan, outcome
    i = len(best.injections) - 1
    while i >= 0 and len(best.injections) > 1 and tries < MAX_TRIES:
        candidate = Plan(best.injections[:i] + best.injections[i + 1:])
        o = still(candidate)
        if o is not None:
            best, best_outcome = candidate, o
        i -= 1
    for i, inj in enumerate(best.injections):
        essential = EVENT_KINDS[inj.kind].essential  # the address poison sits at, the SDEI event
        keep = {k: v for k, v in inj.params if k in essential}
        if dict(inj.params) != keep and tries < MAX_TRIES:
            candidate = Plan(best.injections[:i] + (Injection.make(inj.at, inj.kind, keep),) + best.injections[i + 1:])
            o = still(candidate)
            if o is not None:
                best, best_outcome = candidate, o
    if earliest is not None and len(best.injections) == 1 and not dict(best.injections[0].params).get("address"):
        inj = best.injections[0]
        for at in earliest(inj):
            if tries >= MAX_TRIES:
                break
            candidate = Plan((Injection(at, inj.kind, inj.params),))
            o = still(candidate)
            if o is None:
                break
            best, best_outcome = candidate, o
    return best, best_outcome
