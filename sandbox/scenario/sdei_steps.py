"""SDEI in scenario steps: the VMM's SDEI commands and interrupt lines as actions, and
triggers on the dispatcher's handler entries and completions.

    [[steps]]
    do = [ { sdei_expose = { event = 0x400010 } } ]          # KVM_SDEI_CMD_SET_EXPOSED_EVENT
    [[steps]]
    when = { pc = "spin" }
    do = [ { sdei_inject = { event = 0x400010 } } ]          # KVM_SDEI_CMD_INJECT_EVENT
    [[steps]]
    when = { instructions = 500 }
    do = [ { sdei_set_masked = { masked = true } },         # KVM_SDEI_CMD_SET_VCPU_STATE: the PE mask
           { sdei_inject = { event = 0x400010, count = 2, if_enabled = true } } ]
    [[steps]]
    when = { sdei_dispatch = { event = 0x400010 } }          # about to run the handler's first instruction
    do = [ { set_registers = { x5 = 1 } } ]
    [[steps]]
    when = { sdei_complete = 0x400010 }                      # about to run where COMPLETE resumed
    do = [ { raise_interrupt = { intid = 20 } } ]            # Vm.raise_interrupt (a bound PPI of the step's vCPU)

Actions act on the step's vCPU (`vcpu = N`). `sdei_inject` with `if_enabled` injects nothing
when the event is not registered and enabled on the vCPU (KVM answers EPERM, which otherwise
stops the run): what a VMM that tries and carries on does, and how the fuzzer injects
(sandbox/fuzz/sdei_kind.py). A trigger stops the vCPU like a breakpoint
(KVM_EXIT_DEBUG, not part of the exit sequence) right after the dispatcher changed its
context: `sdei_dispatch` at the handler's entry point with x0-x3 set, `sdei_complete` at the
instruction the restored (or resumed) context executes next. `event` may be omitted (any
event); `count` picks the n-th.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..breakpoint import Breakpoint
from ..exits import Exit
from ..hyp.sdei_platform import signal_event
from ..kvm import ExitReason
from ..observe import Event
from .actions import ActionSpec, register_action
from .fields import Doc, Node, Path
from .triggers import Armed, TriggerSpec, Verdict, register_trigger

if TYPE_CHECKING:
    from ..vcpu import Vcpu
    from .runner import ScenarioRun

EVENT_MAX = 0xFFFFFFFF


def _table(doc: Doc, path: Path, value: Any, what: str) -> Node:
    if not isinstance(value, dict):
        raise doc.error(path, f"{what} takes a table")
    return Node(doc, value, path)


def _event(n: Node, key: str = "event") -> int:
    return n.int(key, minimum=0, maximum=EVENT_MAX)


# -- actions ------------------------------------------------------------------------------

def _parse_expose(doc: Doc, path: Path, value: Any) -> dict[str, Any]:
    n = _table(doc, path, value, "sdei_expose")
    out = {"num": _event(n), "shared": n.bool("shared", False), "critical": n.bool("critical", False),
           "signaled": n.bool("signaled", False)}
    n.finish()
    return out


def _apply_expose(run: "ScenarioRun", vcpu: "Vcpu", a: dict[str, Any]) -> None:
    run.vm.sdei.expose(a["num"], shared=a["shared"], critical=a["critical"], signaled=a["signaled"])


def _parse_inject(doc: Doc, path: Path, value: Any) -> tuple[int, int, bool]:
    n = _table(doc, path, value, "sdei_inject")
    out = (_event(n), n.int("count", 1, minimum=1, maximum=128), n.bool("if_enabled", False))
    n.finish()
    return out


def _apply_inject(run: "ScenarioRun", vcpu: "Vcpu", a: tuple[int, int, bool]) -> None:
    num, count, if_enabled = a
    if if_enabled:
        # What inject_event would refuse with EPERM: not registered and enabled here.
        table = run.vm.hypervisor.sdei.table
        ev = table.get(num)
        if ev is None or not table.enabled_on(ev, vcpu.index):
            return
    for _ in range(count):
        run.vm.sdei.inject_event(vcpu, num)


def _parse_set_masked(doc: Doc, path: Path, value: Any) -> bool:
    n = _table(doc, path, value, "sdei_set_masked")
    masked = n.bool("masked")
    n.finish()
    return masked


def _apply_set_masked(run: "ScenarioRun", vcpu: "Vcpu", masked: bool) -> None:
    # KVM_SDEI_CMD_GET_VCPU_STATE, then SET_VCPU_STATE with only `masked` changed.
    state = run.vm.sdei.get_vcpu_state(vcpu)
    state.masked = int(masked)
    run.vm.sdei.set_vcpu_state(vcpu, state)


def _parse_signal(doc: Doc, path: Path, value: Any) -> int:
    n = _table(doc, path, value, "sdei_signal")
    num = _event(n)
    n.finish()
    return num


def _apply_signal(run: "ScenarioRun", vcpu: "Vcpu", num: int) -> None:
    signal_event(run.vm, vcpu, num)


def _parse_bind_slots(doc: Doc, path: Path, value: Any) -> tuple[int, int]:
    n = _table(doc, path, value, "sdei_bind_slots")
    out = (n.int("private", minimum=0, maximum=0xFFFF), n.int("shared", minimum=0, maximum=0xFFFF))
    n.finish()
    return out


def _apply_bind_slots(run: "ScenarioRun", vcpu: "Vcpu", a: tuple[int, int]) -> None:
    run.vm.sdei.set_bind_slots(*a)


def _parse_intid(doc: Doc, path: Path, value: Any) -> int:
    n = _table(doc, path, value, "raise_interrupt/lower_interrupt")
    intid = n.int("intid", minimum=0, maximum=1019)
    n.finish()
    return intid


def _line(run: "ScenarioRun", vcpu: "Vcpu", intid: int, asserted: bool) -> None:
    mpidr = vcpu.mpidr if intid < 32 else None  # SGI/PPI: the step's vCPU's own
    (run.vm.raise_interrupt if asserted else run.vm.lower_interrupt)(intid, mpidr)


for _spec in (
    ActionSpec("sdei_expose", "KVM_SDEI_CMD_SET_EXPOSED_EVENT: expose an event (shared/critical/signaled)",
               _parse_expose, _apply_expose),
    ActionSpec("sdei_inject", "KVM_SDEI_CMD_INJECT_EVENT: one (or `count`) more pending instance for the vCPU "
                              "(`if_enabled`: none when the vCPU has not enabled the event)",
               _parse_inject, _apply_inject),
    ActionSpec("sdei_set_masked", "KVM_SDEI_CMD_GET/SET_VCPU_STATE: mask or unmask the vCPU's PE (as PE_MASK/PE_UNMASK)",
               _parse_set_masked, _apply_set_masked),
    ActionSpec("sdei_signal", "the platform signals an event to the vCPU, edge-triggered (TF-A sdei_dispatch_event)",
               _parse_signal, _apply_signal),
    ActionSpec("sdei_bind_slots", "how many PPI (private) and SPI (shared) events INTERRUPT_BIND offers",
               _parse_bind_slots, _apply_bind_slots),
    ActionSpec("raise_interrupt", "Vm.raise_interrupt: assert an INTID (PPI/SGI of the step's vCPU); SDEI claims a bound one",
               _parse_intid, lambda run, vcpu, intid: _line(run, vcpu, intid, True)),
    ActionSpec("lower_interrupt", "Vm.lower_interrupt: deassert an INTID (withdraws an SDEI instance not yet taken)",
               _parse_intid, lambda run, vcpu, intid: _line(run, vcpu, intid, False)),
):
    register_action(_spec)


# -- triggers -------------------------------------------------------------------------------

class _SdeiArmed(Armed):
    """Waits for the dispatcher's n-th "sdei_dispatch"/"sdei_complete" on one vCPU, then stops
    that vCPU at the instruction its new context runs first (a breakpoint armed there)."""

    def __init__(self, run: "ScenarioRun", vcpu: "Vcpu", kind: str, event: int | None, count: int):
        self.vm, self.vcpu, self.kind, self.event, self.count = run.vm, vcpu, kind, event, count
        self.seen = 0
        self.bp: Breakpoint | None = None
        self.vm.observers.append(self._on_event)

    def _on_event(self, e: Event) -> None:
        if e.kind != self.kind or e.vcpu != self.vcpu.index or self.bp is not None:
            return
        if self.event is not None and e.data.get("event") != self.event:
            return
        self.seen += 1
        if self.seen < self.count:
            return
        v = self.vcpu
        if not v._in_emulation:
            # Dispatched by the run loop before it resumes the guest: stop at the entry point.
            self._arm(int(e.data["handler"]))
        elif v._stop is None or (v._stop.exit is None and v._stop.trap is None):
            # Inside the hypercall: the new context is written after this notification; arm
            # where it puts the PC, from the run loop (hooks cannot be added mid-emulation).
            v.pause_then(lambda: self._arm(v.reg("pc")))

    def _arm(self, address: int) -> None:
        self.bp = Breakpoint(self.vcpu, address, include_current=True)
        self.bp.arm()

    def check(self, exit_: Exit) -> Verdict:
        bp = self.bp
        if bp is not None and bp.fired and exit_.reason is ExitReason.DEBUG and exit_.pc == bp.address \
                and exit_.vcpu in (None, self.vcpu.index):
            return Verdict.STOP
        return Verdict.NONE

    def disarm(self) -> None:
        if self._on_event in self.vm.observers:
            self.vm.observers.remove(self._on_event)
        if self.bp is not None:
            self.bp.disarm()


def _parse_sdei_trigger(doc: Doc, path: Path, value: Any) -> int | None:
    """`true` (any event), an event number, or { event = N }."""
    if value is True:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= EVENT_MAX:
        return value
    if isinstance(value, dict):
        n = Node(doc, value, path)
        num = n.int("event", None, minimum=0, maximum=EVENT_MAX)
        n.finish()
        return num
    raise doc.error(path, "takes true (any event), an event number, or { event = N }")


for _kind, _summary in (("sdei_dispatch", "the vCPU is entering the handler of this SDEI event (count: the n-th)"),
                        ("sdei_complete", "the vCPU's handler of this SDEI event completed (count: the n-th)")):
    register_trigger(TriggerSpec(_kind, _summary, _parse_sdei_trigger,
                                 lambda run, vcpu, event, count, kind=_kind: _SdeiArmed(run, vcpu, kind, event, count),
                                 counts=True))
