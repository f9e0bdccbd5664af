"""`sandbox fuzz`: a seeded, coverage-guided campaign whose corpus and findings live on disk.

The campaign runs in rounds of `ROUND` plans. Round r draws its plans from
`random.Random(f"{seed}/{r}")` and the corpus as it stood after round r-1, executes them
(here, in worker processes or on Ray: results come back in plan order), then merges them
in that order: a plan reaching guest basic blocks no plan reached before joins the corpus;
a violation not seen before becomes a finding, minimised and written as a reproducer. So the
same seed gives the same campaign, whatever ran it.

On disk (OUT/): `campaign.json` (what the campaign is and the last completed round),
`corpus/NNNNNN.json`, `findings/<id>.toml` (the reproducer) and `findings/<id>.json`. Each
file is written whole (write, then rename) and the state after the findings it mentions, so
a campaign killed at any moment (kill -9) resumes with the same command: the round in flight
is run again, and gives the same results.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .generate import PlanGenerator
from .minimise import minimise
from .outcome import Outcome
from .plan import Plan
from .reproducer import write_reproducer
from .target import Target

ROUND = 128
STATE_VERSION = 1


class CampaignError(Exception):
    """OUT holds another campaign, or a file there is damaged."""


@dataclass
class Finding:
    id: str
    plan: Plan
    violations: list[str]
    file: str
    round: int

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "plan": self.plan.to_json(), "violations": self.violations, "file": self.file,
                "round": self.round}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Finding":
        return cls(d["id"], Plan.from_json(d["plan"]), list(d["violations"]), d["file"], int(d["round"]))


@dataclass
class CampaignState:
    identity: dict[str, Any]
    round: int = 0
    executed: int = 0
    coverage: set[int] = field(default_factory=set)
    corpus: list[Plan] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "identity": self.identity, "round": self.round, "executed": self.executed,
                "coverage": sorted(self.coverage), "corpus": len(self.corpus),
                "findings": [f.to_json() for f in self.findings]}


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def finding_id(outcome: Outcome) -> str:
    """The first invariant broken, where it showed: the same finding (what follows a
    broken context differs from one injection to the next)."""
    key = outcome.violations[0].signature()
    return hashlib.sha256(key.encode()).hexdigest()[:12]


class Campaign:
    def __init__(self, target: Target, out: Path, seed: int, pool: Any):
        self.target = target
        self.out = Path(out)
        self.seed = seed
        self.pool = pool
        self.generator = PlanGenerator(target.boundaries(), target.kinds)
        if not self.generator.kinds:
            raise CampaignError(f"{target.path}: no event kind of {', '.join(target.config.events)} applies at any "
                                "boundary of the window (nothing to inject)")
        identity = {"scenario": str(target.path), "variant": target.variant.name, "seed": seed,
                    "events": list(target.config.events), "round_size": ROUND,
                    "budget": target.baseline.budget, "window": [target.boundaries()[0].count,
                                                                 target.boundaries()[-1].count]}
        self.state = self._load(identity)

    # -- disk ------------------------------------------------------------------------------

    def _load(self, identity: dict[str, Any]) -> CampaignState:
        (self.out / "corpus").mkdir(parents=True, exist_ok=True)
        (self.out / "findings").mkdir(parents=True, exist_ok=True)
        path = self.out / "campaign.json"
        if not path.exists():
            return CampaignState(identity)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CampaignError(f"{path}: unreadable campaign state: {e}") from None
        if data.get("identity") != identity:
            raise CampaignError(f"{self.out} holds another campaign ({data.get('identity')}); "
                                "use another --out or remove it")
        state = CampaignState(identity, int(data["round"]), int(data["executed"]), set(data["coverage"]))
        for i in range(int(data["corpus"])):
            entry = json.loads((self.out / "corpus" / f"{i:06d}.json").read_text())
            state.corpus.append(Plan.from_json(entry["plan"]))
        state.findings = [Finding.from_json(f) for f in data["findings"]]
        return state

    def _commit(self) -> None:
        _write_json(self.out / "campaign.json", self.state.to_json())

    # -- rounds ------------------------------------------------------------------------------

    def plans_for(self, r: int, count: int) -> list[Plan]:
        rng = random.Random(f"{self.seed}/{r}")
        plans = []
        for _ in range(count):
            if not self.state.corpus or rng.random() < 0.25:
                plans.append(self.generator.fresh(rng))
            else:
                plans.append(self.generator.mutate(rng, rng.choice(self.state.corpus)))
        return plans

    def run(self, *, iterations: int | None = None, seconds: float | None = None,
            progress: Callable[["Campaign"], None] | None = None) -> CampaignState:
        started = time.monotonic()
        self.elapsed = 0.0
        while True:
            if iterations is not None and self.state.executed >= iterations:
                break
            if seconds is not None and time.monotonic() - started >= seconds:
                break
            count = ROUND if iterations is None else min(ROUND, iterations - self.state.executed)
            r = self.state.round
            plans = self.plans_for(r, count)
            outcomes = self.pool.execute(plans, start=self.target.boundaries()[0].count)
            self._merge(r, plans, outcomes)
            self.state.round += 1
            self.state.executed += len(plans)
            self._commit()
            self.elapsed = time.monotonic() - started
            if progress is not None:
                progress(self)
        return self.state

    def _merge(self, r: int, plans: list[Plan], outcomes: list[Outcome]) -> None:
        known = {f.id for f in self.state.findings}
        for plan, outcome in zip(plans, outcomes):
            new = outcome.coverage - self.state.coverage
            if new:
                self.state.coverage |= new
                _write_json(self.out / "corpus" / f"{len(self.state.corpus):06d}.json",
                            {"plan": plan.to_json(), "round": r, "new_blocks": len(new)})
                self.state.corpus.append(plan)
            if outcome.violations:
                fid = finding_id(outcome)
                if fid not in known:
                    known.add(fid)
                    self.state.findings.append(self._finding(fid, r, plan, outcome))

    def _finding(self, fid: str, r: int, plan: Plan, outcome: Outcome) -> Finding:
        from .general import run_general

        boundaries = self.target.boundaries()

        def earlier(inj: Any) -> list[int]:
            return [b.count for b in reversed(boundaries) if b.count < inj.at][:64]

        small, small_outcome = minimise(plan, outcome, lambda p: self.pool.execute([p])[0], earlier)
        exact = run_general(self.target, small)  # the reproducer records what `sandbox run` will see
        if exact.violations:
            small_outcome = exact
        dest = self.out / "findings" / f"{fid}.toml"
        write_reproducer(self.target, small, small_outcome, dest, how=f"fuzz --seed {self.seed}")
        finding = Finding(fid, small, [v.text() for v in small_outcome.violations], str(dest), r)
        _write_json(self.out / "findings" / f"{fid}.json",
                    {**finding.to_json(), "found_by": plan.to_json()})
        return finding
