"""What a scenario step can do: a registry of actions keyed by the name used in the file.

    [[steps]]
    when = { exit = "MMIO" }
    do = [ { mmio_data = 0x1234 }, { set_events = { ext_dabt_pending = 1 } } ]

Each `ActionSpec` parses its value (checking types and recording addresses for symbol
resolution, so a bad file fails when it is loaded) and applies it to a running scenario.
Other parts of the sandbox add theirs with `register_action` (sandbox/scenario/sdei_steps.py:
SDEI expose, inject, signal, bind slots, and interrupt lines through Vm.raise_interrupt).

An action that the host API refuses (OSError, with KVM's errno) stops the run; the scenario
passes only if it expects that (`expect.host_error`), as QEMU's abort() ended the VM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from ..arch.sysreg import SYSREGS
from ..events import VcpuEvents
from ..kvm import ExitReason
from ..ras.cper import MemoryErrorType, Severity
from ..ras.ghes import MemoryErrorKind
from .fields import Doc, Node, Path, Ref

if TYPE_CHECKING:
    from ..vcpu import Vcpu
    from .runner import ScenarioRun


class ActionFailed(Exception):
    """The scenario asked for something the run's state does not allow (a scenario bug)."""


@dataclass(frozen=True)
class ActionSpec:
    name: str
    summary: str  # one line, shown by `sandbox list --actions` and the README
    parse: Callable[[Doc, Path, Any], Any]
    apply: Callable[["ScenarioRun", "Vcpu", Any], None]


ACTIONS: dict[str, ActionSpec] = {}


def register_action(spec: ActionSpec) -> None:
    if spec.name in ACTIONS:
        raise ValueError(f"action {spec.name!r} is already registered")
    ACTIONS[spec.name] = spec


def _table(doc: Doc, path: Path, value: Any, what: str) -> Node:
    if not isinstance(value, dict):
        raise doc.error(path, f"{what} takes a table")
    return Node(doc, value, path)


# -- set_events ------------------------------------------------------------------------------

_EVENT_FIELDS = ("serror_pending", "serror_has_esr", "ext_dabt_pending", "ext_iabt_pending")


def _parse_set_events(doc: Doc, path: Path, value: Any) -> VcpuEvents:
    n = _table(doc, path, value, "set_events")
    ev = VcpuEvents()
    for name in _EVENT_FIELDS:
        v = n.raw(name, 0)
        if isinstance(v, bool):
            v = int(v)
        if not isinstance(v, int) or not 0 <= v <= 0xFF:
            raise n.error(name, "expected 0/1 (a byte, as in struct kvm_vcpu_events)")
        setattr(ev, name, v)
    ev.serror_esr = n.int("serror_esr", 0, minimum=0)
    ev.ext_abt_esr = n.int("ext_abt_esr", 0, minimum=0)
    n.finish()
    return ev


def _apply_set_events(run: "ScenarioRun", vcpu: "Vcpu", events: VcpuEvents) -> None:
    vcpu.set_events(events)  # (set_events reads its argument and keeps nothing of it)


# -- poison / unpoison --------------------------------------------------------------------------

def _parse_range(doc: Doc, path: Path, value: Any) -> tuple[Ref, int]:
    n = _table(doc, path, value, "poison/unpoison")
    ref = n.address("address")
    size = n.size("size", 0x1000)
    n.finish()
    return ref, size


def _apply_poison(run: "ScenarioRun", vcpu: "Vcpu", args: tuple[Ref, int]) -> None:
    run.vm.poison(run.resolve(args[0]), args[1])


def _apply_unpoison(run: "ScenarioRun", vcpu: "Vcpu", args: tuple[Ref, int]) -> None:
    run.vm.unpoison(run.resolve(args[0]), args[1])


# -- registers and memory -------------------------------------------------------------------------

GP_REGISTERS = {f"x{i}" for i in range(31)} | {"sp", "sp_el0", "sp_el1", "pc", "pstate", "lr", "fp", "nzcv"}


def known_register(name: str) -> bool:
    return name.lower() in GP_REGISTERS or name.upper() in SYSREGS


def _parse_set_registers(doc: Doc, path: Path, value: Any) -> dict[str, Ref]:
    n = _table(doc, path, value, "set_registers")
    out = {}
    for name in n.keys():
        if not known_register(name):
            raise n.error(name, f"unknown register {name!r}")
        out[name] = n.address(name)
    return out


def _apply_set_registers(run: "ScenarioRun", vcpu: "Vcpu", regs: dict[str, Ref]) -> None:
    vcpu.set_regs({name: run.resolve(ref) for name, ref in regs.items()})


_WIDTHS = {"u8": 1, "u16": 2, "u32": 4, "u64": 8}


def parse_memory_value(n: Node) -> tuple[bytes | None, int | None, int]:
    """One of u8/u16/u32/u64 = int, or bytes = "hex": (bytes, value, width)."""
    given = [k for k in (*_WIDTHS, "bytes") if n.has(k)]
    for k in (*_WIDTHS, "bytes"):
        n.raw(k, None)
    if len(given) != 1:
        raise n.error(None, "give exactly one of u8, u16, u32, u64 or bytes")
    key = given[0]
    if key == "bytes":
        text = n.str("bytes")
        try:
            return bytes.fromhex(text.replace(" ", "")), None, 0
        except ValueError:
            raise n.error("bytes", f"{text!r} is not hex") from None
    v = n.int(key, minimum=0)
    if v >> (8 * _WIDTHS[key]):
        raise n.error(key, f"{v:#x} does not fit in {key}")
    return None, v, _WIDTHS[key]


