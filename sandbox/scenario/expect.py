"""`[expect]`: what a scenario run must observe, and the comparison that produces the diff.

    [expect]
    exceptions = [ { vector = 0x380, esr = 0xBF000000, elr = "unmasked" } ]
    no_other_exceptions = true     # the guest took exactly these (default: these, in order,
                                   # among possibly others)
    registers = { x0 = 1 }         # vCPU 0 at the end
    memory = [ { address = "result", u64 = 0x5555 } ]
    uart = "exact text"            # or uart_contains = "part"
    exits = ["MMIO", "SYSTEM_EVENT"]     # every guest exit, in order ("MMIO@1": of vCPU 1)
    events = { serror_pending = 0 }      # KVM_GET_VCPU_EVENTS of vCPU 0 at the end
    firmware_first = [ { source = 0, address = "buffer", severity = "recoverable" } ]
                                   # what firmware/ghes.S consumed, all of it, in order
    host_error = "OSPM does not acknowledge"  # an action failed with this (the run stops)
    sdei, sdei_completions, sdei_state, sdei_bindings, vcpus    # sandbox/scenario/sdei_expect.py

Exception records come from the guest's own vector table (firmware/vectors.S) when the
firmware has one, else from the exceptions the host saw it take.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..ras.cper import Severity
from .actions import known_register, parse_memory_value
from . import sdei_expect
from .fields import Doc, Node, Ref, unsigned_fields
from .triggers import EXIT_NAMES

RECORD_FIELDS = ("vector", "ec", "esr", "far", "elr", "spsr", "isr", "disr", "cpu")
ADDRESS_FIELDS = ("far", "elr")
FF_FIELDS = ("source", "notification", "address", "severity", "block_status", "esr", "memory_section", "address_valid")
EVENT_FIELDS = ("serror_pending", "serror_esr")
EXPECT_KEYS = ("exceptions", "no_other_exceptions", "registers", "memory", "uart", "uart_contains", "exits",
               "events", "firmware_first", "host_error") + sdei_expect.KEYS


@dataclass
class Expect:
    exceptions: list[dict[str, Any]] | None = None  # values: int or Ref
    no_other_exceptions: bool = False
    registers: dict[str, Any] = field(default_factory=dict)
    memory: list[tuple[Ref, bytes | None, int | None, int]] = field(default_factory=list)
    uart: str | None = None
    uart_contains: str | None = None
    exits: list[str] | None = None
    events: dict[str, int] = field(default_factory=dict)
    firmware_first: list[dict[str, Any]] | None = None
    host_error: str | None = None
    # sandbox.scenario.sdei_expect
    sdei: list[dict[str, Any]] | None = None
    sdei_completions: list[dict[str, Any]] | None = None
    sdei_state: list[dict[str, Any]] = field(default_factory=list)
    sdei_bindings: list[dict[str, int]] | None = None
    vcpus: list[dict[str, Any]] | None = None


def parse_expect(doc: Doc, base: Node | None, override: Node | None) -> Expect:
    """The expectations of one variant: each key from the variant's `expect` table if it
    has it, else from `[expect]`."""
    e = Expect()
    for node in (base, override):
        if node is not None:
            for key in node.keys():
                if key not in EXPECT_KEYS:
                    for k in EXPECT_KEYS:
                        node.raw(k, None)
                    node.finish()

    def pick(key: str) -> Node | None:
        if override is not None and override.has(key):
            return override
        if base is not None and base.has(key):
            return base
        return None

    if (n := pick("exceptions")) is not None:
        e.exceptions = [_record(doc, t) for t in n.tables("exceptions")]
    if (n := pick("no_other_exceptions")) is not None:
        e.no_other_exceptions = n.bool("no_other_exceptions")
    if (n := pick("registers")) is not None:
        regs = n.table("registers")
        assert regs is not None
        for name in regs.keys():
            if not known_register(name):
                raise regs.error(name, f"unknown register {name!r}")
            e.registers[name] = regs.address(name)
    if (n := pick("memory")) is not None:
        for t in n.tables("memory"):
            ref = t.address("address")
            data, value, width = parse_memory_value(t)
            t.finish()
            e.memory.append((ref, data, value, width))
    if (n := pick("uart")) is not None:
        e.uart = n.str("uart")
    if (n := pick("uart_contains")) is not None:
        e.uart_contains = n.str("uart_contains")
    if (n := pick("exits")) is not None:
        e.exits = [_exit_name(n, i, x) for i, x in enumerate(n.str_list("exits"))]
    if (n := pick("events")) is not None:
        ev = n.table("events")
        assert ev is not None
        for k in EVENT_FIELDS:
            if ev.has(k):
                e.events[k] = ev.int(k, minimum=0)
        ev.finish()
    if (n := pick("firmware_first")) is not None:
        e.firmware_first = [_ff_record(t) for t in n.tables("firmware_first")]
    if (n := pick("host_error")) is not None:
        e.host_error = n.str("host_error")
    for key in sdei_expect.KEYS:
        if (n := pick(key)) is not None:
            sdei_expect.parse(doc, key, n, e)
    return e


def _exit_name(n: Node, i: int, text: str) -> str:
    """An exit reason (KVM_EXIT_* name), optionally "@N": the exit of vCPU N (Exit.vcpu)."""
    name, at, vcpu = text.partition("@")
    if name.upper() not in EXIT_NAMES or (at and not vcpu.isdigit()):
        raise n.doc.error(n.path + ("exits", i), f"{text!r} is not an exit reason (one of {', '.join(EXIT_NAMES)}), "
                                                 "optionally followed by @vCPU, e.g. \"MMIO@1\"")
    return name.upper() + (f"@{int(vcpu)}" if at else "")


def _record(doc: Doc, t: Node) -> dict[str, Any]:
    return unsigned_fields(t, RECORD_FIELDS, ADDRESS_FIELDS, need="an expected exception needs")


_SEVERITY_NAMES = [s.name.lower() for s in Severity]


def _ff_record(t: Node) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in FF_FIELDS:
        if not t.has(k):
            t.raw(k, None)
        elif k == "address":
            out[k] = t.address(k)
        elif k == "severity":
            out[k] = int(Severity[t.str(k, choices=_SEVERITY_NAMES).upper()])
        elif k in ("memory_section", "address_valid"):
            out[k] = t.bool(k)
        else:
            out[k] = t.int(k, minimum=0)
    t.finish()
    return out


# -- comparison -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Mismatch:
    field: str
    expected: Any
    observed: Any

    def text(self, names: dict[int, str] | None = None) -> str:
        """`names`: addresses to show with their symbol, e.g. 0x4001a20c <after>."""
        return f"{self.field}: expected {_show(self.expected, names)}, observed {_show(self.observed, names)}"


def _show(v: Any, names: dict[int, str] | None = None) -> str:
    if isinstance(v, bool) or v is None:
        return str(v).lower() if isinstance(v, bool) else "nothing"
    if isinstance(v, int):
        return f"{v:#x}" + (f" <{names[v]}>" if names and v in names else "")
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}={_show(x, names)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_show(x, names) for x in v) + "]"
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).hex()
    return repr(v) if isinstance(v, str) else str(v)


def _field_diffs(prefix: str, want: dict[str, int], got: dict[str, int]) -> list[Mismatch]:
    return [Mismatch(f"{prefix}.{k}", v, got.get(k)) for k, v in want.items() if got.get(k) != v]


def compare_records(name: str, want: list[dict[str, int]], got: list[dict[str, int]], exact: bool) -> list[Mismatch]:
    """Exact: the same number of records, field by field. Otherwise: the expected records
    appear in this order among the observed ones."""
    out: list[Mismatch] = []
    if exact:
        for i, w in enumerate(want):
            if i >= len(got):
                out.append(Mismatch(f"{name}[{i}]", w, None))
            else:
                out.extend(_field_diffs(f"{name}[{i}]", w, got[i]))
        for j in range(len(want), len(got)):
            out.append(Mismatch(f"{name}[{j}] (no other expected)", None, got[j]))
        return out
    pos = 0
    for i, w in enumerate(want):
        while pos < len(got) and _field_diffs("", w, got[pos]):
            pos += 1
        if pos == len(got):
            best = min(got, key=lambda g: len(_field_diffs("", w, g)), default=None)
            out.append(Mismatch(f"{name}[{i}] (in order)", w, best))
            return out
        pos += 1
    return out
