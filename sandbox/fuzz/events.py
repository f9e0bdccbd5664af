"""What the fuzzer can inject: a registry of event kinds keyed by the name used on the command
line and in `[fuzz] events`.

    serror   a virtual SError pended with KVM_SET_VCPU_EVENTS (with or without an ESR)
    sea      the access of the instruction at the boundary consumes a memory error: the page
             is poisoned, the access exits with KVM_EXIT_ARM_SEA, the host repairs the page
             and injects the external data abort (KVM_SET_VCPU_EVENTS ext_dabt_pending)
    sdei     KVM_SDEI_CMD_INJECT_EVENT of an event the scenario exposes (sdei_kind.py)
    irq      a pulse on an edge-triggered interrupt the scenario's GIC delivers (irq_kind.py)

An injection is expressed as scenario steps (`when = { instructions = N }` and the actions
the host performs), so a finding replays as an ordinary scenario file and every execution
path applies the very same actions. Other parts of the sandbox add their kinds with
`register_event_kind` (the SDEI dispatcher: "sdei" inject/signal, IRQs through
Vm.raise_interrupt).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

from ..arch import esr as E
from ..arch import pstate as ps
from ..arch.decode import decode_load_store


@dataclass(frozen=True)
class Boundary:
    """An instruction boundary the guest actually reached: `count` instructions retired,
    about to execute `insn` at `pc` with `pstate`. `address` is the guest-physical address
    the instruction accesses first (loads and stores to RAM), else None."""

    count: int
    pc: int
    pstate: int
    insn: int | None
    address: int | None = None
    probes: tuple[tuple[str, Any], ...] = ()  # (kind, what its `probe` saw here): host-side state

    def probe(self, kind: str) -> Any:
        """What event kind `kind`'s probe read at this boundary (None: no probe ran)."""
        return next((v for k, v in self.probes if k == kind), None)


@dataclass(frozen=True)
class EventKind:
    name: str
    summary: str
    applies: Callable[[Boundary], bool]  # can it be injected at this boundary?
    masked: Callable[[Boundary], bool | None]  # would it wait here (None: cannot be masked)?
    random_params: Callable[[random.Random], dict[str, Any]]
    steps: Callable[[int, dict[str, Any]], list[dict[str, Any]]]  # (at, params) -> raw scenario steps
    bind: Callable[[Boundary, dict[str, Any]], dict[str, Any]] = lambda b, p: dict(p)  # add what the
    # boundary decides (the address an access consumes poison at)
    needs_caps: tuple[str, ...] = ()  # KVM_ENABLE_CAP names the machine must enable
    bound: bool = False  # `bind` takes parameters from the boundary's state (an address)
    essential: tuple[str, ...] = ()  # parameters a minimisation keeps (what is injected, not how)
    # The injections a sweep makes at a boundary, each with the boundary as it leaves it (a
    # kind whose host can change the masking state tries each state). None: one, bind(b, {}).
    sweep: Callable[[Boundary], list[tuple[Boundary, dict[str, Any]]]] | None = None
    # Host-side state the kind needs at each boundary (the SDEI PE mask): probe(vcpu) returns
    # a hashable value, kept in Boundary.probes. None: the PSTATE and the instruction suffice.
    probe: Callable[[Any], Any] | None = None
    # The kind as one target uses it (the SDEI events that scenario exposes): for_target(target)
    # returns an EventKind of the same name. None: the same for every target.
    for_target: Callable[[Any], "EventKind"] | None = None

    def describe(self, params: dict[str, Any]) -> str:
        if not params:
            return self.name
        return f"{self.name}(" + ", ".join(f"{k}={v:#x}" if isinstance(v, int) else f"{k}={v}"
                                           for k, v in sorted(params.items())) + ")"


EVENT_KINDS: dict[str, EventKind] = {}


def register_event_kind(kind: EventKind) -> None:
    if kind.name in EVENT_KINDS:
        raise ValueError(f"event kind {kind.name!r} is already registered")
    EVENT_KINDS[kind.name] = kind


# -- serror ---------------------------------------------------------------------------------

