"""Traces: every observer event as one JSON record (JSON Lines files, timelines, fuzzers).

A trace file is a header line, then one record per event, in the order they happened:

    {"format": "sandbox-trace", "version": 1, "source": ..., "kinds": [...], ...}
    {"seq": 0, "kind": "exception", "vcpu": 0, "icount": 1234, "pc": "0x40001000",
     "insn": "svc #0x42", "pstate": "0x3c5", "el": 1, "daif": "DAIF", "variant": "fixed",
     "entry": {"kind": "SYNC", "esr": "0x56000042", "esr_decoded": {"ec": 21, ...}, ...}}

Every kind in sandbox.observe.KINDS is recorded the same way (the event's data, converted
generically), so kinds added later (hypercall, sdei_dispatch, ...) need nothing here.
Integers in event data are hex strings (64-bit values do not survive JSON readers that use
doubles); every `esr` field (a full ESR_ELx value) gets an `esr_decoded` sibling with the named fields of
sandbox.arch.esr.decode. `icount` is the vCPU's retired-instruction count when the run counts
instructions, else null; `pstate` is PSTATE after the event (the vector's PSTATE for an
exception, SPSR for an exception return).
"""

from __future__ import annotations

import dataclasses
import json
from enum import Enum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .arch import esr as esr_mod
from .arch import pstate as ps
from .disasm import disassemble_one
from .observe import KINDS, Event

if TYPE_CHECKING:
    from .vm import Vm

TRACE_FORMAT = "sandbox-trace"
TRACE_VERSION = 1


def to_json(value: Any) -> Any:
    """A JSON-able copy of an event value: ints as hex strings, enums by name, bytes as hex,
    dataclasses, named tuples and dicts as objects; an `esr` key gains `esr_decoded`."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return value
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, int):
        return f"{value:#x}"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    elif isinstance(value, tuple) and hasattr(value, "_asdict"):  # a NamedTuple record
        value = value._asdict()
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out[str(k)] = to_json(v)
            if k == "esr" and isinstance(v, int) and not isinstance(v, bool):
                out[f"{k}_decoded"] = esr_mod.decode(v)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json(v) for v in value]
    return str(value)


def pstate_after(event: Event, current: int) -> int:
    """PSTATE once the event is over: an exception enters with the vector's PSTATE, an ERET
    returns to SPSR; anything else leaves the vCPU's PSTATE as it is."""
    if event.kind == "exception" and "entry" in event.data:
        return int(event.data["entry"].pstate)
    if event.kind == "eret" and "spsr" in event.data:
        return int(event.data["spsr"])
    return current


def daif_text(pstate: int) -> str:
    """Masked bits by letter, e.g. 'DAIF' all masked, 'D-IF' SErrors unmasked."""
    return "".join(ch if pstate & bit else "-" for ch, bit in (("D", ps.D), ("A", ps.A), ("I", ps.I), ("F", ps.F)))


class TraceRecorder:
    """An observer (sandbox.observe) that keeps every event as a trace record and, given a
    stream, writes each as a JSON line as soon as it happens."""

    def __init__(self, stream: IO[str] | None = None, *, header: dict[str, Any] | None = None):
        self.records: list[dict[str, Any]] = []
        self.stream = stream
        self.context: dict[str, Any] = {}  # added to every record (e.g. the scenario variant)
        self.counted = False  # the driver counts instructions (icount 0 before the first run)
        self._vm: "Vm | None" = None
        self.header = {"format": TRACE_FORMAT, "version": TRACE_VERSION, "kinds": list(KINDS), **(header or {})}
        if stream is not None:
            stream.write(json.dumps(self.header) + "\n")

    def attach(self, vm: "Vm") -> None:
        """Observe `vm` (and stop observing the previous one, e.g. after a restore)."""
        self.detach()
        vm.observers.append(self)
        self._vm = vm

    def detach(self) -> None:
        if self._vm is not None and self in self._vm.observers:
            self._vm.observers.remove(self)
        self._vm = None

    def __call__(self, event: Event) -> None:
        record = self.record(event)
        self.records.append(record)
        if self.stream is not None:
            self.stream.write(json.dumps(record) + "\n")

    def _icount(self, vcpu: Any) -> int | None:
        if vcpu is None:
            return None
        count = vcpu.instruction_count()
        if count is None and self.counted:
            count = vcpu.instructions
        return count  # vCPU counts survive snapshot/restore

    def record(self, event: Event) -> dict[str, Any]:
        vm = self._vm
        vcpu = vm.vcpus[event.vcpu] if vm is not None and event.vcpu < len(vm.vcpus) else None
        current = vcpu.pstate() if vcpu is not None else 0
        after = pstate_after(event, current)
        try:
            insn = disassemble_one(vm.read_memory(event.pc, 4), event.pc) if vm is not None else None
        except OSError:
            insn = None  # not in RAM (a device, nothing)
        out: dict[str, Any] = {
            "seq": len(self.records), "kind": event.kind, "vcpu": event.vcpu,
            "icount": self._icount(vcpu),
            "pc": f"{event.pc:#x}", "insn": insn,
            "pstate": f"{after:#x}", "el": ps.el(after), "daif": daif_text(after),
            **self.context,
        }
        for key, value in event.data.items():
            out[key] = to_json(value)
            if key == "esr" and isinstance(value, int):
                out["esr_decoded"] = esr_mod.decode(value)
        return out


def read_trace(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, records) of a JSON Lines trace; ValueError if it is not one."""
    lines = Path(path).read_text().splitlines()
    if not lines:
        raise ValueError(f"{path}: empty file, not a sandbox trace")
    header = json.loads(lines[0])
    if header.get("format") != TRACE_FORMAT:
        raise ValueError(f"{path}: not a sandbox trace (format {header.get('format')!r})")
    if header.get("version") != TRACE_VERSION:
        raise ValueError(f"{path}: trace version {header.get('version')}; this sandbox reads {TRACE_VERSION}")
    return header, [json.loads(line) for line in lines[1:] if line.strip()]


def start_trace(path: str | None, **header: Any) -> TraceRecorder:
    """A recorder that streams to `path` (JSON Lines) when given, else only keeps records."""
    stream = open(path, "w") if path else None
    return TraceRecorder(stream, header=header)


def finish_trace(recorder: TraceRecorder, timeline: str | None = None) -> None:
    """Close the trace file and, if asked, draw the timeline (sandbox.timeline)."""
    recorder.detach()
    if recorder.stream is not None:
        recorder.stream.close()
    if timeline:
        from .timeline import write_timeline
        write_timeline(timeline, recorder.header, recorder.records)
