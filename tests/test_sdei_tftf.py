"""The TF-A-Tests SDEI behaviours (reference/sdei.md section 4, tftf/tests/tests-sdei.xml),
rewritten for the sandbox: real guest code on several vCPUs, events bound to interrupts the
guest raises through a doorbell device (standing in for TF-A-Tests' timers), event 0
signalled with EVENT_SIGNAL."""

from sandbox import ExitReason
from sandbox.hyp.sdei_abi import DYNAMIC_PRIVATE_BASE, DYNAMIC_SHARED_BASE
from sandbox.sdei_client import RESUME_INTERRUPTED

from guest_lib import DOORBELL, machine, s64

S0, P0 = DYNAMIC_SHARED_BASE, DYNAMIC_PRIVATE_BASE
OK, INVALID, DENIED, PENDING, OUT_OF_RESOURCE = 0, -2, -3, -5, -10
SPI, PPI = 40, 23
CPUS = 4

COMMON = f"""
.equ EV, {S0:#x}
.equ SPI, {SPI}
.equ DOORBELL, {DOORBELL:#x}

// x0..x4 as given, x5 = this CPU's MPIDR (x22); the result is appended to this CPU's row
.macro SD fid, a1=0, a2=0, a3=0, a4=0
    ldr x0, =\\fid
    ldr x1, =\\a1
    ldr x2, =\\a2
    ldr x3, =\\a3
    ldr x4, =\\a4
    mov x5, x22
    bl sdei_call_rec
.endm
.macro RING intid
    ldr x9, =DOORBELL
    ldr x10, =\\intid
    str w10, [x9]
.endm

sdei_call_rec:
    str x30, [sp, #-16]!
    bl sdei_call
    mrs x9, mpidr_el1
    and x9, x9, #0xff
    ldr x10, =cursor
    ldr x11, [x10, x9, lsl #3]
    ldr x12, =rows
    add x12, x12, x9, lsl #10       // 128 results per CPU
    str x0, [x12, x11, lsl #3]
    add x11, x11, #1
    str x11, [x10, x9, lsl #3]
    ldr x30, [sp], #16
    ret

// Run `x0` on every CPU in turn: this one first, then each secondary (CPU_ON), waiting
// for each to finish.
on_each_cpu:
    stp x29, x30, [sp, #-16]!
    stp x19, x20, [sp, #-16]!
    mov x19, x0
    blr x19
    mov x20, #1
1:  mov x0, x20
    mov x1, x19
    bl cpu_on
2:  ldr x9, =finished
    ldr x10, [x9]
    cmp x10, x20
    b.ne 2b
    add x20, x20, #1
    cmp x20, #{CPUS}
    b.ne 1b
    ldp x19, x20, [sp], #16
    ldp x29, x30, [sp], #16
    ret

// Called at the end of each CPU's work on a secondary.
mark_finished:
    ldr x9, =finished
3:  ldaxr x10, [x9]
    add x10, x10, #1
    stlxr w11, x10, [x9]
    cbnz w11, 3b
    ret

.balign 8
cursor: .skip 8 * 8
finished: .quad 0
phase: .skip 8 * 8
handled: .skip 8 * 8
rows: .skip 1024 * 8
"""


def rows(m, n):
    return [[s64(v) for v in m.words("rows", n, offset=1024 * cpu)] for cpu in range(CPUS)]


