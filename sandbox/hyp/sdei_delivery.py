"""SDEI delivery: which pending event a PE takes, entering its handler, and completing it.

Dispatch conditions (TF-A sdei_intr_handler; reference/sdei.md 3.1): the event is pending
and enabled, this PE is its target, the PE is unmasked, and for a normal event nothing runs
on the PE, for a critical event no critical runs: a critical event preempts a running
normal handler, nothing else preempts. Among several deliverable events a critical one goes
first, then the lowest event number. Shared events go to the PE their routing names: RM_PE
to the affinity, RM_ANY to the next PE in index order after the one that took it last that
can take it now (deterministic 1-of-N; a masked or busy PE is skipped, and with none able
the event stays pending), so no instance is ever delivered twice.

Handler entry (3.2): x0 = event, x1 = the REGISTER argument, x2 = interrupted PC, x3 =
interrupted PSTATE; x4-x17 keep the interrupted values (TF-A); PC = the entry point;
PSTATE = AArch64.TakeException to EL1h (arch.exception.entry_pstate: D/A/I/F set, PAN per
SCTLR_EL1.SPAN, DIT and NZCV kept). ELR_EL1/SPSR_EL1 are untouched. COMPLETE (3.3) restores
x0-x17, PC and PSTATE bit for bit; COMPLETE_AND_RESUME (3.4) restores x0-x17 and enters the
given absolute address like a synchronous exception (ELR_EL1 = interrupted PC, SPSR_EL1 =
interrupted PSTATE) through Vcpu.take_exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..arch import pstate as ps
from ..arch.exception import ExceptionKind, entry_pstate
from .result import CallResult, GuestContext, ResumeEntry
from .power import PowerState, vcpu_by_mpidr
from .sdei_abi import DENIED, RM_PE, SAVED_GPREGS
from .sdei_events import (NOTIFY_COMPLETED, NOTIFY_DELIVERED, SHARED, Dispatch, EventTable, Handler, PeState,
                          SavedContext, SdeiEvent)
from .sdei_state import Call, EventState, transition

if TYPE_CHECKING:
    from ..vcpu import Vcpu
    from ..vm import Vm

QUIRK_PSTATE = "sdei-entry-pstate-daif-only"
QUIRK_RESUME = "sdei-resume-injects-irq"


@dataclass(frozen=True)
class Choice:
    """The event a PE takes next: the event, its handler record and where it was pending."""

    event: SdeiEvent
    handler: Handler
    where: int  # PE index, or SHARED


def handler_pstate(from_pstate: int, sctlr_el1: int, vcpu: "Vcpu", daif_only: bool) -> int:
    """PSTATE of an SDEI handler at EL1h. Normally AArch64.TakeException (TF-A 37596fcb4,
    create_spsr); with the quirk the interrupted PSTATE with D/A/I/F set and mode EL1h, as
    before that fix (KVM/QEMU-RFC: nRW and M cleared)."""
    if daif_only:
        return (from_pstate & ~(ps.NRW | ps.M_MASK)) | ps.DAIF | ps.EL1H
    return entry_pstate(from_pstate, sctlr_el1, vcpu.features)


class SdeiDelivery:
    def __init__(self, vm: "Vm", table: EventTable):
        self.vm = vm
        self.table = table
        self.pes: list[PeState] = []
        self.rm_any_last: dict[int, int] = {}  # shared event -> PE index that took it last
        self.calling: "Vcpu | None" = None  # the vCPU inside an SDEI call (checks after the call)

    # -- waking PEs ------------------------------------------------------------------------

    def kick(self, index: int) -> None:
        """Something may be deliverable on PE `index`: its run loop (or the end of the call
        it is making) looks. A vCPU stopped inside another hook is paused so that it looks
        before its next instruction."""
        vcpu = self.vm.vcpus[index]
        vcpu.sdei_check = True
        if vcpu._in_emulation and vcpu is not self.calling:
            vcpu._request_pause()

    def kick_all(self) -> None:
        for i in range(len(self.pes)):
            self.kick(i)

    def kick_for(self, where: int) -> None:
        if where == SHARED:
            self.kick_all()
        else:
            self.kick(where)

    # -- pending instances ----------------------------------------------------------------

    def pend(self, ev: SdeiEvent, where: int, count: int | None = None) -> None:
        """Make `ev` pending on PE `where` (SHARED: routed at dispatch). With `count` None the
        instance is an edge: one pending instance however often it fires (DEN0054C 5.1.16.1);
        a count adds that many (KVM_SDEI_CMD_INJECT_EVENT, v5 event_count)."""
        key = (ev.num, SHARED if ev.shared else where)
        before = self.table.pending.get(key, 0)
        # An edge adds an instance only where none is pending: it never takes away instances
        # injected with a count.
        self.set_pending(key, max(before, 1) if count is None else before + count, at=where)

    def set_pending(self, key: tuple[int, int], count: int, *, at: int) -> None:
        """`count` instances of event key[0] pending on PE key[1] (SHARED: routed at
        dispatch), as `pend` and KVM_SDEI_CMD_SET_VCPU_EVENT make them; observers hear
        "sdei_pend" with the change, told on vCPU `at`; the PE is looked at for dispatch."""
        before = self.table.pending.get(key, 0)
        self.table.pending[key] = count
        if self.vm.observers and count != before:
            self._notify_pending("sdei_pend", at, key[0], key[1], count - before)
        self.kick_for(key[1])

    def withdraw(self, ev: SdeiEvent, where: int) -> None:
        """The interrupt of a bound event was lowered before its handler ran: the pending
        instance goes away (a level-sensitive source no longer asserted)."""
        self.drop(ev.num, SHARED if ev.shared else where, at=where)

    def drop(self, num: int, where: int | None = None, *, at: int = 0) -> None:
        """Discard the pending instances of event `num` (on PE `where`; None: everywhere),
        as unregistration, release, a PE reset and a lowered interrupt do. Observers hear
        "sdei_drop" with how many went, so that a lost instance can be told from a
        discarded one (sandbox.fuzz.sdei_invariants)."""
        keys = [k for k in self.table.pending if k[0] == num and (where is None or k[1] == where)]
        dropped = sum(self.table.pending.pop(k) for k in keys)
        if dropped and self.vm.observers:
            self._notify_pending("sdei_drop", at, num, SHARED if where is None else where, -dropped)

    def _notify_pending(self, kind: str, at: int, num: int, where: int, change: int) -> None:
        """"sdei_pend"/"sdei_drop": `change` instances more (fewer) of `num` pending on PE
        `where` (SHARED: routed at dispatch), told on vCPU `at`."""
        vcpu = self.vm.vcpus[at if 0 <= at < len(self.vm.vcpus) else 0]
        self.vm.notify(kind, vcpu, vcpu.reg("pc"), event=num, where=where, change=change,
                       pending=sum(c for (n, _w), c in self.table.pending.items() if n == num))

    # -- routing and eligibility ------------------------------------------------------------

    def can_take(self, index: int, critical: bool) -> bool:
        pe = self.pes[index]
        if pe.masked:
            return False
        return not pe.running(True) if critical else not pe.stack

    def shared_target(self, ev: SdeiEvent, h: Handler) -> int | None:
        """The PE a shared event goes to now (None: no PE can take it yet)."""
        vcpus = self.vm.vcpus
        if h.route_mode == RM_PE:
            target = vcpu_by_mpidr(vcpus, h.affinity)
            return None if target is None else target.index
        n = len(vcpus)
        start = self.rm_any_last.get(ev.num, -1) + 1
        power = self.vm.hypervisor.power
        for k in range(n):
            i = (start + k) % n
            if power.states[i] is not PowerState.OFF and self.can_take(i, ev.critical):
                return i
        return None

    def next_dispatch(self, vcpu: "Vcpu") -> Choice | None:
        """The event PE `vcpu` takes now, or None (and the vCPU stops looking until kicked)."""
        i = vcpu.index
        pe = self.pes[i]
        best: Choice | None = None
        if not pe.masked and not pe.running(True):
            normal_ok = not pe.stack
            for (num, where), _count in self.table.pending.items():
                ev = self.table.events.get(num)
                if ev is None or (not ev.critical and not normal_ok) or (where != SHARED and where != i):
                    continue
                h = self.table.handler(ev, i)
                if h.state is not EventState.ENABLED:
                    continue
                if where == SHARED and self.shared_target(ev, h) != i:
                    continue
                if best is None or (not ev.critical, num) < (not best.event.critical, best.event.num):
                    best = Choice(ev, h, where)
        if best is None:
            vcpu.sdei_check = False
        return best

    # -- entering and leaving handlers --------------------------------------------------------

    def dispatch(self, vcpu: "Vcpu", choice: Choice, regs: tuple[int, ...], pc: int, pstate: int,
                 sctlr_el1: int) -> CallResult:
        """Enter the handler of `choice` on `vcpu`, interrupting the context (regs, pc, pstate)."""
        ev, h, where = choice.event, choice.handler, choice.where
        key = (ev.num, where)
        left = self.table.pending.get(key, 0) - 1
        if left > 0:
            self.table.pending[key] = left
        else:
            self.table.pending.pop(key, None)
            if not self.table.pending:
                vcpu.sdei_check = False  # nothing else could be due anywhere
        h.state = transition(h.state, Call.DISPATCH).next
        saved = SavedContext(tuple(regs), pc, pstate)
        self.pes[vcpu.index].stack.append(Dispatch(ev.num, ev.critical, saved))
        if where == SHARED:
            self.rm_any_last[ev.num] = vcpu.index
        new_pstate = handler_pstate(pstate, sctlr_el1, vcpu, self.vm.has_quirk(QUIRK_PSTATE))
        context = GuestContext((ev.num, h.arg, pc, pstate) + tuple(regs[4:SAVED_GPREGS]), h.ep, new_pstate)
        if self.vm.observers:
            self.vm.notify("sdei_dispatch", vcpu, pc, event=ev.num, interrupted_pc=pc, interrupted_pstate=pstate,
                           handler=h.ep, arg=h.arg, critical=ev.critical)
        if ev.notifier is not None:
            ev.notifier(vcpu, ev.num, NOTIFY_DELIVERED)
        return CallResult(context=context)

    def complete(self, vcpu: "Vcpu", resume_at: int | None, status: int | None) -> int | CallResult:
        """EVENT_COMPLETE (resume_at None, `status` its x1, reported but ignored as TF-A does)
        or EVENT_COMPLETE_AND_RESUME of the PE's outstanding dispatch; DENIED when there is
        none (TF-A sdei_event_complete)."""
        pe = self.pes[vcpu.index]
        if not pe.stack:
            return DENIED
        top = pe.stack[-1]
        ev = self.table.events[top.num]
        h = self.table.handler(ev, vcpu.index)
        t = transition(h.state, Call.COMPLETE if resume_at is None else Call.COMPLETE_AND_RESUME)
        if not t.allowed:
            return DENIED
        pe.stack.pop()
        h.state = t.next
        if h.state is EventState.UNREGISTERED:  # the unregistration pending since UNREGISTER completes
            h.clear()
            self.drop(ev.num, SHARED if ev.shared else vcpu.index, at=vcpu.index)
        s = top.saved
        if resume_at is None:
            result = CallResult(context=GuestContext(s.regs, s.pc, s.pstate))
        elif self.vm.has_quirk(QUIRK_RESUME):
            # KVM v6 13/18: x1 ignored, an IRQ taken from the interrupted context instead.
            result = CallResult(context=GuestContext(s.regs, s.pc, s.pstate),
                                resume=ResumeEntry(ExceptionKind.IRQ, s.pc, s.pstate, None))
        else:
            result = CallResult(context=GuestContext(s.regs, s.pc, s.pstate),
                                resume=ResumeEntry(ExceptionKind.SYNC, s.pc, s.pstate, resume_at))
        if self.table.pending:
            self.kick_all()
        if self.vm.observers:
            self.vm.notify("sdei_complete", vcpu, s.pc, event=ev.num, interrupted_pc=s.pc, interrupted_pstate=s.pstate,
                           handler=h.ep, how="complete" if resume_at is None else "complete_and_resume",
                           resume_address=resume_at, status=status, regs=s.regs)
        if ev.notifier is not None:
            ev.notifier(vcpu, ev.num, NOTIFY_COMPLETED)
        return result

    def cpu_reset(self, vcpu: "Vcpu") -> None:
        """A PE powered on or off: masked, nothing running, its private state gone (TF-A
        sdei_cpu_on_init); a shared event it was running is no longer running."""
        i = vcpu.index
        pe = self.pes[i]
        for d in pe.stack:
            ev = self.table.events.get(d.num)
            if ev is not None and ev.shared:
                h = self.table.handler(ev, i)
                h.state = EventState(h.state & ~4)
                if h.state is EventState.UNREGISTERED:
                    h.clear()
        pe.stack.clear()
        pe.masked = True
        for key in [k for k in self.table.handlers if k[1] == i]:
            del self.table.handlers[key]
        for num in sorted({n for n, where in self.table.pending if where == i}):
            self.drop(num, i, at=i)
