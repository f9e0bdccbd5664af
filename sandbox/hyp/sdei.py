"""The SDEI dispatcher as the guest calls it: every DEN0054C function (reference/sdei.md 1.2).

Arguments are checked in TF-A's order (services/std_svc/sdei/sdei_main.c, sdei_intr_mgmt.c),
state-dependent answers come from the state table (sdei_state.py), and nothing a guest
passes can raise: a bad value is INVALID_PARAMETERS, a call the state forbids DENIED.
Delivery (who takes what, handler entry, COMPLETE) is sdei_delivery.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from ..exits import Exit, SystemEventExit
from ..kvm import ExitReason, SystemEventType
from .result import CallResult
from .power import MPIDR_HWID_MASK, vcpu_by_mpidr
from .sdei_abi import (DENIED, INVALID_PARAMETERS, KVM_SDEI_MAX_EVENTS, OUT_OF_RESOURCE, PENDING,
                       RM_ANY, RM_PE, SAVED_GPREGS, SUCCESS, SW_SIGNALED_EVENT, VERSION_1_1, Feature, Info, SdeiFn)
from .sdei_delivery import QUIRK_RESUME, SdeiDelivery
from .sdei_events import SHARED, EventTable, PeState, SdeiEvent, bindable
from .sdei_state import STATUS_ENABLED, STATUS_REGISTERED, Call, EventState, transition

if TYPE_CHECKING:
    from ..vcpu import Vcpu
    from ..vm import Vm

QUIRK_SIGNAL = "sdei-signal-unchecked"
QUIRK_BIND_OVERFLOW = "sdei-bind-overflow"
Handler = Callable[["Vcpu", "list[int]"], "int | CallResult"]


class Sdei(SdeiDelivery):
    def __init__(self, vm: "Vm"):
        super().__init__(vm, EventTable())
        F = SdeiFn
        self.handlers: dict[int, Handler] = {
            F.VERSION: lambda v, a: VERSION_1_1,
            F.EVENT_REGISTER: self._register,
            F.EVENT_ENABLE: lambda v, a: self._enable(v, a[1], Call.ENABLE),
            F.EVENT_DISABLE: lambda v, a: self._enable(v, a[1], Call.DISABLE),
            F.EVENT_CONTEXT: self._context,
            F.EVENT_COMPLETE: lambda v, a: self.complete(v, None, a[1]),
            F.EVENT_COMPLETE_AND_RESUME: self._complete_and_resume,
            F.EVENT_UNREGISTER: lambda v, a: self._unregister(v, a[1]),
            F.EVENT_STATUS: self._status,
            F.EVENT_GET_INFO: self._get_info,
            F.EVENT_ROUTING_SET: self._routing_set,
            F.PE_MASK: self._pe_mask,
            F.PE_UNMASK: self._pe_unmask,
            F.INTERRUPT_BIND: self._interrupt_bind,
            F.INTERRUPT_RELEASE: self._interrupt_release,
            F.EVENT_SIGNAL: self._signal,
            F.FEATURES: self._features,
            F.PRIVATE_RESET: self._private_reset,
            F.SHARED_RESET: self._shared_reset,
        }
        for fid in (F.EVENT_ENABLE, F.EVENT_COMPLETE, F.EVENT_COMPLETE_AND_RESUME, F.PE_UNMASK, F.EVENT_SIGNAL):
            self.handlers[fid] = self._calling(self.handlers[fid])  # the calls that can kick a PE

    def _calling(self, fn: Handler) -> Handler:
        """Mark the calling vCPU: a kick aimed at it is seen when its call returns."""
        def call(vcpu: "Vcpu", a: "list[int]") -> "int | CallResult":
            self.calling = vcpu
            try:
                return fn(vcpu, a)
            finally:
                self.calling = None
        return call

    def add_pe(self, vcpu: "Vcpu") -> None:
        self.pes.append(PeState())

    # -- lookups ------------------------------------------------------------------------------

    def event(self, num: int) -> SdeiEvent | None:
        """The event numbered x1 (the upper 32 bits must be clear; bit 31 is reserved)."""
        return self.table.events.get(num) if num <= 0x7FFFFFFF else None

    def pe_by_mpidr(self, mpidr: int) -> "Vcpu | None":
        return vcpu_by_mpidr(self.vm.vcpus, mpidr)

    def valid_entry(self, vcpu: "Vcpu", address: int) -> bool:
        """An entry point the guest could execute: non-zero and inside guest RAM after the
        EL1 translation (TF-A plat_sdei_validate_entry_point)."""
        if not address:
            return False
        pa = vcpu.translate(address, fetch=True)
        ram = None if pa is None else self.vm.memory.ram_at(pa)
        return ram is not None and pa + 4 <= ram.end  # type: ignore[operator]

    # -- registration --------------------------------------------------------------------------

    def _register(self, vcpu: "Vcpu", a: "list[int]") -> int:
        """EVENT_REGISTER(event, entry, arg, flags, affinity) (TF-A sdei_event_register)."""
        num, ep, arg, flags, affinity = a[1], a[2], a[3], a[4], a[5]
        if flags == RM_PE:
            if self.pe_by_mpidr(affinity) is None:
                return INVALID_PARAMETERS
        elif flags != RM_ANY:
            return INVALID_PARAMETERS  # relative mode (bit 1) and reserved bits [63:2]
        if not self.valid_entry(vcpu, ep):
            return INVALID_PARAMETERS
        ev = self.event(num)
        if ev is None:
            return INVALID_PARAMETERS
        h = self.table.handler(ev, vcpu.index)
        t = transition(h.state, Call.REGISTER)
        if not t.allowed or (ev.origin == "dynamic" and ev.intid is None):
            return DENIED  # registered already, or a dynamic event not bound
        if not self.table.registered_anywhere(ev) and self.table.registered_events() >= KVM_SDEI_MAX_EVENTS:
            return OUT_OF_RESOURCE  # KVM v5: at most KVM_SDEI_MAX_EVENTS registered events per VM
        h.state, h.ep, h.arg = t.next, ep, arg
        if ev.shared:
            h.route_mode, h.affinity = flags, affinity if flags == RM_PE else 0
        else:
            h.route_mode, h.affinity = RM_PE, vcpu.mpidr & MPIDR_HWID_MASK  # private: always this PE
        return SUCCESS

    def _enable(self, vcpu: "Vcpu", num: int, call: Call) -> int:
        ev = self.event(num)
        if ev is None:
            return INVALID_PARAMETERS
        h = self.table.handler(ev, vcpu.index)
        t = transition(h.state, call)
        if not t.allowed:
            return DENIED
        h.state = t.next
        if call is Call.ENABLE and self.table.pending:
            self.kick_for(SHARED if ev.shared else vcpu.index)
        return SUCCESS

    def unregister(self, ev: SdeiEvent, pe: int) -> int:
        """UNREGISTER on one handler: SUCCESS, PENDING (running: completes at COMPLETE) or DENIED."""
        h = self.table.handler(ev, pe)
        t = transition(h.state, Call.UNREGISTER)
        if not t.allowed:
            return DENIED
        if t.next is EventState.UNREGISTERED:
            h.clear()
            self.drop(ev.num, SHARED if ev.shared else pe, at=pe)
        else:
            h.state = t.next  # unregister-pending: disabled, unregistered when the handler completes
        return t.result

    def _unregister(self, vcpu: "Vcpu", num: int) -> int:
        ev = self.event(num)
        return INVALID_PARAMETERS if ev is None else self.unregister(ev, vcpu.index)

    def _status(self, vcpu: "Vcpu", a: "list[int]") -> int:
        ev = self.event(a[1])
        return INVALID_PARAMETERS if ev is None else int(self.table.handler(ev, vcpu.index).state)

    def _get_info(self, vcpu: "Vcpu", a: "list[int]") -> int:
        """EVENT_GET_INFO (TF-A sdei_event_get_info). EV_SIGNALED answers 1 for an event that
        can be signalled (Linux, KVM and QEMU; TF-A reports the inverse, a known deviation)."""
        ev = self.event(a[1])
        info = a[2]
        if ev is None:
            return INVALID_PARAMETERS
        if info == Info.EV_TYPE:
            return int(ev.shared)
        if info == Info.EV_SIGNALED:
            return int(ev.signaled)
        if info == Info.EV_PRIORITY:
            return int(ev.critical)
        if info not in (Info.EV_ROUTING_MODE, Info.EV_ROUTING_AFF) or not ev.shared:
            return INVALID_PARAMETERS
        h = self.table.handler(ev, vcpu.index)
        if not h.state & STATUS_REGISTERED:
            return DENIED
        if info == Info.EV_ROUTING_MODE:
            return h.route_mode
        return h.affinity if h.route_mode == RM_PE else INVALID_PARAMETERS

    def _routing_set(self, vcpu: "Vcpu", a: "list[int]") -> int:
        """EVENT_ROUTING_SET(event, mode, affinity): shared events, registered and not
        enabled (TF-A sdei_event_routing_set)."""
        ev = self.event(a[1])
        mode, affinity = a[2], a[3]
        if ev is None or not ev.shared or mode & ~RM_PE:
            return INVALID_PARAMETERS
        if mode == RM_PE and self.pe_by_mpidr(affinity) is None:
            return INVALID_PARAMETERS
        h = self.table.handler(ev, vcpu.index)
        if not transition(h.state, Call.ROUTING_SET).allowed:
            return DENIED
        h.route_mode, h.affinity = mode, affinity if mode == RM_PE else 0
        return SUCCESS

    # -- the running handler ---------------------------------------------------------------------

    def _context(self, vcpu: "Vcpu", a: "list[int]") -> int:
        """EVENT_CONTEXT(index): x<index> of the interrupted context (TF-A sdei_event_context)."""
        if a[1] >= SAVED_GPREGS:
            return INVALID_PARAMETERS
        pe = self.pes[vcpu.index]
        if not pe.stack:
            return DENIED
        return pe.stack[-1].saved.regs[a[1]]

    def _complete_and_resume(self, vcpu: "Vcpu", a: "list[int]") -> "int | CallResult":
        if self.pes[vcpu.index].stack and not self.vm.has_quirk(QUIRK_RESUME) \
                and not self.valid_entry(vcpu, a[1]):
            return DENIED  # resume address rejected like an entry point (TF-A sdei_event_complete)
        return self.complete(vcpu, a[1], None)

    # -- the PE ----------------------------------------------------------------------------------

    def _pe_mask(self, vcpu: "Vcpu", a: "list[int]") -> int:
        """PE_MASK: 1 if this call masked an unmasked PE, else 0 (TF-A sdei_pe_mask)."""
        pe = self.pes[vcpu.index]
        was_unmasked = not pe.masked
        pe.masked = True
        return int(was_unmasked)

    def _pe_unmask(self, vcpu: "Vcpu", a: "list[int]") -> int:
        self.pes[vcpu.index].masked = False
        if self.table.pending:
            self.kick_all()  # pending private events here, and shared ones it may now take
        return SUCCESS

    # -- interrupts --------------------------------------------------------------------------------

    def _interrupt_bind(self, vcpu: "Vcpu", a: "list[int]") -> "int | CallResult":
        """INTERRUPT_BIND(intid): a dynamic event for a PPI (private) or SPI (shared); the same
        event again for an interrupt already bound (TF-A sdei_interrupt_bind)."""
        intid = a[1]
        if not bindable(intid):
            return INVALID_PARAMETERS
        ev = self.table.bound(intid)
        if ev is not None:
            return ev.num
        ev = self.table.free_slot(intid)
        if ev is None:
            if self.vm.has_quirk(QUIRK_BIND_OVERFLOW):
                # Before TF-A 4096bd66c firmware did not survive this (tf-a-tests
                # test_sdei_bind_failure: "without crashing firmware"): the machine stops.
                return CallResult(exit=Exit(ExitReason.SYSTEM_EVENT, 0,
                                            system_event=SystemEventExit(SystemEventType.CRASH)))
            return OUT_OF_RESOURCE
        ev.intid = intid
        return ev.num

    def _interrupt_release(self, vcpu: "Vcpu", a: "list[int]") -> int:
        """INTERRUPT_RELEASE(event) (TF-A sdei_interrupt_release)."""
        ev = self.event(a[1])
        if ev is None or ev.origin != "dynamic" or ev.intid is None:
            return INVALID_PARAMETERS
        return self.release(ev)

    def release(self, ev: SdeiEvent) -> int:
        if self.table.registered_anywhere(ev):
            return DENIED  # registered on some PE, or its unregistration still pending
        ev.intid = None
        self.drop(ev.num)
        return SUCCESS

    def claims(self, intid: int, pe: int) -> SdeiEvent | None:
        """The registered event bound to `intid` for PE `pe` (SDEI then owns the interrupt:
        TF-A hands a bound interrupt to EL3 at REGISTER and back at UNREGISTER)."""
        ev = self.table.bound(intid)
        if ev is None or self.table.handler(ev, pe).state is EventState.UNREGISTERED:
            return None
        return ev

    def _signal(self, vcpu: "Vcpu", a: "list[int]") -> int:
        """EVENT_SIGNAL(0, target MPIDR): event 0 pending on the target, edge-triggered.
        Refused for a masked target or one where event 0 is not registered and enabled (TF-A
        b142ede74); quirk "sdei-signal-unchecked" skips those two checks (a signal to a PE
        with no registration for event 0 then has nothing to pend and is lost)."""
        if a[1] != SW_SIGNALED_EVENT:
            return INVALID_PARAMETERS
        target = self.pe_by_mpidr(a[2])
        if target is None:
            return INVALID_PARAMETERS
        ev = self.table.events[SW_SIGNALED_EVENT]
        h = self.table.handler(ev, target.index)
        if not self.vm.has_quirk(QUIRK_SIGNAL):
            if self.pes[target.index].masked or h.state & (STATUS_REGISTERED | STATUS_ENABLED) != 3:
                return INVALID_PARAMETERS
        if h.state is not EventState.UNREGISTERED:
            self.pend(ev, target.index)
        return SUCCESS

    def _features(self, vcpu: "Vcpu", a: "list[int]") -> int:
        if a[1] == Feature.BIND_SLOTS:
            private, shared = self.table.bind_slots
            return (shared << 16) | private  # TF-A FEATURE_BIND_SLOTS: [31:16] shared, [15:0] private
        if a[1] == Feature.RELATIVE_MODE:
            return 0  # handler addresses are absolute (KVM v7 15/22)
        return INVALID_PARAMETERS

    # -- resets ------------------------------------------------------------------------------------

    def _private_reset(self, vcpu: "Vcpu", a: "list[int]") -> int:
        """PRIVATE_RESET: unregister every private event on this PE; DENIED if one was running
        (its unregistration then stays pending) (TF-A sdei_private_reset)."""
        result = SUCCESS
        for ev in list(self.table.events.values()):
            if not ev.shared and self.unregister(ev, vcpu.index) == PENDING:
                result = DENIED
        return result

    def _shared_reset(self, vcpu: "Vcpu", a: "list[int]") -> int:
        """SHARED_RESET: unregister every shared event, then release every binding
        (TF-A sdei_shared_reset); DENIED if something could not be."""
        result = SUCCESS
        for ev in list(self.table.events.values()):
            if ev.shared and self.unregister(ev, vcpu.index) == PENDING:
                result = DENIED
        for ev in list(self.table.events.values()):
            if ev.origin == "dynamic" and ev.intid is not None and self.release(ev) != SUCCESS:
                result = DENIED
        return result

    # -- snapshots ---------------------------------------------------------------------------------

    def state(self) -> dict:
        from . import sdei_migration
        return sdei_migration.save(self)

    def restore(self, state: dict) -> None:
        from . import sdei_migration
        sdei_migration.restore(self, state)
