"""SDEI dispatch as reference/sdei.md section 3 has it: handler registers and PSTATE, context
saved per nesting level, COMPLETE bit-exact, COMPLETE_AND_RESUME like a synchronous
exception, critical over normal; and the host side: injection, interrupts, quirks, observers."""

import pytest

from sandbox import ExitReason, Vm
from sandbox.arch import pstate as ps
from sandbox.hyp.filter import FilterAction
from sandbox.hyp.sdei_abi import DYNAMIC_PRIVATE_BASE
from sandbox.sdei_client import READ_CONTEXT, RESUME_ADDRESS

from guest_lib import DOORBELL, RecordingController, machine, s64

NORMAL, CRITICAL = 0x400010, 0x400020
P0 = DYNAMIC_PRIVATE_BASE

SPIN = """
// Register NORMAL (recording handler, arg 0x77) and CRITICAL, enable, unmask, load
// distinctive x0-x17 and flags, then spin on one instruction for the host to inject.
guest_main:
    ldr x1, =0x400010
    mov x3, #0x77
    mov x4, #0
    mov x5, #0
    bl sdei_register_recorder
    ldr x1, =0x400010
    bl sdei_event_enable
    ldr x1, =0x400020
    mov x3, #0xCC
    mov x4, #0
    mov x5, #0
    bl sdei_register_recorder
    ldr x1, =0x400020
    bl sdei_event_enable
    bl sdei_pe_unmask
    LOAD_REGS
    SET_FLAGS
spin:
    b spin
"""
LOAD = "\n".join(f"    ldr x{i}, ={0x1111_0000_0000_0000 * (i % 15 + 1) + i:#x}" for i in range(18))


def spin_machine(*, flags="mov x9, #0x60000000\n    msr nzcv, x9", el0=False, **kw):
    src = SPIN.replace("LOAD_REGS", LOAD if not el0 else "").replace("SET_FLAGS", flags if not el0 else "")
    if el0:
        src = src.replace("spin:\n    b spin", """    ldr x0, =task
    ldr x1, =el0_stack_top
    b enter_el0
task:
""" + LOAD + """
    mov x9, #0x90000000
    msr nzcv, x9
spin:
    b spin""")
    m = machine(src, **kw)
    for num, crit in ((NORMAL, False), (CRITICAL, True)):
        m.vm.sdei.expose(num, critical=crit)
    return m


def run_to_spin(m, budget=4000):
    v = m.vm.vcpus[0]
    ex = v.run(max_instructions=budget)
    assert ex.reason is ExitReason.INSTRUCTION_BUDGET and ex.pc == m.sym("spin"), ex.describe()
    return v


def test_complete_restores_the_interrupted_context_bit_for_bit():
    m = spin_machine()
    m.set_word("sdei_flags", READ_CONTEXT)
    v = run_to_spin(m)
    before = v.regs()
    m.vm.sdei.inject_event(v, NORMAL)
    ex = v.run(max_instructions=3000)
    assert ex.reason is ExitReason.INSTRUCTION_BUDGET and ex.pc == m.sym("spin")
    assert v.regs() == before  # x0-x30, SP_EL0/SP_EL1, PC and PSTATE (NZCV) exactly as they were
    [rec] = m.records()
    assert (rec.event, rec.arg, rec.interrupted_pc, rec.interrupted_pstate) == (NORMAL, 0x77, before["pc"],
                                                                                before["pstate"])
    assert list(rec.context) == [before[f"x{i}"] for i in range(18)]  # EVENT_CONTEXT(0..17)
    assert rec.status == 7
    assert rec.pstate == (before["pstate"] & ps.NZCV) | ps.DAIF | ps.EL1H  # SPAN=1 here: PAN kept (0)


def test_handler_gets_event_arg_pc_pstate_in_x0_to_x3_and_keeps_x4_to_x17():
    m = spin_machine()
    v = run_to_spin(m)
    before = v.regs()
    m.vm.sdei.inject_event(v, NORMAL)
    assert v.run(max_instructions=1).reason is ExitReason.INSTRUCTION_BUDGET
    assert v.reg("pc") == m.sym("sdei_handler") + 4  # its first instruction (sub sp) ran
    regs = v.regs()
    assert [regs["x0"], regs["x1"], regs["x2"], regs["x3"]] == [NORMAL, 0x77, before["pc"], before["pstate"]]
    assert [regs[f"x{i}"] for i in range(4, 18)] == [before[f"x{i}"] for i in range(4, 18)]  # as TF-A