STATE_MACHINE = COMMON + """
guest_main:
    str x30, [sp, #-16]!
    ldr x0, =state_test
    bl on_each_cpu
    ldr x30, [sp], #16
    ret

state_test:
    stp x29, x30, [sp, #-16]!
    stp x19, x20, [sp, #-16]!
    stp x21, x22, [sp, #-16]!
    mrs x22, mpidr_el1
    and x22, x22, #0xffffff
    and x21, x22, #0xff
    // handler-unregistered
    SD 0xC400002D, SPI                      // INTERRUPT_BIND
    SD 0xC4000028, EV                       // STATUS: 0
    SD 0xC4000022, EV                       // ENABLE
    SD 0xC4000023, EV                       // DISABLE
    SD 0xC4000027, EV                       // UNREGISTER
    SD 0xC400002A, EV, 1                    // ROUTING_SET(RM_PE, self)
    SD 0xC4000024, 0                        // CONTEXT
    SD 0xC4000025, 0                        // COMPLETE
    SD 0xC4000026, state_handler            // COMPLETE_AND_RESUME
    SD 0xC400002E, EV                       // RELEASE: ok
    // handler-registered
    SD 0xC400002D, SPI
    SD 0xC4000021, EV, state_handler, 0, 1  // REGISTER RM_PE to self
    SD 0xC4000028, EV                       // STATUS: 1
    SD 0xC4000021, EV, state_handler, 0, 1
    SD 0xC400002E, EV
    SD 0xC4000024, 0
    SD 0xC4000025, 0
    SD 0xC4000026, state_handler
    SD 0xC4000027, EV
    SD 0xC400002E, EV
    // handler-running (phase 1), then unregister while running (phase 2)
    mov x19, #1
phase_loop:
    ldr x9, =phase
    str x19, [x9, x21, lsl #3]
    SD 0xC400002D, SPI
    SD 0xC4000021, EV, state_handler, 0, 1
    SD 0xC4000022, EV
    SD 0xC400002C                           // PE_UNMASK
    RING SPI                                // the handler runs here
    SD 0xC4000027, EV                       // UNREGISTER: ok after running, DENIED after phase 2
    SD 0xC400002E, EV
    add x19, x19, #1
    cmp x19, #3
    b.ne phase_loop
    // handler-enabled
    SD 0xC400002D, SPI
    SD 0xC4000021, EV, state_handler, 0, 1
    SD 0xC4000022, EV
    SD 0xC4000028, EV                       // STATUS: 3
    SD 0xC4000021, EV, state_handler, 0, 1
    SD 0xC400002E, EV
    SD 0xC400002A, EV, 1
    SD 0xC4000024, 0
    SD 0xC4000025, 0
    SD 0xC4000026, state_handler
    SD 0xC4000027, EV
    SD 0xC400002E, EV
    SD 0xC400002B                           // PE_MASK: 1
    ldp x21, x22, [sp], #16
    ldp x19, x20, [sp], #16
    ldp x29, x30, [sp], #16
    mrs x9, mpidr_el1
    ands x9, x9, #0xff              // a secondary: count it finished
    b.eq 4f
    b mark_finished
4:  ret

state_handler:
    mov x20, x30                            // x18-x30 survive the handler
    mrs x21, mpidr_el1
    and x21, x21, #0xff
    ldr x9, =phase
    ldr x9, [x9, x21, lsl #3]
    cmp x9, #2
    b.eq unregister_running
    SD 0xC4000028, EV                       // STATUS: 7
    SD 0xC4000023, EV                       // DISABLE: ok
    SD 0xC4000028, EV                       // STATUS: 5
    SD 0xC4000021, EV, state_handler, 0, 1
    SD 0xC400002E, EV
    SD 0xC400002A, EV, 1
    b state_handler_done
unregister_running:
    SD 0xC4000027, EV                       // UNREGISTER: PENDING
    SD 0xC4000028, EV                       // STATUS: 4
    SD 0xC4000021, EV, state_handler, 0, 1
    SD 0xC400002E, EV
    SD 0xC4000022, EV
    SD 0xC4000023, EV
    SD 0xC400002A, EV, 1
    SD 0xC4000027, EV                       // again: PENDING
state_handler_done:
    mov x30, x20
    mrs x21, mpidr_el1                      // x21 and x22 as the interrupted code had them
    and x22, x21, #0xffffff
    and x21, x21, #0xff
    ldr x0, =0xC4000025
    mov x1, #0
    hvc #0
"""

STATE_EXPECTED = (
    [S0, 0] + [DENIED] * 7 + [OK]
    + [S0, OK, 1] + [DENIED] * 5 + [OK, OK]
    + [S0, OK, OK, OK, 7, OK, 5, DENIED, DENIED, DENIED, OK, OK]
    + [S0, OK, OK, OK, PENDING, 4] + [DENIED] * 5 + [PENDING, DENIED, OK]
    + [S0, OK, OK, 3] + [DENIED] * 6 + [OK, OK, 1]
)


