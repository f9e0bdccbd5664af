"""Stopping the vCPU from inside a memory access (sandbox/access_completion.py): a device or
RAM watch that asks for a stop sees its access once, the access instruction retires once
(base-register writeback included) before what the stop was for happens, a delayed action
waits for exactly its instructions, and a breakpoint on the access instruction fires once."""

from __future__ import annotations

import struct

import pytest

from sandbox import ExitReason, Vm, snapshot
from sandbox.breakpoint import Breakpoint
from sandbox.devices.serror_source import SErrorSource

from conftest import assert_halted, boot
from guest_lib import machine
from test_irq_delivery import SPI
from virt_guest import SPI_SETUP, virt_boot

DEVICE = 0x0C000000  # unbacked on both machines (guest_lib's doorbell is at 0x0B000000)
BOUND = 0x4007D0  # the first event sdei_interrupt_bind returns (DEN0054C: bound events)


class Ring:
    """A device that raises the INTID written to it (any offset; 0 raises nothing), and whose
    reads return 0x100, 0x101, ... and raise `raise_on_read` when set."""

    def __init__(self, vm: Vm, raise_on_read: int = 0):
        self.vm, self.raise_on_read = vm, raise_on_read
        self.seen: list[tuple[str, int, int]] = []

    def read(self, offset: int, size: int) -> int:
        self.seen.append(("r", offset, size))
        if self.raise_on_read:
            self.vm.raise_interrupt(self.raise_on_read)
        return 0x100 + len(self.seen) - 1

    def write(self, offset: int, size: int, value: int) -> None:
        self.seen.append(("w", offset, value))
        if value:
            self.vm.raise_interrupt(value)


SDEI_GUEST = f"""
guest_main:
    str x30, [sp, #-16]!
    mov x1, #40
    bl sdei_interrupt_bind      // INTID 40 -> event {BOUND:#x}
    mov x1, x0
    mov x3, #0
    mov x4, #0
    mov x5, #0
    bl sdei_register_recorder
    ldr x1, ={BOUND:#x}
    bl sdei_event_enable
    bl sdei_pe_unmask
    ldr x9, ={{base:#x}}
    mov x10, #40
    mov x12, #0
    mov x20, #0
access:
    {{access}}
    add x20, x20, #1
    ldr x11, =out
    stp x9, x20, [x11]
    str x12, [x11, #16]
    ldr x30, [sp], #16
    ret
.balign 8
out: .quad 0, 0, 0
"""

# (access instruction, x9 before, x9 after, what the device sees)
STORES = {
    "plain": ("str w10, [x9]", DEVICE, DEVICE, [("w", 0, 40)]),
    "post-index": ("str w10, [x9], #8", DEVICE, DEVICE + 8, [("w", 0, 40)]),
    "pre-index": ("str w10, [x9, #-4]!", DEVICE + 4, DEVICE, [("w", 0, 40)]),
    # Unicorn abandons an STP after its first register; the second write reaches the device
    # in the completing step, raises again and makes the step run once more.
    "pair": ("stp w10, w10, [x9], #16", DEVICE, DEVICE + 16, [("w", 0, 40), ("w", 4, 40)]),
}


def sdei_machine(access: str, base: int, raise_on_read: int = 0):
    m = machine(SDEI_GUEST.format(access=access, base=base))
    ring = Ring(m.vm, raise_on_read)
    m.vm.add_device(DEVICE, 0x1000, ring, "ring")
    return m, ring


@pytest.mark.parametrize("budget", [None, 1 << 20], ids=["uncounted", "counted"])
@pytest.mark.parametrize("form", STORES)
def test_a_device_raising_an_sdei_event_from_a_write_sees_it_once_and_the_event_follows_the_store(form, budget):
    insn, before, after, seen = STORES[form]
    m, ring = sdei_machine(insn, before)
    ex = m.vm.vcpus[0].run(max_instructions=budget)
    assert ex.reason is ExitReason.SYSTEM_EVENT, ex.describe()
    assert ring.seen == seen
    x9, x20, _ = m.words("out", 3)
    assert (x9, x20) == (after, 1)  # the base was written back once, the next add ran once
    [rec] = m.records()
    assert rec.event == BOUND and rec.interrupted_pc == m.sym("access") + 4