def test_dispatch_from_el0_uses_the_el1_stack_and_returns_to_el0_exactly():
    m = spin_machine(el0=True)
    v = run_to_spin(m)
    before = v.regs()
    assert before["pstate"] & 0xF == ps.EL0T
    m.vm.sdei.inject_event(v, NORMAL)
    assert v.run(max_instructions=3000).reason is ExitReason.INSTRUCTION_BUDGET
    assert v.regs() == before
    [rec] = m.records()
    assert rec.interrupted_pstate & 0xF == ps.EL0T and rec.pstate & 0xF == ps.EL1H
    assert m.sym("kstack_bottom") <= rec.sp < m.sym("kstack_top")  # SP_EL1, not the EL0 stack


def test_complete_and_resume_enters_the_address_like_a_synchronous_exception():
    m = spin_machine(flags="mov x9, #0x20000000\n    msr nzcv, x9")
    m.vm.write_memory(m.sym("sdei_resume_address"), m.sym("resumed").to_bytes(8, "little"))
    m.set_word("sdei_policy", RESUME_ADDRESS)
    v = run_to_spin(m)
    before = v.regs()
    m.vm.sdei.inject_event(v, NORMAL)
    ex = v.run()
    assert ex.reason is ExitReason.SYSTEM_EVENT, ex.describe()
    got = m.words("resume_record", 5)
    assert got[0] == before["pc"]  # ELR_EL1 = the interrupted PC
    assert got[1] == before["pstate"]  # SPSR_EL1 = the interrupted PSTATE
    assert got[2] == (before["pstate"] & ps.NZCV) | ps.DAIF | ps.EL1H  # PSTATE per TakeException
    assert got[3:5] == [before["x0"], before["x17"]]  # x0-x17 restored
    assert m.vm.vcpus[0].reg("ESR_EL1") == 0  # not a real exception: no syndrome written


RESUMED = """
resumed:
    ldr x20, =resume_record
    mrs x21, elr_el1
    mrs x22, spsr_el1
    stp x21, x22, [x20]
    mrs x21, nzcv
    mrs x22, daif
    orr x21, x21, x22
    mrs x22, currentel
    orr x21, x21, x22
    mrs x22, spsel
    orr x21, x21, x22
    str x21, [x20, #16]
    stp x0, x17, [x20, #24]
    b guest_halt
.balign 8
resume_record: .skip 40
"""
SPIN = SPIN + RESUMED


def test_complete_and_resume_refuses_an_address_outside_ram():
    m = spin_machine()
    m.vm.write_memory(m.sym("sdei_resume_address"), (0x10000).to_bytes(8, "little"))
    m.set_word("sdei_policy", RESUME_ADDRESS)
    v = run_to_spin(m)
    m.vm.sdei.inject_event(v, NORMAL)
    assert v.run().reason is ExitReason.SYSTEM_EVENT
    assert s64(m.word("sdei_complete_error")) == -3  # DENIED; the handler was still running


NESTING = """
guest_main:
    str x30, [sp, #-16]!
    mov x1, #0
    ldr x2, =handler_normal
    mov x3, #0
    mov x4, #0
    mov x5, #0
    bl sdei_event_register
    mov x1, #0
    bl sdei_event_enable
    ldr x1, =0x400020
    ldr x2, =handler_critical
    mov x3, #0
    mov x4, #0
    mov x5, #0
    bl sdei_event_register
    ldr x1, =0x400020
    bl sdei_event_enable
    bl sdei_pe_unmask
    mov x1, #0
    mov x2, #0
    bl sdei_event_signal        // handler_normal runs after this call
    mov x0, #'M'
    bl log
    ldr x30, [sp], #16
    ret

// log(x0): append x0 and the x2 the handler was entered with to the log
log:
    ldr x9, =log_count
    ldr x10, [x9]
    ldr x11, =log_entries
    add x11, x11, x10, lsl #4
    stp x0, x19, [x11]
    add x10, x10, #1
    str x10, [x9]
    ret

handler_normal:
    mov x20, x30
    mov x19, x2
    mov x0, #'n'
    bl log
    ldr x0, =0xC6000000         // the host injects a critical event here
    hvc #0
    ldr x0, =0xC6000001         // ... and here a critical and a normal one
    hvc #0
    mov x1, #0
    bl sdei_event_context
    mov x19, x0
    mov x0, #'N'
    bl log
    mov x30, x20
    ldr x0, =0xC4000025
    mov x1, #0
    hvc #0

handler_critical:
    mov x21, x30
    mov x19, x2
    mov x0, #'c'
    bl log
    ldr x0, =0xC6000002         // the host injects a normal and a critical one: neither preempts
    hvc #0
    mov x0, #'C'
    bl log
    mov x30, x21
    ldr x0, =0xC4000025
    mov x1, #0
    hvc #0
.balign 8
log_count: .quad 0
log_entries: .skip 16 * 32
"""


