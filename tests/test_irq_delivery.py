"""IRQ/FIQ delivery: the vCPU takes an asserted interrupt at exactly the instruction boundary
where PSTATE.I (F) allows it, through the EL1 vector of the interrupted context (+0x080 EL1t,
+0x280 EL1h, +0x480 EL0; FIQ +0x100 further), ELR = the first instruction not executed,
SPSR = the interrupted PSTATE, and no ESR/FAR."""

from sandbox import ExitReason
from sandbox.firmware import POLICY_STOP
from sandbox.kvm import InternalErrorSuberror

from virt_guest import SPI_SETUP, virt_boot

SPI = 40  # an SPI no device of the machine uses


def edge_triggered(vm, intid=SPI):
    """Configure `intid` edge-triggered from the host (GICD_ICFGRn through the host's view
    of the distributor), so a raise before the guest runs stays latched."""
    dist = next(m.device for m in vm.memory.mmio if m.name == "gic-dist")
    offset = 0xC00 + (intid // 16) * 4
    dist.write(offset, 4, dist.read(offset, 4) | 2 << (2 * (intid % 16)))


def asserted_while_masked(body, intid=SPI, **kw):
    """The host raises `intid` before the guest runs; guest_main sets up the GIC, then `body`."""
    r = virt_boot("guest_main:\n" + SPI_SETUP.format(intid=intid) + body, run=False, **kw)
    edge_triggered(r.vm)
    r.vm.raise_interrupt(intid)
    r.run()
    return r


def test_msr_daifclr_takes_the_irq_at_the_next_instruction():
    r = asserted_while_masked("""
    nop
unmask:
    msr daifclr, #2
after:
    nop
    msr daifset, #2
    ret
""")
    assert r.exit.reason is ExitReason.SYSTEM_EVENT, r.exit.describe()
    [irq] = r.irqs
    assert irq.intid == SPI and irq.vector == 0x280
    assert irq.elr == r.sym("after")
    assert irq.spsr & 0xFFFFFFF == 0x345  # EL1h, D, A, F still set: only I was cleared
    assert r.records == []  # nothing synchronous happened


def test_msr_daif_register_write_takes_it_after_the_write():
    r = asserted_while_masked("""
    mov x2, #0x300           // D and A set, I and F clear
unmask:
    msr daif, x2
after:
    nop
    msr daifset, #3
    ret
""")
    [irq] = r.irqs
    assert (irq.vector, irq.elr, irq.spsr & 0xFFFFFFF) == (0x280, r.sym("after"), 0x305)


def test_a_masked_irq_is_not_taken_and_isr_el1_shows_it():
    r = asserted_while_masked("""
    msr daifclr, #1          // F only: the IRQ stays masked
    wfi                      // a pending IRQ wakes WFI even while masked
    mrs x2, isr_el1
    ldr x3, =isr_seen
    str x2, [x3]
    ret
.balign 8
isr_seen: .quad 0
""")
    assert r.exit.reason is ExitReason.SYSTEM_EVENT
    assert r.irqs == []
    assert r.u64("isr_seen") & 0x80  # ISR_EL1.I


def test_eret_to_el0_takes_it_before_the_first_el0_instruction():
    r = asserted_while_masked("""
    ldr x0, =user
    ldr x1, =el0_stack_top
    b enter_el0              // SPSR 0: EL0t with DAIF clear
user:
    nop
    svc #0xffff
""")
    first = r.irqs[0]
    assert first.vector == 0x480  # lower EL, AArch64, IRQ
    assert first.elr == r.sym("user")
    assert first.spsr == 0x0


def test_irq_from_el1t_uses_the_current_el_sp0_group():
    r = asserted_while_masked("""
    msr spsel, #0
    mov x2, sp
unmask:
    msr daifclr, #2
after:
    nop
    msr daifset, #2
    msr spsel, #1
    ret
""")
    [irq] = r.irqs
    assert (irq.vector, irq.elr, irq.spsr & 0xFFFFFFF) == (0x080, r.sym("after"), 0x344)


def test_group0_with_fiqen_is_an_fiq_masked_by_f_not_i():
    r = asserted_while_masked("""
    ldr x0, =0x08010000
    mov w1, #0x9             // GICC_CTLR: EnableGrp0 | FIQEn
    str w1, [x0]
    msr daifclr, #2          // I clear: the FIQ stays masked
    nop
unmask:
    msr daifclr, #1
after:
    nop
    msr daifset, #3
    ret
""")
    [fiq] = r.irqs
    assert (fiq.vector, fiq.elr, fiq.intid) == (0x300, r.sym("after"), SPI)
    assert fiq.spsr & 0xFFFFFFF == 0x305  # I and F clear in the interrupted context, D and A set


def test_an_interrupt_the_guest_pends_itself_is_taken_right_after_the_store():
    r = virt_boot("guest_main:\n" + SPI_SETUP.format(intid=SPI) + """
    msr daifclr, #2
    ldr x0, =0x08000204      // GICD_ISPENDR1: INTID 32..63
    mov w1, #(1 << (40 - 32))
pend:
    str w1, [x0]
after:
    nop
    nop
    msr daifset, #2
    ret
""")
    [irq] = r.irqs
    assert irq.intid == SPI and irq.elr == r.sym("after")


def test_sgi_to_self_reports_the_source_cpu_and_is_handled_once():
    r = virt_boot("guest_main:\n" + SPI_SETUP.format(intid=3) + """
    msr daifclr, #2
    ldr x0, =0x08000f00      // GICD_SGIR
    ldr w1, =0x02000003      // TargetListFilter = this CPU, SGI 3
    str w1, [x0]
after:
    nop
    msr daifset, #2
    ret
""")
    [irq] = r.irqs
    assert irq.iar == 3  # source CPU 0 in [12:10]
    assert irq.elr == r.sym("after")


LEVEL = """
guest_main:
    mov x29, x30
    ldr x0, =irq_vectors
    msr vbar_el1, x0
    bl gic_init
    mov x0, #40              // level-sensitive (the reset configuration)
    mov x1, #0xa0
    bl gic_enable
    mov x30, x29
    msr daifclr, #2
    nop
    msr daifset, #2
    ret
"""


def test_a_level_interrupt_follows_its_line_an_edge_one_latches():
    level = virt_boot(LEVEL, run=False)
    level.vm.raise_interrupt(SPI)
    level.vm.lower_interrupt(SPI)  # a pulse: gone before the guest looks
    assert level.run().reason is ExitReason.SYSTEM_EVENT
    assert level.irqs == []
    edge = virt_boot("guest_main:\n" + SPI_SETUP.format(intid=SPI) + """
    msr daifclr, #2
after:
    nop
    msr daifset, #2
    ret
""", run=False)
    edge_triggered(edge.vm)
    edge.vm.raise_interrupt(SPI)
    edge.vm.lower_interrupt(SPI)
    edge.run()
    assert [i.intid for i in edge.irqs] == [SPI]


def test_an_irq_the_guest_never_acknowledges_is_an_exception_storm():
    r = virt_boot("""
guest_main:
    bl gic_init
    mov x0, #40
    mov x1, #0xa0
    bl gic_enable
    msr daifclr, #2          // the recording table returns to ELR: the line is still high
spin:
    b spin
""", run=False)
    r.vm.raise_interrupt(SPI)
    ex = r.run(timeout=20)
    assert ex.reason is ExitReason.INTERNAL_ERROR
    assert ex.internal.suberror is InternalErrorSuberror.EXCEPTION_STORM
    assert ex.internal.data["vector"] == 0x280


def test_observers_see_each_interrupt_entry():
    r = virt_boot("guest_main:\n" + SPI_SETUP.format(intid=SPI) + """
    msr daifclr, #2
    nop
    msr daifset, #2
    ret
""", run=False)
    events = []
    r.vm.observers.append(lambda e: events.append(e) if e.kind == "exception" else None)
    edge_triggered(r.vm)
    r.vm.raise_interrupt(SPI)
    r.run()
    [entry] = [e.data["entry"] for e in events]
    assert entry.vector_offset == 0x280 and entry.esr is None
    assert r.vcpu.irq.taken == 1


def test_stop_policy_records_the_interrupt_in_the_recording_table():
    r = virt_boot("""
guest_main:
    bl gic_init
    mov x0, #40
    mov x1, #0xa0
    bl gic_enable
    ldr x0, =exc_policy
    mov x1, #3
    str x1, [x0]
unmask:
    msr daifclr, #2
    nop
    ret
""", run=False)
    assert POLICY_STOP == 3
    r.vm.raise_interrupt(SPI)
    r.run()
    [rec] = r.records
    assert (rec.vector, rec.elr, rec.spsr & 0xFFFFFFF, rec.esr) == (0x280, r.sym("unmask") + 4, 0x345, 0)


def test_a_vector_table_installed_while_an_irq_is_pending_still_gets_it():
    r = virt_boot("guest_main:\n" + SPI_SETUP.format(intid=SPI) + """
    ldr x0, =exc_policy      // the recording table stops the guest at its first entry
    mov x1, #3
    str x1, [x0]
    ldr x0, =exc_vectors     // the line is asserted and watched at irq_vectors: move the table
    msr vbar_el1, x0
unmask:
    msr daifclr, #2
    nop
    ret
""", run=False)
    edge_triggered(r.vm)
    events = []
    r.vm.observers.append(lambda e: events.append(e) if e.kind == "exception" else None)
    r.vm.raise_interrupt(SPI)
    r.run()
    [rec] = r.records
    assert (rec.vector, rec.elr) == (0x280, r.sym("unmask") + 4)
    assert [e.data["entry"].vector_offset for e in events] == [0x280]  # through take_exception