@pytest.mark.parametrize("budget", [None, 1 << 20], ids=["uncounted", "counted"])
def test_a_device_read_that_raises_an_event_is_read_once_and_the_load_gets_that_value(budget):
    m, ring = sdei_machine("ldr w12, [x9], #4", DEVICE, raise_on_read=40)
    assert m.vm.vcpus[0].run(max_instructions=budget).reason is ExitReason.SYSTEM_EVENT
    assert ring.seen == [("r", 0, 4)]
    assert m.words("out", 3) == [DEVICE + 4, 1, 0x100]
    [rec] = m.records()
    assert rec.interrupted_pc == m.sym("access") + 4


@pytest.mark.parametrize("form", ["plain", "post-index", "pre-index"])
def test_a_device_raising_a_gic_irq_from_a_write_sees_it_once_and_the_irq_follows_the_store(form):
    insn, before, after, _ = STORES[form]
    r = virt_boot("guest_main:\n" + SPI_SETUP.format(intid=SPI) + f"""
    msr daifclr, #2
    ldr x9, ={before:#x}
    mov x10, #{SPI}
    mov x20, #0
access:
    {insn}
    add x20, x20, #1
    msr daifset, #2
    ldr x11, =out
    stp x9, x20, [x11]
    ret
.balign 8
out: .quad 0, 0
""", run=False)
    ring = Ring(r.vm)
    r.vm.add_device(DEVICE, 0x1000, ring, "ring")
    assert r.run().reason is ExitReason.SYSTEM_EVENT, r.exit.describe()
    assert ring.seen == [("w", 0, SPI)]
    [irq] = r.irqs
    assert irq.intid == SPI and irq.elr == r.sym("access") + 4
    assert struct.unpack("<2Q", r.vm.read_memory(r.sym("out"), 16)) == (after, 1)


WATCHED = """
guest_main:
    ldr x9, =watched
    mov x10, #0x5a
access:
    {access}
    add x20, x20, #1
    nop
    nop
    nop
    nop
    nop
    nop
    ldr x11, =out
    str x9, [x11]
    ret
.balign 8
watched: .quad 0, 0
out: .quad 0
"""


def watched_guest(access: str):
    """The WATCHED guest, not yet run: (run, vcpu, [watch calls], [actions' records])."""
    g = boot(WATCHED.format(access=access), run=False)
    return g, g.vcpu, [], []


@pytest.mark.parametrize("budget", [None, 1 << 20], ids=["uncounted", "counted"])
@pytest.mark.parametrize("access,after,written", [
    ("str x10, [x9], #8", 8, [(0, 8, 0x5A)]),
    ("str x10, [x9, #8]!", 8, [(8, 8, 0x5A)]),
    # one stop per register: the completing step stops again at the second and runs again
    ("stp x10, x10, [x9]", 0, [(0, 8, 0x5A), (8, 8, 0x5A)]),
])
def test_a_ram_watch_that_stops_the_vcpu_sees_the_write_once_and_acts_after_it(access, after, written, budget):
    g, v, calls, acted = watched_guest(access)
    base = g.sym("watched")

    def on_write(address, size, value):
        calls.append((address - base, size, value))
        v.pause_then(lambda: acted.append(v.reg("pc")))

    v.watch_writes(base, base + 15, on_write)
    g.exit = v.run(max_instructions=budget)
    assert_halted(g)
    assert calls == written
    assert acted == [g.sym("access") + 4] * len(written)
    assert int.from_bytes(g.vm.read_memory(g.sym("out"), 8), "little") == base + after


@pytest.mark.parametrize("n", [0, 1, 5])
def test_an_action_after_n_instructions_runs_after_exactly_n_more_retired_ones(n):
    g, v, calls, acted = watched_guest("str x10, [x9]")
    base = g.sym("watched")
    v.watch_writes(base, base + 7, lambda *a: v.pause_then(lambda: acted.append(v.reg("pc")), after_instructions=n))
    g.exit = v.run()
    assert_halted(g)
    assert acted == [g.sym("access") + 4 + 4 * n]


