"""Every cell of the SDEI handler state table (reference/sdei.md 2.2, TF-A sdei_state.c),
driven by real guest code: a shared event bound to SPI 40 and routed to the PE itself is put
in each state, then each call is made (inside the handler for the running states), and the
guest records the call's x0, EVENT_STATUS afterwards, and whether its handler ran."""

import pytest

from sandbox.hyp.sdei_abi import DYNAMIC_SHARED_BASE

from guest_lib import DOORBELL, RecordingController, machine, s64

EV = DYNAMIC_SHARED_BASE
SPI = 40
OK, DENIED, PENDING = 0, -3, -5
RESUMED = "resumed"  # the call did not return: the interrupted code went on

# The calls, as guest code (x0 result); C&R resumes at `resumed_here`.
CALLS = {
    "register": f"ldr x1, ={EV:#x}\n ldr x2, =handler\n mov x3, #0\n mov x4, #1\n mov x5, #0\n bl sdei_event_register",
    "release": f"ldr x1, ={EV:#x}\n bl sdei_interrupt_release",
    "enable": f"ldr x1, ={EV:#x}\n bl sdei_event_enable",
    "disable": f"ldr x1, ={EV:#x}\n bl sdei_event_disable",
    "unregister": f"ldr x1, ={EV:#x}\n bl sdei_event_unregister",
    "routing_set": "mov x1, #0\n ldr x1, =%#x\n mov x2, #1\n mov x3, #0\n bl sdei_event_routing_set" % EV,
    "context": "mov x1, #0\n bl sdei_event_context",
    "complete": "ldr x0, =0xC4000025\n mov x1, #0\n hvc #0",
    "complete_and_resume": "ldr x0, =0xC4000026\n ldr x1, =resumed_here\n hvc #0",
    "dispatch": f"ldr x9, ={DOORBELL:#x}\n mov x10, #{SPI}\n str w10, [x9]\n nop\n mov x0, #0",
}

# (state, call) -> (x0, EVENT_STATUS afterwards, handler runs so far), written from the
# reference table: ->N allowed, NOP allowed, DENY refused; running states are observed inside
# their handler (one run so far); "resumed" calls are observed after the interrupted code
# went on.
EXPECTED = {
    0: {"register": (OK, 1), "release": (OK, 0), "enable": (DENIED, 0), "disable": (DENIED, 0),
        "unregister": (DENIED, 0), "routing_set": (DENIED, 0), "context": (DENIED, 0), "complete": (DENIED, 0),
        "complete_and_resume": (DENIED, 0), "dispatch": (OK, 0)},
    1: {"register": (DENIED, 1), "release": (DENIED, 1), "enable": (OK, 3), "disable": (OK, 1),
        "unregister": (OK, 0), "routing_set": (OK, 1), "context": (DENIED, 1), "complete": (DENIED, 1),
        "complete_and_resume": (DENIED, 1), "dispatch": (OK, 1)},
    3: {"register": (DENIED, 3), "release": (DENIED, 3), "enable": (OK, 3), "disable": (OK, 1),
        "unregister": (OK, 0), "routing_set": (DENIED, 3), "context": (DENIED, 3), "complete": (DENIED, 3),
        "complete_and_resume": (DENIED, 3), "dispatch": (OK, 3)},
    7: {"register": (DENIED, 7), "release": (DENIED, 7), "enable": (OK, 7), "disable": (OK, 5),
        "unregister": (PENDING, 4), "routing_set": (DENIED, 7), "context": ("saved x0", 7),
        "complete": (RESUMED, 3), "complete_and_resume": (RESUMED, 3), "dispatch": (OK, 7)},
    5: {"register": (DENIED, 5), "release": (DENIED, 5), "enable": (OK, 7), "disable": (OK, 5),
        "unregister": (PENDING, 4), "routing_set": (DENIED, 5), "context": ("saved x0", 5),
        "complete": (RESUMED, 1), "complete_and_resume": (RESUMED, 1), "dispatch": (OK, 5)},
    4: {"register": (DENIED, 4), "release": (DENIED, 4), "enable": (DENIED, 4), "disable": (DENIED, 4),
        "unregister": (PENDING, 4), "routing_set": (DENIED, 4), "context": ("saved x0", 4),
        "complete": (RESUMED, 0), "complete_and_resume": (RESUMED, 0), "dispatch": (OK, 4)},
}
# Dispatch: the handler runs only from the enabled state (3 -> 7); in the running states the
# new instance waits (it is taken after COMPLETE only when the handler left state 7 enabled).
DISPATCHES = {0: False, 1: False, 3: True, 7: False, 5: False, 4: False}

