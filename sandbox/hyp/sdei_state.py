"""The SDEI handler state machine as data (DEN0054A 6.1 / 6.1.2 as TF-A
services/std_svc/sdei/sdei_state.c encodes it; reference/sdei.md section 2.2).

A handler's state is 3 bits, exactly what EVENT_STATUS returns: bit 0 registered, bit 1
enabled, bit 2 running. Every call that depends on the state asks `transition()`; the
table below is the whole rule, so a legal transition is visible at a glance.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum

from .sdei_abi import DENIED, PENDING, SUCCESS


class EventState(IntEnum):
    UNREGISTERED = 0  # reg_  handler-unregistered (the default)
    REGISTERED = 1  # reG_  handler-registered, disabled
    ENABLED = 3  # rEG_  handler-enabled
    UNREGISTER_PENDING = 4  # Reg_  running, unregistration completes at COMPLETE
    RUNNING = 5  # ReG_  running, disabled while running
    RUNNING_ENABLED = 7  # REG_  running, enabled


STATUS_REGISTERED, STATUS_ENABLED, STATUS_RUNNING = 1, 2, 4  # EVENT_STATUS bits (Linux SDEI_EVENT_STATUS_*)


class Call(Enum):
    REGISTER = "register"
    RELEASE = "release"  # INTERRUPT_RELEASE (checked on every PE's handler)
    ENABLE = "enable"
    DISABLE = "disable"
    UNREGISTER = "unregister"
    ROUTING_SET = "routing_set"
    CONTEXT = "context"
    COMPLETE = "complete"
    COMPLETE_AND_RESUME = "complete_and_resume"
    DISPATCH = "dispatch"  # not a call: the dispatcher entering the handler


@dataclass(frozen=True)
class Transition:
    allowed: bool
    next: EventState  # the state afterwards (the same one for a NOP or a refusal)
    result: int  # SUCCESS, PENDING or DENIED (the x0 a call returns for this cell)


_COLUMNS = (Call.REGISTER, Call.RELEASE, Call.ENABLE, Call.DISABLE, Call.UNREGISTER, Call.ROUTING_SET,
            Call.CONTEXT, Call.COMPLETE, Call.COMPLETE_AND_RESUME, Call.DISPATCH)

# "->N" allowed, new state N; "NOP" allowed, unchanged; "DENY" refused with DENIED;
# "PENDING" allowed, unchanged, returns PENDING; "->N PENDING" both; "no": never dispatched.
_S = EventState
_TABLE = {
    #                        REGISTER RELEASE ENABLE  DISABLE UNREGISTER     ROUTING  CONTEXT COMPLETE C&R    DISPATCH
    _S.UNREGISTERED:        ("->1",  "NOP",  "DENY", "DENY", "DENY",        "DENY", "DENY", "DENY", "DENY", "no"),
    _S.UNREGISTER_PENDING:  ("DENY", "DENY", "DENY", "DENY", "PENDING",     "DENY", "NOP",  "->0",  "->0",  "no"),
    _S.REGISTERED:          ("DENY", "DENY", "->3",  "NOP",  "->0",         "NOP",  "DENY", "DENY", "DENY", "no"),
    _S.RUNNING:             ("DENY", "DENY", "->7",  "NOP",  "->4 PENDING", "DENY", "NOP",  "->1",  "->1",  "no"),
    _S.ENABLED:             ("DENY", "DENY", "NOP",  "->1",  "->0",         "DENY", "DENY", "DENY", "DENY", "->7"),
    _S.RUNNING_ENABLED:     ("DENY", "DENY", "NOP",  "->5",  "->4 PENDING", "DENY", "NOP",  "->3",  "->3",  "no"),
}


def _cell(state: EventState, text: str) -> Transition:
    words = text.split()
    if words[0] in ("DENY", "no"):
        return Transition(False, state, DENIED)
    nxt = EventState(int(words[0][2:])) if words[0].startswith("->") else state
    return Transition(True, nxt, PENDING if "PENDING" in words else SUCCESS)


TRANSITIONS: dict[tuple[EventState, Call], Transition] = {
    (state, call): _cell(state, text) for state, row in _TABLE.items() for call, text in zip(_COLUMNS, row)
}


def transition(state: EventState, call: Call) -> Transition:
    """What `call` does to a handler in `state` (TF-A can_sdei_state_trans)."""
    return TRANSITIONS[(state, call)]