def test_the_instructions_an_action_waits_for_come_off_the_budget_and_a_run_keeps_it_for_the_next():
    def run_in_chunks(budget, watch=True):
        g, v, calls, acted = watched_guest("str x10, [x9]")
        base = g.sym("watched")
        if watch:
            v.watch_writes(base, base + 7, lambda *a: v.pause_then(
                lambda: acted.append((v.reg("pc"), v.instructions)), after_instructions=5))
        total = 0
        while True:
            ex = v.run(max_instructions=budget)
            total += ex.instructions
            if ex.reason is not ExitReason.INSTRUCTION_BUDGET:
                assert ex.reason is ExitReason.SYSTEM_EVENT
                return total, acted, g.sym("access")

    plain, _, _ = run_in_chunks(10_000, watch=False)
    results = [run_in_chunks(b) for b in (1, 2, 7, 10_000)]
    total, acted, access = results[0]
    assert total == plain  # the store and the five after it counted once each
    assert [pc for pc, _ in acted] == [access + 4 + 20]
    assert all(r == results[0] for r in results)  # same instructions retired, action at the same count


def test_a_snapshot_is_refused_while_an_action_waits_for_instructions():
    g, v, calls, acted = watched_guest("str x10, [x9]")
    base = g.sym("watched")
    v.watch_writes(base, base + 7, lambda *a: v.pause_then(lambda: acted.append(1), after_instructions=5))
    while not g.vm.vcpus[0]._delayed:
        assert v.run(max_instructions=1).reason is ExitReason.INSTRUCTION_BUDGET
    with pytest.raises(OSError) as e:
        snapshot.save(g.vm)
    assert e.value.errno == 16  # EBUSY
    assert v.run(max_instructions=5).reason is ExitReason.INSTRUCTION_BUDGET and acted == [1]
    assert snapshot.save(g.vm)


def test_a_breakpoint_on_the_access_instruction_is_hit_once_when_the_device_stops_it():
    m, ring = sdei_machine("str w10, [x9]", DEVICE)
    v = m.vm.vcpus[0]
    bp = Breakpoint(v, m.sym("access"), hits=2)  # the completing step must not be a second hit
    bp.arm()
    assert v.run().reason is ExitReason.SYSTEM_EVENT
    assert bp.seen == 1 and not bp.fired and ring.seen == [("w", 0, 40)]


def test_a_breakpoint_on_the_access_instruction_stops_before_it_and_the_resumed_store_is_seen_once():
    m, ring = sdei_machine("str w10, [x9]", DEVICE)
    v = m.vm.vcpus[0]
    Breakpoint(v, m.sym("access")).arm()
    ex = v.run()
    assert ex.reason is ExitReason.DEBUG and ex.pc == m.sym("access") and ring.seen == []
    assert v.run().reason is ExitReason.SYSTEM_EVENT and ring.seen == [("w", 0, 40)]
    assert m.words("out", 2) == [DEVICE, 1]
    [rec] = m.records()
    assert rec.interrupted_pc == m.sym("access") + 4


@pytest.mark.parametrize("delay", [0, 3])
def test_serror_source_pends_after_the_access_and_its_delay(delay):
    g = boot(f"""
guest_main:
    msr daifclr, #4             // SErrors taken at once
    ldr x9, ={DEVICE:#x}
access:
    str w10, [x9], #4
    nop
    nop
    nop
    nop
    ret
""", run=False)
    src = SErrorSource(g.vm, 0x1234, delay_instructions=delay)
    g.vm.add_device(DEVICE, 0x1000, src, "serror-source")
    g.exit = g.vcpu.run()
    assert_halted(g)
    assert src.signals == 1
    [rec] = g.records
    # SError from EL1h: vector +0x380; ESR = EC 0x2F with the pended ISS (Arm ARM D17.2.37)
    assert (rec.vector, rec.esr, rec.elr) == (0x380, 0xBE001234, g.sym("access") + 4 + 4 * delay)


def test_an_action_waiting_for_instructions_runs_when_the_vcpu_goes_idle_in_wfi():
    g = boot("""
guest_main:
    ldr x9, =watched
access:
    str x9, [x9]
    wfi                         // nothing else would wake it
idle:
    ret
.balign 8
watched: .quad 0
""", run=False)
    v, acted = g.vcpu, []
    base = g.sym("watched")
    v.watch_writes(base, base + 7, lambda *a: v.pause_then(lambda: acted.append(v.reg("pc")), after_instructions=1000))
    g.exit = v.run()
    assert_halted(g)
    assert acted == [g.sym("idle")]