def test_state_machine_on_every_cpu():
    m = machine(STATE_MACHINE, cpus=CPUS)
    ex = m.run(timeout=30)
    assert ex.reason is ExitReason.SYSTEM_EVENT and ex.vcpu == 0, ex.describe()
    for cpu, row in enumerate(rows(m, len(STATE_EXPECTED))):
        assert row == STATE_EXPECTED, f"CPU {cpu}"


SERIAL = COMMON + """
guest_main:
    str x30, [sp, #-16]!
    ldr x0, =serial_test
    bl on_each_cpu
    mov x22, #0
    SD 0xC400002E, EV                       // finally release the binding
    ldr x30, [sp], #16
    ret

serial_test:
    stp x29, x30, [sp, #-16]!
    stp x21, x22, [sp, #-16]!
    mrs x22, mpidr_el1
    and x22, x22, #0xffffff
    and x21, x22, #0xff
    SD 0xC400002D, SPI
    SD 0xC4000021, EV, sdei_handler, 0xDEADBEEF, 1   // the recording handler, RM_PE to self
    SD 0xC4000022, EV
    SD 0xC400002C
    RING SPI
1:  ldr x9, =handled
    ldr x10, [x9, x21, lsl #3]
    cbz x10, 1b
    SD 0xC400002B
    SD 0xC4000023, EV
    SD 0xC4000027, EV
    ldp x21, x22, [sp], #16
    ldp x29, x30, [sp], #16
    mrs x9, mpidr_el1
    ands x9, x9, #0xff              // a secondary: count it finished
    b.eq 2f
    b mark_finished
2:  ret

// sdei_hook: the handler "cancels the timer" (lowers the SPI) and counts
cancel_and_count:
    ldr x9, =DOORBELL
    ldr x10, =SPI
    str w10, [x9, #4]
    mrs x9, mpidr_el1
    and x9, x9, #0xff
    ldr x10, =handled
    mov x11, #1
    str x11, [x10, x9, lsl #3]
    mov x0, #0
    ret
"""


def test_shared_event_handled_on_all_cores_in_sequence():
    m = machine(SERIAL, cpus=CPUS)
    m.set_word("sdei_policy", RESUME_INTERRUPTED)  # TF-A-Tests' handler leaves by C&R
    m.set_word("sdei_hook", m.sym("cancel_and_count"))
    ex = m.run(timeout=30)
    assert ex.reason is ExitReason.SYSTEM_EVENT, ex.describe()
    for cpu, row in enumerate(rows(m, 7)):
        assert row == [S0, OK, OK, OK, 1, OK, OK], f"CPU {cpu}"
        [rec] = m.records(cpu)
        assert (rec.event, rec.arg, rec.mpidr & 0xFF, rec.status) == (S0, 0xDEADBEEF, cpu, 7)
    assert m.signed("rows", 8)[7] == OK  # the release at the end


PARALLEL = COMMON + f"""
.equ PPI, {PPI}
guest_main:
    str x30, [sp, #-16]!
    mov x19, #1
1:  mov x0, x19
    ldr x1, =parallel_test
    bl cpu_on
    add x19, x19, #1
    cmp x19, #{CPUS}
    b.ne 1b
    bl parallel_test
2:  ldr x9, =finished
    ldr x10, [x9]
    cmp x10, #{CPUS - 1}
    b.ne 2b
    ldr x30, [sp], #16
    ret

parallel_test:
    stp x29, x30, [sp, #-16]!
    stp x21, x22, [sp, #-16]!
    mrs x22, mpidr_el1
    and x22, x22, #0xffffff
    and x21, x22, #0xff
    SD 0xC400002D, PPI                      // the same private event on every CPU
    mov x1, x0
    ldr x2, =sdei_handler
    mov x3, x21
    mov x4, #0
    mov x5, #0
    bl sdei_event_register
    ldr x1, ={P0:#x}
    bl sdei_event_enable
    bl sdei_pe_unmask
    ldr x9, =DOORBELL                       // this CPU's own PPI
    ldr x10, =PPI
    orr x10, x10, x21, lsl #16
    str w10, [x9]
3:  ldr x9, =sdei_ring                      // wait for this CPU's record
    mov x10, #(16 + 32 * 256)
    madd x9, x21, x10, x9
    ldr x10, [x9]
    cbz x10, 3b
    ldp x21, x22, [sp], #16
    ldp x29, x30, [sp], #16
    mrs x9, mpidr_el1
    ands x9, x9, #0xff              // a secondary: count it finished
    b.eq 4f
    b mark_finished
4:  ret
"""