def test_critical_preempts_normal_and_nothing_else_preempts():
    m = machine(NESTING)
    m.vm.sdei.expose(CRITICAL, critical=True)
    m.vm.set_smccc_filter(0xC6000000, 3, FilterAction.FWD_TO_USER)
    v = m.vm.vcpus[0]
    # what the host injects at each forwarded call, the first time it is made
    injections = {0xC6000000: [CRITICAL], 0xC6000001: [CRITICAL, 0], 0xC6000002: [0, CRITICAL]}
    states = []
    while True:
        ex = m.run()
        if ex.reason is ExitReason.SYSTEM_EVENT:
            break
        assert ex.reason is ExitReason.HYPERCALL, ex.describe()
        st = m.vm.sdei.get_vcpu_state(v)
        states.append((ex.hypercall.nr, st.normal_num, st.critical_num))
        for num in injections.pop(ex.hypercall.nr, []):
            m.vm.sdei.inject_event(v, num)
    log = [(chr(a), b) for a, b in zip(*[iter(m.words("log_entries", 2 * m.word("log_count")))] * 2)]
    kinds = "".join(k for k, _ in log)
    # n: normal runs; c: the injected critical preempts it; the critical's own injections wait
    # (C); back in the normal handler the pending critical preempts again at once; the normal
    # instances (injected twice: two runs) wait until the first normal handler completes.
    assert kinds == "ncCcCcCNnNnNM", kinds
    handler_n, handler_c = m.sym("handler_normal"), m.sym("handler_critical")
    assert all(handler_n <= b < handler_c for k, b in log if k == "c")  # x2: inside the normal handler
    none = 0xFFFFFFFF  # KVM_SDEI_INVALID_EVENT
    assert states[0] == (0xC6000000, 0, none)
    assert states[1] == (0xC6000002, 0, CRITICAL)  # normal below, critical on top
    assert [s for s in states if s[0] == 0xC6000002] == [(0xC6000002, 0, CRITICAL)] * 3


def test_host_injection_while_masked_stays_pending_until_unmask():
    m = machine("""
guest_main:
    str x30, [sp, #-16]!
    ldr x1, =0x400010
    mov x3, #1
    mov x4, #0
    mov x5, #0
    bl sdei_register_recorder
    ldr x1, =0x400010
    bl sdei_event_enable
    ldr x0, =0xC6000000         // the host injects while the PE is masked
    hvc #0
    ldr x9, =sdei_ring
    ldr x19, [x9]               // records so far: none
unmask:
    bl sdei_pe_unmask
    ldr x9, =sdei_ring
    ldr x20, [x9]
    ldr x9, =out
    stp x19, x20, [x9]
    ldr x30, [sp], #16
    ret
.balign 8
out: .quad 9, 9
""")
    m.vm.sdei.expose(NORMAL)
    m.vm.set_smccc_filter(0xC6000000, 1, FilterAction.FWD_TO_USER)
    v = m.vm.vcpus[0]
    assert m.run().reason is ExitReason.HYPERCALL
    m.vm.sdei.inject_event(v, NORMAL)
    assert m.vm.sdei.get_vcpu_events(v)[0].num == NORMAL
    assert m.run().reason is ExitReason.SYSTEM_EVENT
    assert m.words("out", 2) == [0, 1]
    [rec] = m.records()
    assert rec.interrupted_pc == m.sym("sdei_call") + 16  # right after the HVC of PE_UNMASK