def _parse_write_memory(doc: Doc, path: Path, value: Any) -> tuple[Ref, bytes]:
    n = _table(doc, path, value, "write_memory")
    ref = n.address("address")
    data, v, width = parse_memory_value(n)
    n.finish()
    return ref, data if data is not None else v.to_bytes(width, "little")  # type: ignore[union-attr]


def _apply_write_memory(run: "ScenarioRun", vcpu: "Vcpu", args: tuple[Ref, bytes]) -> None:
    run.vm.write_memory(run.resolve(args[0]), args[1])


# -- MMIO completion --------------------------------------------------------------------------------

def _parse_mmio_data(doc: Doc, path: Path, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value >> 64:
        raise doc.error(path, "mmio_data takes the value the device returns (an integer, up to 64 bits)")
    return value


def _apply_mmio_data(run: "ScenarioRun", vcpu: "Vcpu", value: int) -> None:
    ex = run.last_exit
    if ex is None or ex.reason is not ExitReason.MMIO or ex.mmio is None or ex.mmio.is_write:
        raise ActionFailed("mmio_data needs the last exit to be an MMIO read")
    ex.mmio.data[:8] = value.to_bytes(8, "little")


# -- firmware-first ------------------------------------------------------------------------------------

_KINDS = {"action-required": MemoryErrorKind.ACTION_REQUIRED, "action-optional": MemoryErrorKind.ACTION_OPTIONAL}
_SEVERITIES = {s.name.lower(): s for s in Severity}
_TYPES = {t.name.lower().replace("_", "-"): t for t in MemoryErrorType}


def _parse_record_memory_error(doc: Doc, path: Path, value: Any) -> dict[str, Any]:
    n = _table(doc, path, value, "record_memory_error")
    out = {
        "address": n.address("address", None),  # default: the gpa of the last KVM_EXIT_ARM_SEA
        "kind": _KINDS[n.str("kind", "action-required", choices=_KINDS)],
        "severity": _SEVERITIES[n.str("severity", "recoverable", choices=_SEVERITIES)],
        "error_type": _TYPES[n.str("type", "unknown", choices=_TYPES)],
        "vcpu": n.int("vcpu", None, minimum=0),
        "source": n.int("source", None, minimum=0),
    }
    n.finish()
    return out


def _apply_record_memory_error(run: "ScenarioRun", vcpu: "Vcpu", a: dict[str, Any]) -> None:
    if run.vm.ghes is None:
        raise ActionFailed("record_memory_error needs a [firmware_first] section")
    if a["address"] is None:
        ex = run.last_exit
        if ex is None or ex.arm_sea is None:
            raise ActionFailed("record_memory_error without an address needs the last exit to be ARM_SEA")
        address = ex.arm_sea.gpa
    else:
        address = run.resolve(a["address"])
    target = a["vcpu"]
    if target is None and len(run.vm.vcpus) > 1:
        target = vcpu.index  # several vCPUs: the step's (the one that consumed the error)
    outcome = run.vm.ghes.record_memory_error(address, kind=a["kind"], severity=a["severity"],
                                              error_type=a["error_type"], vcpu=target, source_id=a["source"])
    run.note(f"record_memory_error {address:#x}: {outcome.value}")


# -- machine state -------------------------------------------------------------------------------------

def _parse_flag(doc: Doc, path: Path, value: Any) -> None:
    if value is not True:
        raise doc.error(path, "takes `true`")


def _apply_snapshot_restore(run: "ScenarioRun", vcpu: "Vcpu", _args: None) -> None:
    run.snapshot_restore()


def _parse_run(doc: Doc, path: Path, value: Any) -> int | None:
    n = _table(doc, path, value, "run")
    limit = n.int("max_instructions", None, minimum=0)
    n.finish()
    return limit


def _apply_run(run: "ScenarioRun", vcpu: "Vcpu", limit: int | None) -> None:
    run.run_until_exit(vcpu, limit)


for _spec in (
    ActionSpec("set_events", "KVM_SET_VCPU_EVENTS: pend an SError (with or without ESR), inject an external abort",
               _parse_set_events, _apply_set_events),
    ActionSpec("poison", "mark guest-physical bytes as holding an uncorrectable error", _parse_range, _apply_poison),
    ActionSpec("unpoison", "repair poisoned bytes", _parse_range, _apply_unpoison),
    ActionSpec("set_registers", "write vCPU registers (x0-x30, sp, pc, pstate, system registers)",
               _parse_set_registers, _apply_set_registers),
    ActionSpec("write_memory", "write guest memory (u8/u16/u32/u64 or hex bytes)", _parse_write_memory,
               _apply_write_memory),
    ActionSpec("mmio_data", "the value an MMIO read returns (answers the last KVM_EXIT_MMIO)", _parse_mmio_data,
               _apply_mmio_data),
    ActionSpec("record_memory_error", "firmware-first: write a CPER memory error record and notify (SEA/SError/SDEI)",
               _parse_record_memory_error, _apply_record_memory_error),
    ActionSpec("snapshot_restore", "Vm.snapshot(), then continue in a fresh Vm from Vm.restore()", _parse_flag,
               _apply_snapshot_restore),
    ActionSpec("run", "run the vCPU to its next exit now (recorded in the exit sequence)", _parse_run, _apply_run),
):
    register_action(_spec)
