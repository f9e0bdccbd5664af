"""`[expect]` keys for SDEI and for several vCPUs: what the guest's SDEI handler saw, what the
dispatcher's COMPLETE calls restored, the dispatcher's state, and per-vCPU registers.

    sdei = [ { event = 0x400010, arg = 0x77, pc = "spin", cpu = 0, completion = 0 } ]
        what firmware/sdei.S's recording handler wrote, every record of every vCPU, in
        order (vCPU by vCPU): x0-x3 at entry (event, arg, pc = x2, pstate = x3), its own
        PSTATE (`handler_pstate`), EVENT_STATUS inside (`status`), how it completed
    sdei_completions = [ { event = 0x400010, how = "complete_and_resume", resume = "there" } ]
        every EVENT_COMPLETE / COMPLETE_AND_RESUME the dispatcher accepted, in order: the
        context it restored (`pc`, `pstate`: the interrupted one) and the resume address
    sdei_state = [ { cpu = 0, masked = true, running = [], pending = [], events = [ { event = 0x400010, status = 3 } ] } ]
        the dispatcher at the end, per vCPU (KVM_SDEI_CMD_GET_VCPU_STATE / GET_VCPU_EVENT,
        EVENT_STATUS as that vCPU would read it)
    sdei_bindings = [ { intid = 16, event = 0x40003E8 } ]
        every interrupt bound by INTERRUPT_BIND at the end (exactly these)
    vcpus = [ { vcpu = 1, power = "off", registers = { x19 = 1 } } ]
        per vCPU at the end: PSCI power state (AFFINITY_INFO: on, off, on-pending), registers

The guest-side records need firmware/sdei.S (symbol `sdei_ring`); the rest comes from the
host and needs only KVM_CAP_ARM_SDEI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..hyp.power import PowerState
from ..hyp.sdei_events import SHARED
from ..observe import Event
from ..sdei_client import sdei_records
from .fields import Doc, Node, Ref, unsigned_fields

if TYPE_CHECKING:
    from .expect import Expect, Mismatch
    from .runner import ScenarioRun

KEYS = ("sdei", "sdei_completions", "sdei_state", "sdei_bindings", "vcpus")

# Expected field -> SdeiRecord attribute (sandbox.sdei_client)
RECORD_FIELDS = {"event": "event", "arg": "arg", "pc": "interrupted_pc", "pstate": "interrupted_pstate",
                 "handler_pstate": "pstate", "status": "status", "completion": "completion", "cpu": "cpu"}
COMPLETION_FIELDS = ("event", "how", "pc", "pstate", "resume", "cpu")
HOW = ("complete", "complete_and_resume")
POWER = {"on": PowerState.ON, "off": PowerState.OFF, "on-pending": PowerState.ON_PENDING}


def parse(doc: Doc, key: str, n: Node, e: "Expect") -> None:
    """Read `key` of the expect table `n` into `e`."""
    if key == "sdei":
        e.sdei = [unsigned_fields(t, RECORD_FIELDS, address=("pc",)) for t in n.tables("sdei")]
    elif key == "sdei_completions":
        e.sdei_completions = [_completion(t) for t in n.tables("sdei_completions")]
    elif key == "sdei_state":
        e.sdei_state = [_state(t) for t in n.tables("sdei_state")]
    elif key == "sdei_bindings":
        e.sdei_bindings = [_binding(t) for t in n.tables("sdei_bindings")]
    elif key == "vcpus":
        e.vcpus = [_vcpu(doc, t) for t in n.tables("vcpus")]


def _completion(t: Node) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in COMPLETION_FIELDS:
        if not t.has(k):
            t.raw(k, None)
        elif k == "how":
            out[k] = t.str(k, choices=HOW)
        elif k in ("pc", "resume"):
            out[k] = t.address(k)
        else:
            out[k] = t.int(k, minimum=0)
    t.finish()
    if not out:
        raise t.error(None, f"give at least one of {', '.join(COMPLETION_FIELDS)}")
    return out


def _int_list(t: Node, key: str) -> list[int] | None:
    v = t.raw(key, None)
    if v is None:
        return None
    if not isinstance(v, list) or any(isinstance(x, bool) or not isinstance(x, int) for x in v):
        raise t.error(key, "expected an array of event numbers")
    return list(v)


def _state(t: Node) -> dict[str, Any]:
    out: dict[str, Any] = {"cpu": t.int("cpu", 0, minimum=0)}
    if t.has("masked"):
        out["masked"] = t.bool("masked")
    for key in ("running", "pending"):
        v = _int_list(t, key)
        if v is not None:
            out[key] = v
    events = {}
    for ev in t.tables("events"):
        num = ev.int("event", minimum=0)
        events[num] = ev.int("status", minimum=0, maximum=7)
        ev.finish()
    if events:
        out["events"] = events
    t.finish()
    return out


def _binding(t: Node) -> dict[str, int]:
    out = {"intid": t.int("intid", minimum=0), "event": t.int("event", minimum=0)}
    t.finish()
    return out


def _vcpu(doc: Doc, t: Node) -> dict[str, Any]:
    from .actions import known_register
    out: dict[str, Any] = {"vcpu": t.int("vcpu", minimum=0)}
    if t.has("power"):
        out["power"] = t.str("power", choices=POWER)
    regs = t.table("registers")
    if regs is not None:
        for name in regs.keys():
            if not known_register(name):
                raise regs.error(name, f"unknown register {name!r}")
        out["registers"] = {name: regs.address(name) for name in regs.keys()}
    t.finish()
    return out


# -- observing -------------------------------------------------------------------------------

def record_completion(run: "ScenarioRun", event: Event) -> None:
    """The runner's observer, for "sdei_complete": what the dispatcher restored."""
    d = event.data
    run.sdei_completions.append({"event": d["event"], "how": d["how"], "pc": d["interrupted_pc"],
                                 "pstate": d["interrupted_pstate"], "resume": d.get("resume_address"),
                                 "cpu": event.vcpu})


