"""What a scenario run returns: per variant, PASS/FAIL with the mismatches and what was
observed; rendered as readable text (expected vs observed) or JSON for machines."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..arch import esr as esr_mod
from ..arch import pstate as ps


@dataclass
class VariantResult:
    name: str
    description: str
    quirks: tuple[str, ...]
    passed: bool
    mismatches: list[Any]  # sandbox.scenario.expect.Mismatch
    observed: dict[str, Any]
    names: dict[int, str] = field(default_factory=dict)  # code addresses -> labels, for the diff

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "quirks": list(self.quirks),
                "passed": self.passed,
                "mismatches": [{"field": m.field, "expected": _jsonable(m.expected), "observed": _jsonable(m.observed)}
                               for m in self.mismatches],
                "observed": _jsonable(self.observed)}


@dataclass
class ScenarioResult:
    file: str
    purpose: str
    source: Any  # sandbox.scenario.model.Source | None
    variants: list[VariantResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.variants)

    def variant(self, name: str) -> VariantResult:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    def text(self, verbose: bool = False) -> str:
        lines = [f"{'PASS' if self.passed else 'FAIL'} {self.file}: {self.purpose}"]
        if self.source is not None:
            lines.append(f"  source: {self.source.project} {self.source.reference} \"{self.source.title}\"")
        for v in self.variants:
            label = v.name + (f" (quirks: {', '.join(v.quirks)})" if v.quirks else "")
            lines.append(f"  {'PASS' if v.passed else 'FAIL'} {label}" + (f": {v.description}" if v.description else ""))
            for m in v.mismatches:
                lines.append(f"      {m.text(v.names)}")
            if verbose or not v.passed:
                lines.extend("      " + row for row in _observed_text(v.observed))
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        src = None if self.source is None else {"project": self.source.project, "reference": self.source.reference,
                                                "title": self.source.title, "what": self.source.what}
        return {"file": self.file, "purpose": self.purpose, "source": src, "passed": self.passed,
                "variants": [v.to_json() for v in self.variants]}


def _observed_text(obs: dict[str, Any]) -> list[str]:
    out = ["observed:"]
    for r in obs.get("exceptions", []):
        out.append(f"  exception cpu{r['cpu']} vector +{r['vector']:#05x} ESR {r['esr']:#010x} "
                   f"({esr_mod.ec_name(r['esr'] >> 26 & 0x3F)}) ELR {r['elr']:#x} FAR {r['far']:#x} "
                   f"SPSR {r['spsr']:#x} [{ps.describe(r['spsr'])}]" + (f" DISR {r['disr']:#x}" if r.get("disr") else ""))
    out.append(f"  exits: [{', '.join(obs.get('exits_at', obs.get('exits', [])))}]")
    for r in obs.get("sdei", []) or []:
        out.append(f"  sdei handler cpu{r['cpu']} event {r['event']:#x} arg {r['arg']:#x} interrupted PC {r['pc']:#x} "
                   f"[{ps.describe(r['pstate'])}] handler [{ps.describe(r['handler_pstate'])}] status {r['status']} "
                   f"completion {r['completion']}")
    for c in obs.get("sdei_completions", []) or []:
        out.append(f"  sdei {c['how']} cpu{c['cpu']} event {c['event']:#x}: restored PC {c['pc']:#x}"
                   + (f", resume at {c['resume']:#x}" if c.get("resume") is not None else ""))
    for c in obs.get("firmware_first", []) or []:
        out.append(f"  firmware-first consumed: source {c['source']} address {c['address']:#x} "
                   f"severity {c['severity']} ESR {c['esr']:#x}")
    if obs.get("uart"):
        out.append(f"  uart: {obs['uart']!r}")
    if obs.get("host_error"):
        out.append(f"  host error: {obs['host_error']}")
    for n in obs.get("notes", []):
        out.append(f"  note: {n}")
    for v in obs.get("violations", []):
        out.append(f"  invariant violated: {v}")
    return out


def _jsonable(v: Any) -> Any:
    if isinstance(v, bool) or v is None or isinstance(v, (str, float)):
        return v
    if isinstance(v, int):
        return f"{v:#x}"
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).hex()
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return str(v)
