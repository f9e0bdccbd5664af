"""When a scenario step acts: a registry of triggers keyed by the name used in `when`.

    when = { pc = "el0_task" }                 the vCPU is about to execute that address
    when = { pc = "loop", count = 3 }          ... for the third time
    when = { instructions = 1000 }             after 1000 retired instructions (from the start)
    when = { exit = "MMIO" }                   the next exit has that reason (KVM_EXIT_* name)
    when = { record = { vector = 0x380 } }     the guest's vector table has written a record
                                               matching these fields (firmware/vectors.S)
    when = { sdei_dispatch = 0x400010 }        the vCPU is entering that SDEI event's handler
    when = { sdei_complete = true }            ... or resumes after a handler completed
                                               (sandbox/scenario/sdei_steps.py)
    (no `when`)                                right away, when the previous step is done

A step's `vcpu = N` names the vCPU a trigger watches (with several vCPUs the run is Vm.run's,
and an exit trigger only takes an exit of that vCPU).

An armed trigger adds at most one hook (a breakpoint) or an instruction budget, and only
until it fires. `check(exit)` says whether an exit was the trigger's own stop (not a guest
exit: not part of the exit sequence), the guest exit it waited for, or neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable

from ..breakpoint import Breakpoint
from ..exits import Exit
from ..firmware import exception_records
from ..kvm import ExitReason
from .fields import Doc, Node, Path, Ref

if TYPE_CHECKING:
    from ..vcpu import Vcpu
    from .runner import ScenarioRun


class Verdict(Enum):
    NONE = "none"  # not this trigger's event
    STOP = "stop"  # the trigger's own stop (breakpoint, instruction budget)
    EXIT = "exit"  # the guest exit the trigger waited for


class Armed:
    """A trigger waiting on one vCPU."""

    target_instructions: int | None = None  # absolute instruction count to stop at

    def check(self, exit_: Exit) -> Verdict:
        return Verdict.NONE

    def disarm(self) -> None:
        pass


@dataclass(frozen=True)
class TriggerSpec:
    name: str
    summary: str
    parse: Callable[[Doc, Path, Any], Any]
    arm: Callable[["ScenarioRun", "Vcpu", Any, int], Armed]  # (run, vcpu, args, count)
    counts: bool = False  # whether `count` applies
    needs_instruction_count: bool = False


TRIGGERS: dict[str, TriggerSpec] = {}


def register_trigger(spec: TriggerSpec) -> None:
    if spec.name in TRIGGERS:
        raise ValueError(f"trigger {spec.name!r} is already registered")
    TRIGGERS[spec.name] = spec


# -- pc --------------------------------------------------------------------------------------------

class _BreakpointArmed(Armed):
    def __init__(self, bp: Breakpoint):
        self.bp = bp
        bp.arm()

    def check(self, exit_: Exit) -> Verdict:
        if self.bp.fired and exit_.reason is ExitReason.DEBUG and exit_.pc == self.bp.address:
            return Verdict.STOP
        return Verdict.NONE

    def disarm(self) -> None:
        self.bp.disarm()


def _parse_pc(doc: Doc, path: Path, value: Any) -> Ref:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise doc.error(path, "pc takes an address (an integer, a symbol or \"symbol+offset\")")
    ref = Ref(value, path)
    doc.refs.append(ref)
    return ref


def _arm_pc(run: "ScenarioRun", vcpu: "Vcpu", ref: Ref, count: int) -> Armed:
    return _BreakpointArmed(Breakpoint(vcpu, run.resolve(ref), hits=count))


# -- instructions -------------------------------------------------------------------------------------

class _BudgetArmed(Armed):
    def __init__(self, run: "ScenarioRun", target: int):
        self.run = run
        self.target_instructions = target

    def check(self, exit_: Exit) -> Verdict:
        if exit_.reason is ExitReason.INSTRUCTION_BUDGET and self.run.instruction_count() >= self.target_instructions:
            return Verdict.STOP
        return Verdict.NONE


def _parse_instructions(doc: Doc, path: Path, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise doc.error(path, "instructions takes a count of retired instructions (an integer >= 0)")
    return value


def _arm_instructions(run: "ScenarioRun", vcpu: "Vcpu", target: int, count: int) -> Armed:
    return _BudgetArmed(run, target)


# -- exit -----------------------------------------------------------------------------------------------

class _ExitArmed(Armed):
    def __init__(self, reason: ExitReason, vcpu: int):
        self.reason, self.vcpu = reason, vcpu

    def check(self, exit_: Exit) -> Verdict:
        mine = exit_.vcpu is None or exit_.vcpu == self.vcpu  # the step's vCPU (Vm.run: Exit.vcpu)
        return Verdict.EXIT if exit_.reason is self.reason and mine else Verdict.NONE


EXIT_NAMES = {r.name: r for r in ExitReason}


def _parse_exit(doc: Doc, path: Path, value: Any) -> ExitReason:
    if not isinstance(value, str) or value.upper() not in EXIT_NAMES:
        raise doc.error(path, f"exit takes an exit reason: one of {', '.join(EXIT_NAMES)}")
    return EXIT_NAMES[value.upper()]


def _arm_exit(run: "ScenarioRun", vcpu: "Vcpu", reason: ExitReason, count: int) -> Armed:
    return _ExitArmed(reason, vcpu.index)


# -- record -------------------------------------------------------------------------------------------------

RECORD_FIELDS = ("vector", "ec", "esr", "far", "elr", "spsr", "isr", "disr")


def _parse_record(doc: Doc, path: Path, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise doc.error(path, "record takes a table of record fields to match (e.g. { vector = 0x380 })")
    n = Node(doc, value, path)
    out = {}
    for name in RECORD_FIELDS:
        if n.has(name):
            out[name] = n.address(name) if name in ("far", "elr") else n.int(name, minimum=0)
        else:
            n.raw(name, None)
    n.finish()
    return out


def record_matches(rec: Any, want: dict[str, int]) -> bool:
    return all(getattr(rec, k) == v for k, v in want.items())


def _arm_record(run: "ScenarioRun", vcpu: "Vcpu", fields: dict[str, Any], count: int) -> Armed:
    ring = run.program.symbols["exc_ring"]
    want = {k: run.resolve(v) if isinstance(v, Ref) else v for k, v in fields.items()}
    cpu = vcpu.mpidr & 0xFF

    def newest_matches() -> bool:
        records = exception_records(run.vm, ring, cpu)
        return bool(records) and record_matches(records[-1], want)

    return _BreakpointArmed(Breakpoint(vcpu, run.program.symbols["exc_recorded"], hits=count,
                                       condition=newest_matches))


for _spec in (
    TriggerSpec("pc", "the vCPU is about to execute this address (count: the n-th time)", _parse_pc, _arm_pc,
                counts=True),
    TriggerSpec("instructions", "after this many retired instructions, counted from the start", _parse_instructions,
                _arm_instructions, needs_instruction_count=True),
    TriggerSpec("exit", "the next exit has this reason (KVM_EXIT_* name)", _parse_exit, _arm_exit),
    TriggerSpec("record", "the guest's vector table wrote a record with these fields (count: the n-th)",
                _parse_record, _arm_record, counts=True),
):
    register_trigger(_spec)