def test_bound_ppi_raised_by_the_host_is_dispatched_on_its_vcpu_and_lower_withdraws_it():
    m = machine(f"""
guest_main:
    mov x0, #1
    ldr x1, =secondary
    bl cpu_on
1:  ldr x9, =ready
    ldr x10, [x9]
    cbz x10, 1b
    ldr x0, =0xC6000000         // host: raise the PPI of vCPU 1
    hvc #0
2:  ldr x9, =sdei_ring + {16 + 32 * 256}
    ldr x10, [x9]
    cbz x10, 2b
    b guest_halt
secondary:
    str x30, [sp, #-16]!
    mov x1, #20
    bl sdei_interrupt_bind
    mov x1, x0
    mov x3, #0x20
    mov x4, #0
    mov x5, #0
    bl sdei_register_recorder
    ldr x1, ={P0:#x}
    bl sdei_event_enable
    bl sdei_pe_unmask
    ldr x9, =ready
    mov x10, #1
    str x10, [x9]
3:  wfi
    b 3b
.balign 8
ready: .quad 0
""", cpus=2)
    gic = m.vm.interrupt_controller = RecordingController()
    m.vm.set_smccc_filter(0xC6000000, 1, FilterAction.FWD_TO_USER)
    assert m.run().reason is ExitReason.HYPERCALL
    m.vm.raise_interrupt(20, mpidr=0)  # vCPU 0 registered nothing: the interrupt controller's
    m.vm.raise_interrupt(20, mpidr=1)
    m.vm.lower_interrupt(20, mpidr=1)  # withdrawn before vCPU 1 ran
    assert m.vm.sdei.get_vcpu_events(m.vm.vcpus[1]) == []
    m.vm.raise_interrupt(20, mpidr=1)
    assert m.run().reason is ExitReason.SYSTEM_EVENT
    [rec] = m.records(1)
    assert (rec.event, rec.arg, rec.mpidr & 0xFF) == (P0, 0x20, 1)
    assert m.records(0) == []
    assert gic.seen == [("raise", 20, 0)]
    with pytest.raises(OSError) as e:
        m.vm.raise_interrupt(20, mpidr=7)
    assert e.value.errno == 22
    m.vm.interrupt_controller = None
    with pytest.raises(OSError) as e:
        m.vm.raise_interrupt(33)
    assert e.value.errno == 6  # ENXIO: nothing could take it


def test_device_raised_event_after_a_pc_writing_exception_runs_each_instruction_once():
    m = machine(f"""
guest_main:
    str x30, [sp, #-16]!
    mov x1, #40
    bl sdei_interrupt_bind
    mov x1, x0
    mov x3, #0
    mov x4, #0
    mov x5, #0
    bl sdei_register_recorder
    mov x1, #0x7d0
    movk x1, #0x40, lsl #16
    bl sdei_event_enable
    bl sdei_pe_unmask
    mov x20, #0
    mov x9, #{DOORBELL:#x}
    mov x10, #40
    svc #1                      // an exception entry earlier in the same run (ELR+0: returns here)
    add x20, x20, #1
    add x20, x20, #1
ring:
    str w10, [x9]
    add x20, x20, #1
    ldr x9, =out
    str x20, [x9]
    ldr x30, [sp], #16
    ret
.balign 8
out: .quad 0
""")
    assert m.run().reason is ExitReason.SYSTEM_EVENT
    assert m.word("out") == 3
    assert m.doorbell.rings == [("raise", 40, 0)]
    [rec] = m.records()
    assert rec.interrupted_pc == m.sym("ring") + 4


def test_observers_see_dispatch_and_completion():
    m = spin_machine()
    v = run_to_spin(m)
    seen = []
    m.vm.observers.append(lambda e: seen.append(e) if e.kind.startswith("sdei") else None)
    m.vm.sdei.inject_event(v, NORMAL)
    v.run(max_instructions=3000)
    p, d, c = seen
    assert (p.kind, p.data["event"], p.data["where"], p.data["change"], p.data["pending"]) == (
        "sdei_pend", NORMAL, 0, 1, 1)
    spin = m.sym("spin")
    assert (d.kind, d.vcpu, d.data["event"], d.data["interrupted_pc"], d.data["handler"], d.data["arg"]) == (
        "sdei_dispatch", 0, NORMAL, spin, m.sym("sdei_handler"), 0x77)
    assert (c.kind, c.data["event"], c.data["interrupted_pc"], c.data["how"]) == ("sdei_complete", NORMAL, spin,
                                                                                "complete")
    assert d.data["interrupted_pstate"] == c.data["interrupted_pstate"]


