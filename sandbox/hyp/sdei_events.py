"""SDEI events and their handlers: what exists, who registered what, what is pending.

- `SdeiEvent`: an event the guest can register: event 0 (always there), events the VMM
  exposes (KVM_SDEI_CMD_SET_EXPOSED_EVENT), and the dynamic events of the interrupt-bind
  slots (bound or not: TF-A knows a dynamic event's number before it is bound).
- `Handler`: one registration: per PE for a private event, one for a shared event
  (TF-A sdei_entry_t: state, entry point, argument, routing).
- `EventTable`: the events, handlers, bindings and pending instances of one Vm.
- `PeState`: one PE's mask and its dispatch stack (at most a normal and a critical
  outstanding dispatch, TF-A MAX_EVENT_NESTING 2), each with the context it interrupted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .sdei_abi import (DEFAULT_BIND_SLOTS, DYNAMIC_PRIVATE_BASE, DYNAMIC_SHARED_BASE, PPI_FIRST, PPI_LAST,
                       RM_ANY, SPI_FIRST, SPI_LAST, SW_SIGNALED_EVENT)
from .sdei_state import STATUS_ENABLED, EventState

SHARED = -1  # the "PE" of a shared event's handler and pending instances

# Notifier states (v5 asm/kvm_sdei.h enum: KVM_SDEI_NOTIFY_DELIVERED, KVM_SDEI_NOTIFY_COMPLETED).
NOTIFY_DELIVERED = 0
NOTIFY_COMPLETED = 1
Notifier = Callable[[Any, int, int], None]  # (vcpu, event number, NOTIFY_*)


@dataclass
class SdeiEvent:
    num: int
    shared: bool
    critical: bool
    signaled: bool  # "can be signalled" (GET_INFO EV_SIGNALED; KVM v5 exposed_event.signaled)
    origin: str  # "default" (event 0), "vmm" (exposed), "dynamic" (an interrupt-bind slot)
    notifier: Notifier | None = None
    intid: int | None = None  # the interrupt a dynamic event is bound to


@dataclass
class Handler:
    state: EventState = EventState.UNREGISTERED
    ep: int = 0
    arg: int = 0
    route_mode: int = RM_ANY
    affinity: int = 0

    def clear(self) -> None:
        self.state, self.ep, self.arg, self.route_mode, self.affinity = EventState.UNREGISTERED, 0, 0, RM_ANY, 0


@dataclass(frozen=True)
class SavedContext:
    """The interrupted context of one dispatch: x0-x17, PC and PSTATE (TF-A sdei_dispatch_context_t)."""

    regs: tuple[int, ...]
    pc: int
    pstate: int


@dataclass
class Dispatch:
    num: int
    critical: bool
    saved: SavedContext


@dataclass
class PeState:
    masked: bool = True  # PEs start masked (TF-A sdei_cpu_on_init; KVM series)
    stack: list[Dispatch] = field(default_factory=list)

    def running(self, critical: bool) -> bool:
        return any(d.critical == critical for d in self.stack)


class EventTable:
    def __init__(self, bind_slots: tuple[int, int] = DEFAULT_BIND_SLOTS):
        self.events: dict[int, SdeiEvent] = {}
        self.handlers: dict[tuple[int, int], Handler] = {}  # (event, PE index or SHARED)
        self.pending: dict[tuple[int, int], int] = {}  # (event, PE index or SHARED) -> instances
        self.bind_slots = bind_slots
        self.add(SdeiEvent(SW_SIGNALED_EVENT, shared=False, critical=False, signaled=True, origin="default"))
        self._add_slots()

    def _add_slots(self) -> None:
        private, shared = self.bind_slots
        for i in range(private):
            self.add(SdeiEvent(DYNAMIC_PRIVATE_BASE + i, shared=False, critical=False, signaled=False, origin="dynamic"))
        for i in range(shared):
            self.add(SdeiEvent(DYNAMIC_SHARED_BASE + i, shared=True, critical=False, signaled=False, origin="dynamic"))

    def set_bind_slots(self, private: int, shared: int) -> None:
        """Change how many events INTERRUPT_BIND can create (FEATURES(BIND_SLOTS) reports
        it); only while no dynamic event is bound or registered."""
        for ev in [e for e in self.events.values() if e.origin == "dynamic"]:
            del self.events[ev.num]
            for key in [k for k in self.handlers if k[0] == ev.num]:
                del self.handlers[key]
        self.bind_slots = (private, shared)
        self._add_slots()

    def add(self, ev: SdeiEvent) -> None:
        self.events[ev.num] = ev

    def get(self, num: int) -> SdeiEvent | None:
        return self.events.get(num)

    def handler(self, ev: SdeiEvent, pe: int) -> Handler:
        """The handler record for `ev` on PE `pe` (the shared one for a shared event)."""
        key = (ev.num, SHARED if ev.shared else pe)
        h = self.handlers.get(key)
        if h is None:
            h = self.handlers[key] = Handler()
        return h

    def enabled_on(self, ev: SdeiEvent, pe: int) -> bool:
        """Whether `ev` is registered and enabled for PE `pe` (EVENT_STATUS bit 1; the
        shared record for a shared event). Reads only: `handler()` would add a record."""
        h = self.handlers.get((ev.num, SHARED if ev.shared else pe))
        return h is not None and bool(h.state & STATUS_ENABLED)

    def registered_anywhere(self, ev: SdeiEvent) -> bool:
        """TF-A's reg_count != 0 (or an unregistration still pending)."""
        return any(h.state is not EventState.UNREGISTERED for (n, _), h in self.handlers.items() if n == ev.num)

    def registered_events(self) -> int:
        return len({n for (n, _), h in self.handlers.items() if h.state is not EventState.UNREGISTERED})

    # -- interrupt bindings -------------------------------------------------------------

    def bound(self, intid: int) -> SdeiEvent | None:
        for ev in self.events.values():
            if ev.intid == intid:
                return ev
        return None

    def free_slot(self, intid: int) -> SdeiEvent | None:
        """An unbound dynamic event of the kind `intid` needs (PPI: private, SPI: shared)."""
        shared = SPI_FIRST <= intid <= SPI_LAST
        for num in sorted(self.events):
            ev = self.events[num]
            if ev.origin == "dynamic" and ev.intid is None and ev.shared == shared:
                return ev
        return None


def bindable(intid: int) -> bool:
    return PPI_FIRST <= intid <= PPI_LAST or SPI_FIRST <= intid <= SPI_LAST