def test_private_event_handled_on_all_cores_in_parallel():
    m = machine(PARALLEL, cpus=CPUS)
    ex = m.run(timeout=30, quantum=200)
    assert ex.reason is ExitReason.SYSTEM_EVENT, ex.describe()
    for cpu in range(CPUS):
        [rec] = m.records(cpu)
        assert (rec.event, rec.arg, rec.mpidr & 0xFF) == (P0, cpu, cpu)
    assert sorted(m.doorbell.rings) == [("raise", PPI, cpu) for cpu in range(CPUS)]  # each its own PPI


SIGNAL_STATE = COMMON + """
guest_main:
    str x30, [sp, #-16]!
    mov x22, #0
    SD 0xC4000021, 0, sdei_handler, 0, 0
    SD 0xC4000022, 0                        // enabled
    SD 0xC400002C                           // unmasked
    SD 0xC400002F, 0, 0                     // SIGNAL(0, self): delivered
    SD 0xC4000023, 0                        // disabled, unmasked
    SD 0xC400002F, 0, 0
    SD 0xC4000022, 0
    SD 0xC400002B                           // enabled, masked
    SD 0xC400002F, 0, 0
    SD 0xC4000023, 0                        // disabled, masked
    SD 0xC400002F, 0, 0
    ldr x30, [sp], #16
    ret
"""


def test_signal_needs_the_event_registered_enabled_and_the_pe_unmasked():
    m = machine(SIGNAL_STATE)
    assert m.run().reason is ExitReason.SYSTEM_EVENT
    assert rows(m, 11)[0] == [OK, OK, OK, OK, OK, INVALID, OK, 1, INVALID, OK, INVALID]
    assert len(m.records(0)) == 1


SIGNAL_SERIAL = COMMON + """
guest_main:
    str x30, [sp, #-16]!
    ldr x0, =signal_self
    bl on_each_cpu
    ldr x30, [sp], #16
    ret

signal_self:
    stp x29, x30, [sp, #-16]!
    stp x21, x22, [sp, #-16]!
    mrs x22, mpidr_el1
    and x22, x22, #0xffffff
    and x21, x22, #0xff
    SD 0xC4000021, 0, sdei_handler, 0x5E1F, 0
    SD 0xC4000022, 0
    SD 0xC400002C
    mov x0, #0xC400002F & 0xffff
    movk x0, #0xC400, lsl #16
    mov x1, #0
    mov x2, x22
    bl sdei_call_rec                        // SIGNAL(0, own MPIDR)
    ldp x21, x22, [sp], #16
    ldp x29, x30, [sp], #16
    mrs x9, mpidr_el1
    ands x9, x9, #0xff              // a secondary: count it finished
    b.eq 1f
    b mark_finished
1:  ret
"""


def test_each_core_signals_itself():
    m = machine(SIGNAL_SERIAL, cpus=CPUS)
    assert m.run(timeout=30).reason is ExitReason.SYSTEM_EVENT
    for cpu, row in enumerate(rows(m, 4)):
        assert row == [OK, OK, OK, OK]
        [rec] = m.records(cpu)
        assert (rec.event, rec.arg, rec.mpidr & 0xFF) == (0, 0x5E1F, cpu)