# Syndromes the fuzzer picks from (RAS spec DDI0587B 2.4.4, ESR_ELx ISS for an SError):
# IDS=1 with IMPLEMENTATION DEFINED bits, or architected DFSC 0x11 with an AET and EA.
_AETS = (E.AET.UC, E.AET.UEU, E.AET.UEO, E.AET.UER, E.AET.CE)


def _serror_random(rng: random.Random) -> dict[str, Any]:
    choice = rng.randrange(4)
    if choice == 0:
        return {}  # serror_has_esr = 0: KVM's own syndrome
    if choice == 1:
        return {"iss": E.IDS | rng.getrandbits(24)}
    aet = rng.choice(_AETS)
    return {"iss": (int(aet) << E.AET_SHIFT) | (E.EA if rng.random() < 0.5 else 0) | E.FSC.SERROR}


def _serror_steps(at: int, params: dict[str, Any]) -> list[dict[str, Any]]:
    events: dict[str, Any] = {"serror_pending": 1}
    if "iss" in params:
        events.update(serror_has_esr=1, serror_esr=params["iss"])
    return [{"name": f"fuzz: pend an SError at instruction boundary {at}", "when": {"instructions": at},
             "do": [{"set_events": events}]}]


def _a_masked(b: Boundary) -> bool | None:
    # A virtual SError is masked by PSTATE.A at EL0/EL1 (HCR_EL2.AMO=1, TGE=0).
    return bool(b.pstate & ps.A) and ps.el(b.pstate) <= 1


register_event_kind(EventKind(
    "serror", "a virtual SError pended with KVM_SET_VCPU_EVENTS (random ESR or KVM's default)",
    applies=lambda b: True, masked=_a_masked, random_params=_serror_random,
    steps=_serror_steps))


# -- sea --------------------------------------------------------------------------------------

def _sea_applies(b: Boundary) -> bool:
    # Poison protects whole pages, and the sandbox handles instruction fetches from a page
    # holding poison unreliably (README): an access to its own instruction's page is left out.
    return (b.address is not None and b.insn is not None and decode_load_store(b.insn) is not None
            and b.address >> 12 != b.pc >> 12)


def _sea_bind(b: Boundary, params: dict[str, Any]) -> dict[str, Any]:
    assert b.address is not None
    return {**params, "address": b.address}


def _sea_steps(at: int, params: dict[str, Any]) -> list[dict[str, Any]]:
    events: dict[str, Any] = {"ext_dabt_pending": 1}
    if params.get("iss"):
        events["ext_abt_esr"] = params["iss"]  # seed-003's ext_abt_esr: ISS bits on top of FSC 0x10
    # One byte at the first byte the instruction accesses: only this access consumes it.
    where = {"address": params["address"], "size": 1}
    return [
        {"name": f"fuzz: the access at instruction boundary {at} consumes a memory error",
         "when": {"instructions": at}, "do": [{"poison": where}]},
        {"name": "fuzz: KVM_EXIT_ARM_SEA: repair the page, inject the external data abort",
         "when": {"exit": "ARM_SEA"}, "do": [{"unpoison": where}, {"set_events": events}]},
    ]


def _sea_random(rng: random.Random) -> dict[str, Any]:
    # ISS bits the host may add to the injected abort (seed-003 ext_abt_esr): a RAS
    # synchronous error type (SET, ISS[12:11]) on top of KVM's FSC 0x10.
    if rng.random() < 0.5:
        return {}
    return {"iss": int(rng.choice((E.SET.UER, E.SET.UC, E.SET.UEO))) << 11}


register_event_kind(EventKind(
    "sea", "the access at the boundary consumes poison: KVM_EXIT_ARM_SEA, the host injects the SEA",
    applies=_sea_applies, masked=lambda b: None, random_params=_sea_random,
    steps=_sea_steps, bind=_sea_bind, needs_caps=("ARM_SEA_TO_USER",), bound=True, essential=("address",)))


from . import irq_kind, sdei_kind  # noqa: E402,F401  (register "irq", "sdei"; they import this module)