def observed_records(run: "ScenarioRun") -> list[dict[str, int]]:
    out = []
    for v in run.vm.vcpus:
        for r in sdei_records(run.vm, run.program.symbols, v.mpidr & 0xFF):
            out.append({"event": r.event, "arg": r.arg, "pc": r.interrupted_pc, "pstate": r.interrupted_pstate,
                        "handler_pstate": r.pstate, "status": r.status, "completion": r.completion,
                        "cpu": r.mpidr & 0xFF})
    return out


def observed_state(run: "ScenarioRun", cpu: int) -> dict[str, Any]:
    sdei = run.vm.hypervisor.sdei
    pe = sdei.pes[cpu]
    pending = sorted({num for (num, where) in sdei.table.pending
                      if where == cpu or (where == SHARED and _shared_here(sdei, num, cpu))})
    events = {num: int(sdei.table.handler(ev, cpu).state) for num, ev in sdei.table.events.items()}
    return {"cpu": cpu, "masked": pe.masked, "running": [d.num for d in pe.stack], "pending": pending,
            "events": events}


def _shared_here(sdei: Any, num: int, cpu: int) -> bool:
    ev = sdei.table.events[num]
    target = sdei.shared_target(ev, sdei.table.handler(ev, 0))
    return (0 if target is None else target) == cpu


def judge(run: "ScenarioRun", observed: dict[str, Any]) -> "list[Mismatch]":
    from .expect import Mismatch, compare_records
    exp = run.variant.expect
    out: list["Mismatch"] = []

    def resolved(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: run.resolve(v) if isinstance(v, Ref) else v for k, v in w.items()} for w in items]

    if "sdei_ring" in run.program.symbols:
        observed["sdei"] = observed_records(run)
    if exp.sdei is not None:
        if "sdei_ring" not in run.program.symbols:
            out.append(Mismatch("sdei", exp.sdei, "no sdei_ring (include sdei.S)"))
        else:
            out += compare_records("sdei", resolved(exp.sdei), observed["sdei"], exact=True)
    observed["sdei_completions"] = list(run.sdei_completions)
    if exp.sdei_completions is not None:
        out += compare_records("sdei_completions", resolved(exp.sdei_completions), run.sdei_completions, exact=True)
    if exp.sdei_state:
        states = []
        for want in exp.sdei_state:
            cpu = want["cpu"]
            if cpu >= len(run.vm.vcpus):
                out.append(Mismatch(f"sdei_state cpu {cpu}", want, "no such vCPU"))
                continue
            got = observed_state(run, cpu)
            states.append(got)
            for k, v in want.items():
                if k == "events":
                    for num, status in v.items():
                        if got["events"].get(num, 0) != status:
                            out.append(Mismatch(f"sdei_state[cpu {cpu}].events[{num:#x}].status", status,
                                                got["events"].get(num)))
                elif got[k] != v:
                    out.append(Mismatch(f"sdei_state[cpu {cpu}].{k}", v, got[k]))
        observed["sdei_state"] = [{**s, "events": [{"event": n, "status": st} for n, st in s["events"].items() if st]}
                                  for s in states]
    if exp.sdei_bindings is not None:
        table = run.vm.hypervisor.sdei.table
        got_b = sorted(({"intid": ev.intid, "event": ev.num} for ev in table.events.values()
                        if ev.intid is not None), key=lambda b: b["intid"])
        observed["sdei_bindings"] = got_b
        out += compare_records("sdei_bindings", sorted(exp.sdei_bindings, key=lambda b: b["intid"]), got_b, exact=True)
    for want in exp.vcpus or []:
        i = want["vcpu"]
        if i >= len(run.vm.vcpus):
            out.append(Mismatch(f"vcpus[{i}]", want, "no such vCPU"))
            continue
        v = run.vm.vcpus[i]
        if "power" in want:
            got_p = run.vm.hypervisor.power.states[i]
            if got_p is not POWER[want["power"]]:
                out.append(Mismatch(f"vcpus[{i}].power", want["power"], got_p.name.lower().replace("_", "-")))
        for name, ref in want.get("registers", {}).items():
            want_v, got_v = run.resolve(ref), v.reg(name)
            if want_v != got_v:
                out.append(Mismatch(f"vcpus[{i}].registers.{name}", want_v, got_v))
    return out