# -- quirks -------------------------------------------------------------------------------------

def _resume_vector(quirks, el0=False):
    m = spin_machine(quirks=quirks, el0=el0)
    m.vm.write_memory(m.sym("sdei_resume_address"), m.sym("resumed").to_bytes(8, "little"))
    m.set_word("sdei_policy", RESUME_ADDRESS)
    v = run_to_spin(m)
    m.vm.sdei.inject_event(v, NORMAL)
    ex = v.run(max_instructions=5000)  # `resumed` powers off; the IRQ vector returns to the spin
    return m, ex


def test_quirk_resume_injects_irq_takes_the_irq_vector_instead_of_the_address():
    m, ex = _resume_vector(())
    assert m.vm.exception_records(m.program) == [] and m.word("resume_record") == m.sym("spin")
    m, ex = _resume_vector(("sdei-resume-injects-irq",))
    [rec] = m.vm.exception_records(m.program)
    assert (rec.vector, rec.elr, rec.spsr & 0xF) == (0x280, m.sym("spin"), ps.EL1H)  # IRQ, current EL SPx
    assert m.word("resume_record") == 0  # `resumed` never ran
    m, ex = _resume_vector(("sdei-resume-injects-irq",), el0=True)
    [rec] = m.vm.exception_records(m.program)
    assert (rec.vector, rec.elr, rec.spsr & 0xF) == (0x480, m.sym("spin"), ps.EL0T)  # IRQ from AArch64 EL0


def _handler_pstate(quirks):
    m = spin_machine(quirks=quirks, flags="""mov x9, #0x60000000
    msr nzcv, x9
    mrs x9, sctlr_el1
    bic x9, x9, #(1 << 23)      // SPAN = 0: PAN is set on exception entry
    msr sctlr_el1, x9""")
    v = run_to_spin(m)
    m.vm.sdei.inject_event(v, NORMAL)
    v.run(max_instructions=3000)
    [rec] = m.records()
    return rec


def test_quirk_entry_pstate_daif_only_leaves_pan_clear_and_changes_nothing_else():
    fixed, buggy = _handler_pstate(()), _handler_pstate(("sdei-entry-pstate-daif-only",))
    assert fixed.interrupted_pstate == buggy.interrupted_pstate
    assert not fixed.interrupted_pstate & ps.PAN
    assert fixed.pstate & ps.PAN and not buggy.pstate & ps.PAN
    assert fixed.pstate & ~ps.PAN == buggy.pstate & ~ps.PAN  # NZCV, DAIF, EL1h identical


SIGNAL_TO_MASKED = """
guest_main:
    str x30, [sp, #-16]!
    mov x1, #0
    mov x3, #5
    mov x4, #0
    mov x5, #0
    bl sdei_register_recorder
    mov x1, #0
    bl sdei_event_enable
    mov x1, #0
    mov x2, #0
    bl sdei_event_signal        // the PE is still masked
    ldr x9, =out
    str x0, [x9]
    bl sdei_pe_unmask           // with the quirk the signal was kept: it is taken now
    ldr x30, [sp], #16
    ret
.balign 8
out: .quad 0
"""


def test_quirk_signal_unchecked_accepts_a_masked_target():
    fixed = machine(SIGNAL_TO_MASKED)
    assert fixed.run().reason is ExitReason.SYSTEM_EVENT
    assert s64(fixed.word("out")) == -2 and fixed.records() == []
    buggy = machine(SIGNAL_TO_MASKED, quirks=("sdei-signal-unchecked",))
    assert buggy.run().reason is ExitReason.SYSTEM_EVENT
    assert buggy.word("out") == 0
    [rec] = buggy.records()
    assert rec.event == 0 and rec.arg == 5