SIGNAL_ALL = COMMON + f"""
guest_main:
    str x30, [sp, #-16]!
    mov x19, #1
1:  mov x0, x19
    ldr x1, =wait_for_signal
    bl cpu_on
    add x19, x19, #1
    cmp x19, #{CPUS}
    b.ne 1b
2:  ldr x9, =handled                        // all secondaries ready
    ldr x10, [x9, #56]
    cmp x10, #{CPUS - 1}
    b.ne 2b
    mov x22, #0
    mov x19, #1
3:  mov x0, #0xC400002F & 0xffff
    movk x0, #0xC400, lsl #16
    mov x1, #0
    mov x2, x19
    bl sdei_call_rec                        // SIGNAL(0, secondary MPIDR)
    add x19, x19, #1
    cmp x19, #{CPUS}
    b.ne 3b
4:  ldr x9, =finished
    ldr x10, [x9]
    cmp x10, #{CPUS - 1}
    b.ne 4b
    ldr x30, [sp], #16
    ret

wait_for_signal:
    stp x29, x30, [sp, #-16]!
    stp x21, x22, [sp, #-16]!
    mrs x22, mpidr_el1
    and x22, x22, #0xffffff
    and x21, x22, #0xff
    SD 0xC4000021, 0, sdei_handler, 0xA11, 0
    SD 0xC4000022, 0
    SD 0xC400002C
    ldr x9, =handled
    add x9, x9, #56
5:  ldaxr x10, [x9]
    add x10, x10, #1
    stlxr w11, x10, [x9]
    cbnz w11, 5b
6:  ldr x9, =sdei_ring                      // wait for this CPU's record
    mov x10, #(16 + 32 * 256)
    madd x9, x21, x10, x9
    ldr x10, [x9]
    cbz x10, 6b
    ldp x21, x22, [sp], #16
    ldp x29, x30, [sp], #16
    b mark_finished
"""


def test_one_core_signals_all_others():
    m = machine(SIGNAL_ALL, cpus=CPUS)
    assert m.run(timeout=30).reason is ExitReason.SYSTEM_EVENT
    assert rows(m, CPUS - 1)[0] == [OK] * (CPUS - 1)
    assert m.records(0) == []
    for cpu in range(1, CPUS):
        [rec] = m.records(cpu)
        assert (rec.event, rec.arg, rec.mpidr & 0xFF) == (0, 0xA11, cpu)


RM_ANY = COMMON + f"""
.equ TRIGGERS, 12
guest_main:
    str x30, [sp, #-16]!
    mov x22, #0
    SD 0xC400002D, SPI
    SD 0xC4000021, EV, count_handler, 0, 0  // RM_ANY
    SD 0xC4000022, EV
    mov x19, #1
1:  mov x0, x19
    ldr x1, =unmask_and_wait
    bl cpu_on
    add x19, x19, #1
    cmp x19, #{CPUS}
    b.ne 1b
    SD 0xC400002C
2:  ldr x9, =finished                       // all secondaries unmasked
    ldr x10, [x9]
    cmp x10, #{CPUS - 1}
    b.ne 2b
    mov x19, #0
3:  RING SPI                                // trigger, then wait until it is handled
    add x19, x19, #1
4:  ldr x9, =handled
    ldr x10, [x9, #56]
    cmp x10, x19
    b.ne 4b
    cmp x19, #TRIGGERS
    b.ne 3b
    ldr x9, =finished
    mov x10, #0xff
    str x10, [x9, #8]                       // release the secondaries
    ldr x30, [sp], #16
    ret

unmask_and_wait:
    str x30, [sp, #-16]!
    bl sdei_pe_unmask
    bl mark_finished
5:  ldr x9, =finished
    ldr x10, [x9, #8]
    cbz x10, 5b
    ldr x30, [sp], #16
    ret

count_handler:                              // handled[cpu]++, handled[7]++ (the total)
    mrs x9, mpidr_el1
    and x9, x9, #0xff
    ldr x10, =handled
    ldr x11, [x10, x9, lsl #3]
    add x11, x11, #1
    str x11, [x10, x9, lsl #3]
    ldr x11, [x10, #56]
    add x11, x11, #1
    str x11, [x10, #56]
    ldr x0, =0xC4000025
    mov x1, #0
    hvc #0
"""


def test_rm_any_event_goes_to_every_cpu_and_never_twice():
    m = machine(RM_ANY, cpus=CPUS)
    seen = []
    m.vm.observers.append(lambda e: seen.append(e.vcpu) if e.kind == "sdei_dispatch" else None)
    assert m.run(timeout=30, quantum=500).reason is ExitReason.SYSTEM_EVENT
    handled = m.words("handled", 8)
    assert handled[7] == 12 == sum(handled[:CPUS])  # triggers == handled: no duplicates
    assert all(handled[cpu] >= 1 for cpu in range(CPUS))
    assert len(seen) == 12


