"""Random plans for `sandbox fuzz`: fresh ones and mutations of corpus entries.

Everything is drawn from one `random.Random` the campaign seeds per round, so a seed
decides the whole campaign. A fresh plan picks an event kind, then a masking state the
window has for it (so masked and unmasked points are tried alike, however rare one is),
then a boundary in that state and random parameters. A mutation moves an injection, redraws
its parameters, drops one, or nests a second event shortly after an existing one (while its
handler runs). Kinds whose parameters depend on the boundary (the address an access consumes
poison at) are placed only at baseline boundaries before any other injection, where the
guest's state is the baseline's.
"""

from __future__ import annotations

import random
from collections import defaultdict

from .events import Boundary, EventKind
from .plan import Injection, Plan

MAX_INJECTIONS = 4
NEST_WITHIN = 96  # instructions after an injection a nested one may come


class PlanGenerator:
    def __init__(self, boundaries: list[Boundary], kinds: list[EventKind]):
        self.boundaries = boundaries
        self.index = {b.count: i for i, b in enumerate(boundaries)}
        self.groups: dict[str, dict[object, list[Boundary]]] = {}
        for kind in kinds:
            groups: dict[object, list[Boundary]] = defaultdict(list)
            for b in boundaries:
                if kind.applies(b):
                    groups[(kind.masked(b), b.pstate & 0xF)].append(b)
            if groups:
                self.groups[kind.name] = dict(sorted(groups.items(), key=lambda kv: str(kv[0])))
        self.kinds = {k.name: k for k in kinds if k.name in self.groups}
        # kinds that can go anywhere (their parameters do not depend on the boundary)
        self.free = [k for k in self.kinds.values() if not k.bound]

    def _injection(self, rng: random.Random, kind: EventKind, b: Boundary) -> Injection:
        return Injection.make(b.count, kind.name, kind.bind(b, kind.random_params(rng)))

    def fresh(self, rng: random.Random) -> Plan:
        kind = self.kinds[rng.choice(sorted(self.kinds))]
        groups = self.groups[kind.name]
        group = groups[rng.choice(list(groups))]
        return Plan((self._injection(rng, kind, rng.choice(group)),))

    def mutate(self, rng: random.Random, plan: Plan) -> Plan:
        injections = list(plan.injections)
        op = rng.choice(("shift", "params", "nest", "nest", "drop"))
        i = rng.randrange(len(injections))
        inj = injections[i]
        kind = self.kinds.get(inj.kind)
        bound = "address" in inj.args
        if op == "drop" and len(injections) > 1:
            del injections[i]
        elif op == "nest" and self.free and len(injections) < MAX_INJECTIONS:
            nested = rng.choice(self.free)
            at = inj.at + rng.randint(0, NEST_WITHIN)
            injections.append(Injection.make(at, nested.name, nested.random_params(rng)))
        elif op == "params" and kind is not None:
            keep = {"address": inj.args["address"]} if bound else {}
            injections[i] = Injection.make(inj.at, inj.kind, {**kind.random_params(rng), **keep})
        elif kind is not None:  # shift
            if bound:
                if i != 0 or inj.at not in self.index:
                    return self.fresh(rng)
                j = min(len(self.boundaries) - 1, max(0, self.index[inj.at] + rng.randint(-8, 8)))
                b = self.boundaries[j]
                if not kind.applies(b):
                    return self.fresh(rng)
                injections[i] = Injection.make(b.count, inj.kind, kind.bind(b, {k: v for k, v in inj.params
                                                                               if k != "address"}))
            else:
                injections[i] = Injection(max(self.boundaries[0].count, inj.at + rng.randint(-8, 8)), inj.kind,
                                          inj.params)
        injections.sort(key=lambda x: x.at)
        if any(j > 0 and "address" in x.args for j, x in enumerate(injections)):
            return self.fresh(rng)  # a boundary-bound injection must come first
        return Plan(tuple(injections))
