"""The SDEI invariants, checked on the dispatcher's notifications (sandbox/hyp/sdei_delivery.py):

    sdei-delivery   every instance made pending (KVM_SDEI_CMD_INJECT_EVENT, a signal, a bound
                    interrupt) is dispatched exactly once, discarded by an unregistration (or
                    release, PE reset, lowered interrupt), or still pending at the end; and no
                    event is dispatched while the PE is masked, while it is not enabled, or
                    into a handler it may not preempt (a normal event: any; a critical one:
                    a critical) (DEN0054C dispatch conditions, reference/sdei.md 3.1)
    sdei-context    when a handler completes with COMPLETE, the interrupted context is back:
                    x0-x30, SP, PC and PSTATE as they were at dispatch (minus what `[fuzz]
                    may_change` lists); with COMPLETE_AND_RESUME x0-x30 and SP (PC and
                    PSTATE are then the client's resume address and the exception entry)

COMPLETE restores x0-x17, PC and PSTATE only (reference/sdei.md 3.3): x18-x30 and the SP are
what the handler leaves, so a handler that uses one of them without saving it breaks the
interrupted code. The context at dispatch is read from the vCPU itself, not from the
dispatcher's saved copy; x0-x17 after COMPLETE are what the dispatcher restores.

Both are registered invariants (factories of `Checker`): the fast path forks them with the
checker, and a snapshot restore (a new Vm) starts their bookkeeping again from its state.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from unicorn import arm64_const as A

from ..hyp.sdei_events import SHARED
from ..hyp.sdei_state import EventState
from ..observe import Event
from .invariants import _CONTEXT_NAMES, _X_IDS, InvariantSpec, RunEnd, Violation, context_of, register_invariant

if TYPE_CHECKING:
    from .invariants import Checker

DELIVERY, CONTEXT = "sdei-delivery", "sdei-context"
_LIVE = tuple(_X_IDS + [A.UC_ARM64_REG_SP])  # x0-x30 and the SP of the mode the vCPU is in


@dataclass(frozen=True)
class _Frame:
    event: int
    critical: bool
    regs: tuple[int, ...]  # x0-x30, SP of the interrupted context, read at dispatch
    pc: int
    pstate: int


def _sdei(checker: "Checker") -> Any:
    assert checker.vm is not None
    return checker.vm.hypervisor.sdei


class SdeiContext:
    """sdei-context: the interrupted context at dispatch against the one COMPLETE leaves."""

    WATCHES = frozenset({"sdei_dispatch", "sdei_complete"})

    def __init__(self, checker: "Checker", frames: dict[int, list[_Frame]] | None = None):
        self.checker = checker
        self.frames: dict[int, list[_Frame]] = frames if frames is not None else {}

    def fork(self, checker: "Checker") -> "SdeiContext":
        return SdeiContext(checker, {k: list(v) for k, v in self.frames.items() if v} if self.frames else {})

    def attach(self, vm: Any) -> None:
        self.frames = {}  # a restored machine: its running handlers were dispatched elsewhere

    def on_event(self, event: Event) -> None:
        if event.kind == "sdei_dispatch":
            assert self.checker.vm is not None
            vcpu = self.checker.vm.vcpus[event.vcpu]
            d = event.data
            # Still in the interrupted context: the dispatcher writes the handler's after this.
            frame = _Frame(d["event"], bool(d.get("critical")), vcpu.uc.reg_read_batch(_LIVE), vcpu.reg("pc"),
                           vcpu.pstate())
            if (frame.pc, frame.pstate) != (d["interrupted_pc"], d["interrupted_pstate"]):
                self.checker.flag(CONTEXT, f"SDEI event {d['event']:#x} dispatched from PC {frame.pc:#x} PSTATE "
                                           f"{frame.pstate:#x}, but the dispatcher saved PC {d['interrupted_pc']:#x} "
                                           f"PSTATE {d['interrupted_pstate']:#x}", frame.pc)
            self.frames.setdefault(event.vcpu, []).append(frame)
        elif event.kind == "sdei_complete":
            self._on_complete(event)

    def _on_complete(self, event: Event) -> None:
        frames = self.frames.get(event.vcpu)
        if not frames:
            return  # dispatched before this checker watched (a restored machine)
        frame = frames.pop()
        d = event.data
        assert self.checker.vm is not None
        vcpu = self.checker.vm.vcpus[event.vcpu]
        who = f"SDEI handler of event {frame.event:#x} (interrupted {frame.pc:#x})"
        if d["event"] != frame.event:
            self.checker.flag(CONTEXT, f"{who}: COMPLETE ends event {d['event']:#x}, not the one running", vcpu.reg("pc"))
            return
        # Now: x0-x17 as COMPLETE restores them, x18-x30 and the SP as the handler leaves them
        # (read at EL1h: the SP of an interrupted EL0t/EL1t context is SP_EL0 here).
        handler = context_of(vcpu, frame.pstate)
        now = tuple(d["regs"]) + tuple(handler[len(d["regs"]):])
        may = self.checker.config.may_change
        changed = [(n, i) for i, n in enumerate(_CONTEXT_NAMES) if n not in may and now[i] != frame.regs[i]]
        if d["how"] == "complete":
            for name, was, got in (("pc", frame.pc, d["interrupted_pc"]), ("pstate", frame.pstate,
                                                                           d["interrupted_pstate"])):
                if was != got:
                    self.checker.flag(CONTEXT, f"{who} completes to {name} {got:#x}, was {was:#x}", vcpu.reg("pc"))
        if changed:
            diffs = ", ".join(f"{n} {frame.regs[i]:#x}->{now[i]:#x}" for n, i in changed)
            self.checker.flag(CONTEXT, f"{who} completes with registers changed: {diffs}", vcpu.reg("pc"))

    def finish(self, end: RunEnd) -> list[Violation]:
        return []


class SdeiDelivery:
    """sdei-delivery: instances in and out, and the conditions of each dispatch. Cheap to
    fork and to finish while no SDEI event happened (the fast path does both every run)."""

    WATCHES = frozenset({"sdei_pend", "sdei_drop", "sdei_dispatch", "sdei_complete"})

    def __init__(self, checker: "Checker", counts: dict[int, list[int]] | None = None,
                 running: dict[int, list[bool]] | None = None):
        self.checker = checker
        self.counts = counts if counts is not None else {}  # event -> [made pending - discarded, dispatched]
        self.running = running if running is not None else {}  # vCPU -> criticality of its running handlers

    def fork(self, checker: "Checker") -> "SdeiDelivery":
        if not (self.counts or self.running):
            return SdeiDelivery(checker, {}, {})
        return SdeiDelivery(checker, {k: list(c) for k, c in self.counts.items()},
                            {k: list(v) for k, v in self.running.items() if v})

    def _count(self, num: int) -> list[int]:
        c = self.counts.get(num)
        if c is None:
            c = self.counts[num] = [0, 0]
        return c

    def attach(self, vm: Any) -> None:
        sdei = vm.hypervisor.sdei
        self.counts = {}
        for (num, _where), n in sdei.table.pending.items():
            self._count(num)[0] += n
        self.running = {i: [d.critical for d in pe.stack] for i, pe in enumerate(sdei.pes) if pe.stack}

    def on_event(self, event: Event) -> None:
        kind = event.kind
        if kind == "sdei_pend" or kind == "sdei_drop":
            self._count(event.data["event"])[0] += event.data["change"]
        elif kind == "sdei_dispatch":
            self._on_dispatch(event)
        elif kind == "sdei_complete":
            stack = self.running.get(event.vcpu)
            if stack:
                stack.pop()

    def _on_dispatch(self, event: Event) -> None:
        d = event.data
        num, critical, pc = d["event"], bool(d.get("critical")), d["interrupted_pc"]
        c = self._count(num)
        c[1] += 1
        what = f"SDEI event {num:#x} dispatched at {pc:#x}"
        if c[1] > c[0]:
            self.checker.flag(DELIVERY, f"{what}: {c[1]} dispatches of {c[0]} instances made pending "
                                        "(an instance delivered twice)", pc)
        sdei = _sdei(self.checker)
        if sdei.pes[event.vcpu].masked:
            self.checker.flag(DELIVERY, f"{what} while the PE is masked", pc)
        ev = sdei.table.events.get(num)
        h = None if ev is None else sdei.table.handlers.get((num, SHARED if ev.shared else event.vcpu))
        if h is None or h.state is not EventState.RUNNING_ENABLED:  # DISPATCH moves ENABLED to 7 only
            state = "unregistered" if h is None else h.state.name
            self.checker.flag(DELIVERY, f"{what}, which was not registered and enabled (now {state})", pc)
        stack = self.running.setdefault(event.vcpu, [])
        if stack and (not critical or any(stack)):
            self.checker.flag(DELIVERY, f"{what} preempts a running {'critical' if any(stack) else 'normal'} "
                                        f"handler, which a {'critical' if critical else 'normal'} event may not", pc)
        stack.append(critical)

    def finish(self, end: RunEnd) -> list[Violation]:
        if not self.counts:
            return []  # nothing made pending since the checker watched: nothing can be lost
        pending: dict[int, int] = defaultdict(int)
        for (num, _where), n in _sdei(self.checker).table.pending.items():
            pending[num] += n
        out = []
        for num, (made, dispatched) in sorted(self.counts.items()):
            left = made - dispatched
            if left > pending[num]:
                out.append(Violation(DELIVERY, f"SDEI event {num:#x}: {made} instances made pending, {dispatched} "
                                               f"dispatched, {pending[num]} still pending: {left - pending[num]} lost"))
            elif left >= 0 and left < pending[num]:
                out.append(Violation(DELIVERY, f"SDEI event {num:#x}: {pending[num]} instances pending, only "
                                               f"{left} made pending and not dispatched"))
        return out


register_invariant(InvariantSpec(
    DELIVERY, "every SDEI instance made pending is dispatched once, discarded or still pending; never while "
              "masked, disabled, or into a handler it may not preempt", SdeiDelivery, SdeiDelivery.WATCHES))
register_invariant(InvariantSpec(
    CONTEXT, "SDEI COMPLETE restores the interrupted context (x0-x30, SP, PC, PSTATE)",
    SdeiContext, SdeiContext.WATCHES))