def test_inject_event_errors():
    vm = Vm()
    v = vm.create_vcpu()
    with pytest.raises(OSError) as e:
        vm.sdei.inject_event(v, 0x400099)
    assert e.value.errno == 2  # ENOENT
    with pytest.raises(OSError) as e:
        vm.sdei.inject_event(v, 0)
    assert e.value.errno == 1  # EPERM: not registered and enabled on this vCPU


def test_budgets_count_a_device_stopped_instruction_once():
    src = f"""
guest_main:
    str x30, [sp, #-16]!
    mov x1, #40
    bl sdei_interrupt_bind
    mov x1, x0
    mov x3, #0
    mov x4, #0
    mov x5, #0
    bl sdei_register_recorder
    mov x1, #0x7d0
    movk x1, #0x40, lsl #16
    bl sdei_event_enable
    bl sdei_pe_unmask
    mov x9, #{DOORBELL:#x}
    mov x10, #40
    mov x20, #0
    str w10, [x9]               // the event is taken right after this store
    add x20, x20, #1
    ldr x30, [sp], #16
    ret
"""

    def total(budget):
        m = machine(src)
        v, n = m.vm.vcpus[0], 0
        while True:
            ex = v.run(max_instructions=budget)
            n += ex.instructions
            if ex.reason is not ExitReason.INSTRUCTION_BUDGET:
                assert ex.reason is ExitReason.SYSTEM_EVENT and v.reg("x20") == 1 and len(m.records()) == 1
                return n
    assert total(1) == total(5) == total(10_000)


SHARED_ROUTING = f"""
.equ EV, {0x4007D0:#x}
guest_main:
    str x30, [sp, #-16]!
    mov x19, #1
1:  mov x0, x19                 // CPUs 1 and 2 unmask and wait
    ldr x1, =unmask_and_wait
    bl cpu_on
    add x19, x19, #1
    cmp x19, #3
    b.ne 1b
2:  ldr x9, =ready
    ldr x10, [x9]
    cmp x10, #2
    b.ne 2b
    mov x1, #40
    bl sdei_interrupt_bind
    ldr x1, =EV
    mov x3, #0x5A
    mov x4, #1                  // RM_PE
    mov x5, #2                  // to CPU 2
    bl sdei_register_recorder
    ldr x1, =EV
    bl sdei_event_enable
    bl ring_and_wait            // taken on CPU 2
    ldr x1, =EV
    bl sdei_event_disable
    ldr x1, =EV
    mov x2, #1
    mov x3, #1                  // now to CPU 1
    bl sdei_event_routing_set
    ldr x9, =out
    str x0, [x9]
    ldr x1, =EV
    bl sdei_event_enable
    bl ring_and_wait            // taken on CPU 1
    ldr x30, [sp], #16
    ret

ring_and_wait:                  // raise SPI 40, wait for one more record on CPU 1 or 2
    ldr x14, =handled
    ldr x15, [x14]
    ldr x9, ={DOORBELL:#x}
    mov x10, #40
    str w10, [x9]
ring_wait:
    ldr x9, =sdei_ring
    ldr x11, ={16 + 32 * 256:#x}
    ldr x12, [x9, x11]
    add x11, x11, x11
    ldr x13, [x9, x11]
    add x12, x12, x13
    cmp x12, x15
    b.eq ring_wait
    str x12, [x14]
    ret

unmask_and_wait:
    str x30, [sp, #-16]!
    bl sdei_pe_unmask
    ldr x9, =ready
3:  ldaxr x10, [x9]
    add x10, x10, #1
    stlxr w11, x10, [x9]
    cbnz w11, 3b
4:  wfi
    b 4b
.balign 8
ready: .quad 0
handled: .quad 0
out: .quad 9
"""


def test_shared_event_follows_its_rm_pe_affinity_and_routing_set():
    m = machine(SHARED_ROUTING, cpus=3)
    assert m.run(timeout=20).reason is ExitReason.SYSTEM_EVENT
    assert m.word("out") == 0  # ROUTING_SET while registered and disabled
    assert m.records(0) == []
    [on2] = m.records(2)
    [on1] = m.records(1)
    assert (on2.event, on2.arg, on2.mpidr & 0xFF) == (0x4007D0, 0x5A, 2)
    assert (on1.event, on1.mpidr & 0xFF) == (0x4007D0, 1)
