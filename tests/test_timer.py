"""The generic timer on deterministic time: the counter is retired instructions
(TICKS_PER_INSTRUCTION each) at CNTFRQ 62.5 MHz, the virtual and physical timers fire their
PPIs at the instruction where the compare value is reached, and a run replays exactly."""

from sandbox import ExitReason, Vm
from sandbox.timer import CNTFRQ_HZ, TICKS_PER_INSTRUCTION

from virt_guest import virt_boot

VIRQ, PIRQ = 27, 30

SETUP = """
    mov x29, x30
    ldr x0, =irq_vectors
    msr vbar_el1, x0
    bl gic_init
    mov x0, #{intid}
    mov x1, #0xa0
    bl gic_enable
    ldr x0, =irq_action
    ldr x1, =timer_off
    str x1, [x0]
    mov x30, x29
"""

TIMER_OFF = """
timer_off:                   // the handler: mask the timer's output (as Linux does)
    mov x1, #3               // ENABLE | IMASK
    msr cntv_ctl_el0, x1
    msr cntp_ctl_el0, xzr
    ret
"""


def u64s(r, name, n):
    raw = r.vm.read_memory(r.sym(name), 8 * n)
    return [int.from_bytes(raw[8 * i:8 * i + 8], "little") for i in range(n)]


def test_counter_counts_retired_instructions_and_cntfrq_is_62_5_mhz():
    r = virt_boot("""
guest_main:
    mrs x1, cntvct_el0
    nop
    nop
    nop
    mrs x2, cntvct_el0
    mrs x3, cntpct_el0
    mrs x4, cntfrq_el0
    ldr x0, =seen
    stp x1, x2, [x0]
    stp x3, x4, [x0, #16]
    ret
.balign 8
seen: .skip 32
""")
    assert r.exit.reason is ExitReason.SYSTEM_EVENT
    v1, v2, p, frq = u64s(r, "seen", 4)
    assert v2 - v1 == 4 * TICKS_PER_INSTRUCTION  # three NOPs and the first MRS retired in between
    assert p - v2 == 1 * TICKS_PER_INSTRUCTION  # CNTVOFF is 0
    assert frq == CNTFRQ_HZ == 62_500_000


def test_virtual_timer_fires_at_the_instruction_where_cval_is_reached():
    r = virt_boot("guest_main:\n" + SETUP.format(intid=VIRQ) + """
    mrs x1, cntvct_el0
    add x1, x1, #100
    msr cntv_cval_el0, x1
    ldr x0, =cval
    str x1, [x0]
    mov x2, #1               // ENABLE
    msr cntv_ctl_el0, x2
    msr daifclr, #2
    mov x3, #0
spin:
    add x3, x3, #1
    cmp x3, #1000
    b.ne spin
    msr daifset, #2
    ret
""" + TIMER_OFF + """
.balign 8
cval: .quad 0
""")
    assert r.exit.reason is ExitReason.SYSTEM_EVENT
    [irq] = r.irqs
    cval = r.u64("cval")
    assert irq.intid == VIRQ
    # The handler reads CNTVCT as its 22nd instruction (the vector entry's 4, then the 18th
    # of irq_common): 21 retired since the entry, so the entry came at count == CVAL.
    assert irq.cntvct - cval == 21
    assert r.sym("spin") <= irq.elr <= r.sym("spin") + 8


def test_a_run_with_timer_interrupts_replays_exactly():
    source = "guest_main:\n" + SETUP.format(intid=VIRQ) + """
    ldr x0, =irq_action
    ldr x1, =rearm
    str x1, [x0]
    mov x1, #37
    msr cntv_tval_el0, x1
    mov x2, #1
    msr cntv_ctl_el0, x2
    msr daifclr, #2
    mov x3, #0
work:
    add x3, x3, #1
    eor x4, x4, x3
    cmp x3, #4000
    b.ne work
    msr daifset, #2
    mov x2, #0
    msr cntv_ctl_el0, x2
    ret
rearm:                       // next interrupt 37 + (count of interrupts) ticks later
    ldr x0, =irq_log
    ldr x0, [x0]
    add x0, x0, #37
    msr cntv_tval_el0, x0
    ret
""" + TIMER_OFF
    a = virt_boot(source)
    b = virt_boot(source)
    assert a.exit.reason is b.exit.reason is ExitReason.SYSTEM_EVENT
    assert len(a.irqs) > 20
    assert [(i.elr, i.cntvct, i.spsr) for i in a.irqs] == [(i.elr, i.cntvct, i.spsr) for i in b.irqs]
    assert a.vcpu.instructions == b.vcpu.instructions


