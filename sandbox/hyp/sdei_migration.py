"""The SDEI dispatcher's whole state as JSON-able data, for the Vm snapshot.

Everything the guest can observe travels: exposed and dynamic events (with their
bindings), every handler record, pending instances, each PE's mask and dispatch stack with
the saved contexts, and where RM_ANY routing continues. 64-bit values are hex strings.
Notifiers are host callables and do not travel: the destination VMM sets them again
(`vm.sdei.set_notifier`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..kvm import EINVAL, kvm_error
from .sdei_events import Dispatch, Handler, PeState, SavedContext, SdeiEvent
from .sdei_state import EventState

if TYPE_CHECKING:
    from .sdei import Sdei

VERSION = 1


def _h(v: int) -> str:
    return f"{v:#x}"


def save(sdei: "Sdei") -> dict[str, Any]:
    t = sdei.table
    return {
        "version": VERSION,
        "bind_slots": list(t.bind_slots),
        "events": [{"num": e.num, "shared": e.shared, "critical": e.critical, "signaled": e.signaled,
                    "origin": e.origin, "intid": e.intid} for e in t.events.values() if e.origin != "default"],
        "handlers": [[n, pe, int(h.state), _h(h.ep), _h(h.arg), h.route_mode, _h(h.affinity)]
                     for (n, pe), h in t.handlers.items() if h.state is not EventState.UNREGISTERED],
        "pending": [[n, where, count] for (n, where), count in t.pending.items()],
        "pes": [{"masked": p.masked, "stack": [{"num": d.num, "critical": d.critical,
                                                "regs": [_h(r) for r in d.saved.regs], "pc": _h(d.saved.pc),
                                                "pstate": _h(d.saved.pstate)} for d in p.stack]}
                for p in sdei.pes],
        "rm_any_last": [[n, i] for n, i in sdei.rm_any_last.items()],
    }


def restore(sdei: "Sdei", state: dict[str, Any]) -> None:
    if state.get("version") != VERSION:
        raise kvm_error(EINVAL, f"SDEI state version {state.get('version')}; this sandbox reads {VERSION}")
    t = sdei.table
    notifiers = {n: e.notifier for n, e in t.events.items()}
    t.set_bind_slots(*state["bind_slots"])
    for e in state["events"]:
        ev = SdeiEvent(e["num"], e["shared"], e["critical"], e["signaled"], e["origin"], notifiers.get(e["num"]),
                       e["intid"])
        t.add(ev)
    t.handlers.clear()
    for n, pe, st, ep, arg, mode, aff in state["handlers"]:
        t.handlers[(n, pe)] = Handler(EventState(st), int(ep, 16), int(arg, 16), mode, int(aff, 16))
    t.pending = {(n, where): count for n, where, count in state["pending"]}
    if len(state["pes"]) != len(sdei.pes):
        raise kvm_error(EINVAL, f"SDEI state has {len(state['pes'])} PEs, the Vm {len(sdei.pes)} vCPUs")
    for i, p in enumerate(state["pes"]):
        sdei.pes[i] = PeState(p["masked"], [Dispatch(d["num"], d["critical"], SavedContext(
            tuple(int(r, 16) for r in d["regs"]), int(d["pc"], 16), int(d["pstate"], 16))) for d in p["stack"]])
    sdei.rm_any_last = {n: i for n, i in state["rm_any_last"]}
    for v in sdei.vm.vcpus:
        v.sdei_check = True  # look once: something restored may be deliverable