PSTATE = COMMON + """
.equ SPAN, 1 << 23
guest_main:
    str x30, [sp, #-16]!
    mov x22, #0
    SD 0xC4000021, 0, sdei_handler, 0, 0
    SD 0xC4000022, 0
    SD 0xC400002C
    mov x19, #0
pstate_case:                                // x19 bit 0 = SPAN, bit 1 = the interrupted PAN
    mrs x9, sctlr_el1
    bic x9, x9, #SPAN
    tst x19, #1
    b.eq 1f
    orr x9, x9, #SPAN
1:  msr sctlr_el1, x9
    msr s3_0_c4_c2_3, xzr                   // PAN = 0
    tst x19, #2
    b.eq 2f
    mov x9, #(1 << 22)
    msr s3_0_c4_c2_3, x9                    // PAN = 1
2:  msr daifclr, #0xf                       // the interrupted code has D, A, I, F clear
    ldr x0, =0xC6000000                     // let the host set DIT (Unicorn cannot: no DIT register)
    mov x1, x19
    hvc #0
    mov x0, #0xC400002F & 0xffff
    movk x0, #0xC400, lsl #16
    mov x1, #0
    mov x2, #0
    bl sdei_call
    msr daifset, #0xf
    add x19, x19, #1
    cmp x19, #8
    b.ne pstate_case
    ldr x30, [sp], #16
    ret

// sdei_hook: show the host the handler's PSTATE (a forwarded hypercall)
report_pstate:
    ldr x0, =0xC6000001
    hvc #0
    mov x0, #0
    ret
"""


def test_handler_pstate_follows_take_exception():
    from sandbox.arch import pstate as ps
    from sandbox.hyp.filter import FilterAction
    m = machine(PSTATE)
    m.vm.set_smccc_filter(0xC6000000, 2, FilterAction.FWD_TO_USER)
    m.set_word("sdei_hook", m.sym("report_pstate"))
    v = m.vm.vcpus[0]
    handler_pstates = []
    while True:
        ex = m.run()
        if ex.reason is ExitReason.SYSTEM_EVENT:
            break
        assert ex.reason is ExitReason.HYPERCALL
        if ex.hypercall.nr == 0xC6000000:  # before the signal: case x1
            case = v.reg("x1")
            dit = case >= 4
            ex.hypercall.ret[:] = [0, case, 0, 0]
            v.set_reg("pstate", (v.reg("pstate") & ~ps.DIT) | (ps.DIT if dit else 0))
        else:
            handler_pstates.append(v.reg("pstate"))
    recs = m.records(0)
    assert len(recs) == len(handler_pstates) == 8
    for case, (rec, live) in enumerate(zip(recs, handler_pstates)):
        span, pan, dit = case & 1, bool(case & 2), case >= 4
        assert rec.pstate & 0x3C0 == 0x3C0  # D, A, I, F masked
        assert rec.pstate & 0xF == 0b0101  # EL1h: SPSel = 1
        assert bool(rec.interrupted_pstate & ps.PAN) == pan and not rec.interrupted_pstate & ps.DAIF
        assert bool(rec.pstate & ps.PAN) == (pan if span else True)  # SPAN = 0: PAN set on entry
        assert bool(live & ps.DIT) == dit == bool(rec.interrupted_pstate & ps.DIT)  # DIT kept
        assert live & 0xFFFFFFFF & ~ps.DIT == rec.pstate


BIND_FAILURE = COMMON + """
guest_main:
    str x30, [sp, #-16]!
    mov x22, #0
    mov x19, #16
1:  mov x0, #0xC400002D & 0xffff
    movk x0, #0xC400, lsl #16
    mov x1, x19
    bl sdei_call_rec                        // INTERRUPT_BIND(PPI)
    add x19, x19, #1
    cmp x19, #32
    b.ne 1b
    SD 0xC4000020                           // the dispatcher still answers
    ldr x30, [sp], #16
    ret
"""


def test_binding_more_ppis_than_slots_fails_cleanly():
    m = machine(BIND_FAILURE)
    assert m.run().reason is ExitReason.SYSTEM_EVENT
    r = rows(m, 17)[0]
    assert r[:3] == [P0, P0 + 1, P0 + 2]
    assert r[3:16] == [OUT_OF_RESOURCE] * 13
    assert r[16] == (1 << 48) | (1 << 32) | 0x4B564D
