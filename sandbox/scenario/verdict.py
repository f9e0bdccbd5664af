"""The end of a scenario run: what was observed, and the verdict against `[expect]`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..firmware import exception_records
from ..ras.consumer import consumed_errors
from . import sdei_expect
from .expect import Mismatch, compare_records
from .fields import Ref
from .result import VariantResult
from .sections import SECTIONS

if TYPE_CHECKING:
    from .runner import ScenarioRun


def observed_exceptions(run: "ScenarioRun") -> list[dict[str, int]]:
    """The guest's own records (firmware/vectors.S) when it has them, else what the host saw."""
    ring = run.program.symbols.get("exc_ring")
    if ring is None:
        return list(run.host_exceptions)
    out = []
    for v in run.vm.vcpus:
        cpu = v.mpidr & 0xFF
        for r in exception_records(run.vm, ring, cpu):
            out.append({"vector": r.vector, "ec": r.ec, "esr": r.esr, "far": r.far, "elr": r.elr,
                        "spsr": r.spsr, "isr": r.isr, "disr": r.disr, "cpu": cpu})
    return out


def judge(run: "ScenarioRun") -> VariantResult:
    """Compare what `run` observed with its variant's `[expect]`."""
    exp = run.variant.expect
    vm, v0 = run.vm, run.vm.vcpus[0]
    symbols = run.program.symbols
    mismatches: list[Mismatch] = []
    exceptions = observed_exceptions(run)
    observed: dict[str, Any] = {"exceptions": exceptions, "exits": [e.reason.name for e in run.exits],
                                "uart": vm.uart.text if vm.uart is not None else "",
                                "host_error": run.host_error, "steps_fired": list(run.fired),
                                "notes": list(run.notes)}
    if len(vm.vcpus) > 1:
        observed["exits_at"] = [f"{e.reason.name}@{e.vcpu or 0}" for e in run.exits]  # which vCPU exited
    if run.failure:
        mismatches.append(Mismatch("run", "to complete", run.failure))
    if exp.exceptions is not None:
        want = [{k: run.resolve(v) if isinstance(v, Ref) else v for k, v in w.items()} for w in exp.exceptions]
        want = [{**w, "cpu": w.get("cpu", 0)} for w in want]
        got = [g for g in exceptions if g["cpu"] in {w["cpu"] for w in want} or exp.no_other_exceptions]
        mismatches += compare_records("exceptions", want, got, exp.no_other_exceptions)
    elif exp.no_other_exceptions and exceptions:
        mismatches.append(Mismatch("exceptions (no other expected)", [], exceptions))
    if exp.registers:
        regs = {name: v0.reg(name) for name in exp.registers}
        observed["registers"] = regs
        for name, ref in exp.registers.items():
            want_v = run.resolve(ref)
            if regs[name] != want_v:
                mismatches.append(Mismatch(f"registers.{name}", want_v, regs[name]))
    for i, (ref, data, value, width) in enumerate(exp.memory):
        address = run.resolve(ref)
        size = len(data) if data is not None else width
        try:
            got_b = vm.read_memory(address, size)
        except OSError as e:
            mismatches.append(Mismatch(f"memory[{i}]", data if data is not None else value, f"unreadable: {e}"))
            continue
        got_v: Any = got_b if data is not None else int.from_bytes(got_b, "little")
        observed.setdefault("memory", []).append({"address": address, "value": got_v})
        if got_v != (data if data is not None else value):
            mismatches.append(Mismatch(f"memory[{i}] @ {address:#x}", data if data is not None else value, got_v))
    if exp.uart is not None and observed["uart"] != exp.uart:
        mismatches.append(Mismatch("uart", exp.uart, observed["uart"]))
    if exp.uart_contains is not None and exp.uart_contains not in observed["uart"]:
        mismatches.append(Mismatch("uart_contains", exp.uart_contains, observed["uart"]))
    if exp.exits is not None:
        # "NAME@N" also names the vCPU that exited (several vCPUs: Exit.vcpu).
        at = [f"{e.reason.name}@{e.vcpu or 0}" for e in run.exits]
        got_x = [at[i] if "@" in w else observed["exits"][i] for i, w in enumerate(exp.exits) if i < len(at)]
        if len(at) != len(exp.exits) or got_x != exp.exits:
            mismatches.append(Mismatch("exits", exp.exits, at if any("@" in w for w in exp.exits) else observed["exits"]))
    if exp.events:
        ev = v0.get_events()
        got_ev = {"serror_pending": ev.serror_pending, "serror_esr": ev.serror_esr}
        observed["events"] = got_ev
        for k, want_v in exp.events.items():
            if got_ev[k] != want_v:
                mismatches.append(Mismatch(f"events.{k}", want_v, got_ev[k]))
    if "ghes_log" in symbols:
        consumed = [{"source": c.source_id, "notification": c.notification, "address": c.physical_address,
                     "severity": c.severity, "block_status": c.block_status, "esr": c.esr,
                     "memory_section": c.memory_section, "address_valid": c.address_valid}
                    for c in consumed_errors(vm, symbols["ghes_log"])]
        observed["firmware_first"] = consumed
        if exp.firmware_first is not None:
            want = [{k: run.resolve(v) if isinstance(v, Ref) else v for k, v in w.items()}
                    for w in exp.firmware_first]
            mismatches += compare_records("firmware_first", want, consumed, exact=True)
    elif exp.firmware_first is not None:
        mismatches.append(Mismatch("firmware_first", exp.firmware_first, "no ghes_log (include ghes.S)"))
    if exp.host_error is not None:
        if run.host_error is None or exp.host_error not in run.host_error:
            mismatches.append(Mismatch("host_error", exp.host_error, run.host_error))
    elif run.host_error is not None:
        mismatches.append(Mismatch("host_error", None, run.host_error))
    if run.host_error is None and not run.failure:
        last = run.exits[-1].describe() if run.exits else "no exit"
        for step in run.spec.steps[run.step_index:]:
            if not step.optional:
                mismatches.append(Mismatch(f"steps[{step.index}] {step.describe()}", "to fire",
                                           f"never fired (the run ended: {last})"))
    mismatches += sdei_expect.judge(run, observed)
    for name, value in run.spec.sections.items():
        mismatches += SECTIONS[name].judge(run, value, observed)
    quirks = tuple(sorted(set(run.spec.machine.quirks) | set(run.variant.quirks)))
    names: dict[int, str] = {}
    for name, address in sorted(symbols.items(), key=lambda kv: kv[0]):
        if run.program.base <= address < run.program.end and not name.isupper():
            names.setdefault(address, name)  # labels, not .equ constants
    return VariantResult(run.variant.name, run.variant.description, quirks, not mismatches, mismatches,
                         observed, names)
