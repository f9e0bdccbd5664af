"""A finding as a scenario file that replays it alone.

The reproducer is the original scenario file with the chosen variant folded in, the
injection as ordinary `[[steps]]`, and the observed run as its expectation: `[expect]`
holds the exits and the exceptions the guest recorded, `[fuzz] expect_violations` the
invariants broken. `sandbox run REPRO.toml` therefore passes exactly when the violation
reproduces, and shows it (the variant's description is the first violation).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import tomli_w

from ..firmware import firmware_dir
from .outcome import Outcome
from .plan import Plan, plan_steps
from .target import Target


def reproducer_text(target: Target, plan: Plan, outcome: Outcome, dest: Path, *, how: str) -> str:
    """The TOML text of a reproducer to be written at `dest` (paths are made relative to it)."""
    raw = tomllib.loads(target.path.read_text())
    variant = target.variant
    raw.pop("variants", None)
    raw.pop("expect", None)
    machine = raw.setdefault("machine", {})
    quirks = sorted(set(machine.get("quirks", [])) | set(variant.quirks))
    if quirks:
        machine["quirks"] = quirks
    enable = list(machine.get("enable", []))
    for cap in target.spec.machine.enable:
        if cap.name not in enable:
            enable.append(cap.name)
    if enable:
        machine["enable"] = enable
    if not machine:
        raw.pop("machine")
    fw = raw["firmware"]
    if variant.defines:
        fw["defines"] = {**fw.get("defines", {}), **variant.defines}
    fw["files"] = [_relative_file(target.path.parent, name, dest.parent) for name in fw.get("files", [])]
    if not fw["files"]:
        del fw["files"]
    raw["steps"] = list(raw.get("steps", [])) + plan_steps(plan)
    run = raw.setdefault("run", {})
    run["max_instructions"] = target.baseline.budget
    fuzz = raw.setdefault("fuzz", {})
    fuzz.pop("events", None)
    fuzz["expect_violations"] = sorted({v.invariant for v in outcome.violations})
    raw["expect"] = {"exits": outcome.exits, "no_other_exceptions": True,
                     "exceptions": [{"vector": v, "esr": e, "elr": elr, "spsr": spsr, "isr": isr}
                                    for v, e, elr, spsr, isr in outcome.recorded]}
    first = outcome.violations[0].text() if outcome.violations else "no violation"
    raw["variants"] = {"reproduction": {"description": first}}
    raw["purpose"] = f"Reproducer ({how}): {plan.describe()} breaks {', '.join(fuzz['expect_violations'])}"
    raw.pop("source", None)
    head = [f"# Written by sandbox {how} from {target.path} (variant {variant.name!r}).",
            f"# Injection: {plan.describe()}",
            "# `sandbox run` on this file passes while the violation reproduces:"]
    head += [f"#   {v.text()}" for v in outcome.violations]
    body = tomli_w.dumps({"format_version": raw.pop("format_version", 1), **raw}, multiline_strings=True)
    return "\n".join(head) + "\n" + body


def write_reproducer(target: Target, plan: Plan, outcome: Outcome, dest: Path, *, how: str) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    text = reproducer_text(target, plan, outcome, dest, how=how)
    tmp = dest.with_suffix(dest.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, dest)  # a killed campaign never leaves half a file
    return dest


def _relative_file(scenario_dir: Path, name: str, dest_dir: Path) -> str:
    """How the reproducer names a firmware file: as is when firmware/ has it, else the
    path from the reproducer's folder to the file next to the original scenario."""
    here = scenario_dir / name
    if here.is_file() and not (firmware_dir() / name).is_file():
        return os.path.relpath(here.resolve(), dest_dir.resolve())
    return name