SAVED_X0 = 0x5A5A0000


def guest(state: int, call: str) -> str:
    running = state in (7, 5, 4)
    into = {7: "", 5: f"ldr x1, ={EV:#x}\n bl sdei_event_disable",
            4: f"ldr x1, ={EV:#x}\n bl sdei_event_unregister"}.get(state, "")
    setup = [f"mov x1, #{SPI}\n bl sdei_interrupt_bind"]
    if state != 0:
        setup.append(CALLS["register"])
    if state != 0 and state != 1:
        setup.append(CALLS["enable"])
    setup.append("bl sdei_pe_unmask")
    action = CALLS[call]
    if running:
        body = f"""
    ldr x0, ={SAVED_X0:#x}
    ldr x9, ={DOORBELL:#x}
    mov x10, #{SPI}
    str w10, [x9]               // the handler runs here and makes the call
resumed_here:
    ldr x1, ={EV:#x}
    bl sdei_event_status
    ldr x9, =out
    str x0, [x9, #24]           // EVENT_STATUS once the interrupted code goes on
"""
        handler_body = f"""
    {into}
    {action}
    ldr x9, =out
    str x0, [x9]
    ldr x1, ={EV:#x}
    bl sdei_event_status
    ldr x9, =out
    str x0, [x9, #8]
    ldr x10, =runs
    ldr x10, [x10]
    str x10, [x9, #16]
"""
    else:
        body = f"""
    {action}
    ldr x9, =out
    str x0, [x9]
    ldr x1, ={EV:#x}
    bl sdei_event_status
    ldr x9, =out
    str x0, [x9, #8]
    ldr x10, =runs
    ldr x10, [x10]
    str x10, [x9, #16]
resumed_here:
"""
        handler_body = ""
    return f"""
guest_main:
    str x30, [sp, #-16]!
    {chr(10).join(setup)}
    {body}
    ldr x30, [sp], #16
    ret
handler:
    ldr x9, =runs
    ldr x10, [x9]
    add x10, x10, #1
    str w10, [x9]
    mov x19, x30                // x18-x30 must survive the handler
    cmp x10, #1
    b.ne handler_done           // a second run (the instance pended while running) only completes
    {handler_body}
handler_done:
    mov x30, x19
    ldr x0, =0xC4000025
    mov x1, #0
    hvc #0
.balign 8
runs: .quad 0
out: .quad 0x11, 0x22, 0x33, 0x44
"""


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize("state", [0, 1, 3, 7, 5, 4])
def test_state_table_cell(state, call):
    m = machine(guest(state, call))
    gic = m.vm.interrupt_controller = RecordingController()
    ex = m.run(timeout=5)
    assert ex.reason.name == "SYSTEM_EVENT", ex.describe()
    result, status, runs, after = [s64(v) for v in m.words("out", 4)]
    want_result, want_status = EXPECTED[state][call]
    if want_result == RESUMED:
        # COMPLETE / C&R did not return to the handler: nothing was recorded there
        assert (result, status, runs) == (0x11, 0x22, 0x33)
        assert after == want_status
        return
    if want_result == "saved x0":
        want_result = SAVED_X0  # EVENT_CONTEXT(0): x0 of the interrupted context
    assert (result, status) == (want_result, want_status)
    if call == "dispatch":
        assert runs == (1 if state in (7, 5, 4) else 0) + DISPATCHES[state]
        # not registered: SDEI does not own the interrupt, the interrupt controller gets it
        assert gic.seen == ([("raise", SPI, None)] if state == 0 else [])
    if state in (7, 5, 4):
        # after the handler completes: running cleared (4 -> 0: the unregistration completes)
        expected_after = {7: 3, 5: 1, 4: 0}[want_status]
        if call == "dispatch" and state == 7:
            expected_after = 3  # the pending instance ran again once the first completed
        assert after == expected_after