def test_tval_counts_down_and_istatus_imask_and_enable_behave():
    r = virt_boot("""
guest_main:
    mov x1, #50
    msr cntv_tval_el0, x1
    mrs x2, cntv_cval_el0
    mrs x3, cntvct_el0
    mrs x4, cntv_tval_el0      // 50 - 3 ticks later
    mov x5, #3                 // ENABLE | IMASK
    msr cntv_ctl_el0, x5
    mrs x6, cntv_ctl_el0       // not met yet: ISTATUS 0
    mov x9, #100
wait:
    subs x9, x9, #1
    b.ne wait
    mrs x7, cntv_ctl_el0       // met: ISTATUS, and IMASK kept the line low
    mrs x8, cntv_tval_el0      // negative now: a 32-bit two's complement value
    ldr x0, =seen
    stp x2, x3, [x0]
    stp x4, x6, [x0, #16]
    stp x7, x8, [x0, #32]
    ret
.balign 8
seen: .skip 48
""")
    cval, count, tval, ctl_before, ctl_after, tval_after = u64s(r, "seen", 6)
    assert cval - count == 50 - 2  # CVAL = count at the TVAL write + 50
    assert tval == 50 - 3
    assert ctl_before == 3 and ctl_after == 7
    assert tval_after >> 31 == 1 and tval_after < 1 << 32
    assert r.vm.interrupt_controller.is_pending(r.vm.interrupt_controller.cpus[0], VIRQ) is False


def test_physical_timer_raises_ppi_30():
    r = virt_boot("guest_main:\n" + SETUP.format(intid=PIRQ) + """
    mov x1, #20
    msr cntp_tval_el0, x1
    mov x2, #1
    msr cntp_ctl_el0, x2
    msr daifclr, #2
    mov x3, #200
spin:
    subs x3, x3, #1
    b.ne spin
    msr daifset, #2
    ret
""" + TIMER_OFF)
    assert [i.intid for i in r.irqs] == [PIRQ]


def test_wfi_with_a_timer_armed_lets_time_pass_to_the_compare_value():
    r = virt_boot("guest_main:\n" + SETUP.format(intid=VIRQ) + """
    mrs x1, cntvct_el0
    ldr x2, =1000000
    add x1, x1, x2
    msr cntv_cval_el0, x1
    mov x2, #1
    msr cntv_ctl_el0, x2
    msr daifclr, #2
    wfi
woken:
    msr daifset, #2
    ret
""" + TIMER_OFF)
    assert r.exit.reason is ExitReason.SYSTEM_EVENT
    [irq] = r.irqs
    assert irq.elr == r.sym("woken")
    assert r.vcpu.instructions < 500  # a million ticks passed without a million instructions
    assert r.vcpu.timer.virtual_count() > 1_000_000


def test_wfi_with_nothing_that_can_wake_is_idle():
    r = virt_boot("""
guest_main:
    wfi
    ret
""")
    assert r.exit.reason is ExitReason.IDLE


def test_el0_counter_access_follows_cntkctl_el1():
    r = virt_boot("""
guest_main:
    mov x1, #2                 // CNTKCTL_EL1.EL0VCTEN: CNTVCT only
    msr cntkctl_el1, x1
    isb
    ldr x0, =user
    ldr x1, =el0_stack_top
    b enter_el0
user:
    mrs x2, cntvct_el0         // allowed
    mrs x3, cntpct_el0         // not allowed: UNDEFINED
    mrs x4, cntv_ctl_el0       // not allowed
    svc #0xffff
""")
    undefs = [x for x in r.records if x.vector == 0x400 and x.ec == 0]
    assert [x.elr for x in undefs] == [r.sym("user") + 4, r.sym("user") + 8]


def test_the_host_sets_the_virtual_count_through_cntvoff():
    r = virt_boot("""
guest_main:
    mrs x1, cntvct_el0
    mrs x2, cntpct_el0
    ldr x0, =seen
    stp x1, x2, [x0]
    ret
.balign 8
seen: .skip 16
""", run=False)
    r.vcpu.timer.set_virtual_count(1 << 40)
    r.run()
    virt, phys = u64s(r, "seen", 2)
    assert (phys - r.vcpu.timer.cntvoff) % (1 << 64) == virt + 1  # read one instruction later
    assert (1 << 40) <= virt < (1 << 40) + 100


def test_timer_state_migrates_with_a_snapshot():
    source = "guest_main:\n" + SETUP.format(intid=VIRQ) + """
    mov x1, #3000
    msr cntv_tval_el0, x1
    mov x2, #1
    msr cntv_ctl_el0, x2
    msr daifclr, #2
    hvc #0x77                  // not SMCCC: a point where the host snapshots
    mov x3, #4000
spin:
    subs x3, x3, #1
    b.ne spin
    msr daifset, #2
    ret
""" + TIMER_OFF
    straight = virt_boot(source)
    first = virt_boot(source, run=False)
    ex = first.run(max_instructions=150)
    assert ex.reason is ExitReason.INSTRUCTION_BUDGET
    moved = Vm.restore(first.vm.snapshot())
    v = moved.vcpus[0]
    assert v.timer is not None and v.timer.virt.cval == first.vcpu.timer.virt.cval
    assert v.timer.physical_count() == first.vcpu.timer.physical_count()
    assert v.run().reason is ExitReason.SYSTEM_EVENT
    from virt_guest import VirtRun
    after = VirtRun(moved, v, first.program, None)
    assert [(i.intid, i.elr, i.cntvct) for i in after.irqs] == [(i.intid, i.elr, i.cntvct) for i in straight.irqs]
