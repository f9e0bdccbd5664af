"""One system counter for the whole Vm: every vCPU's CNTPCT/CNTVCT reads the same
deterministic time (a tick for each instruction any vCPU retires), monotonic across vCPUs;
a vCPU waiting in WFI wakes when the time the others make reaches its timer; when every
vCPU waits, time jumps to the next deadline; runs replay exactly."""

from __future__ import annotations

from sandbox import ExitReason, assemble
from sandbox.system_counter import TICKS_PER_INSTRUCTION
from sandbox.virt import create_vm

from test_timer import SETUP, TIMER_OFF, VIRQ

RAM = 0x40000000
HEADER = '.include "kernel.S"\n.include "smp.S"\n.include "gic.S"\n'

# Both CPUs read CNTVCT 300 times; each read is compared with the last value any CPU stored
# in `last` (a read older than one another CPU already saw is a violation), then stored.
MONOTONIC = """
guest_main:
    mrs x1, cntvct_el0
    ldr x9, =before_on
    str x1, [x9]
    mov x0, #1
    ldr x1, =reader
    bl cpu_on
    bl reader
wait_both:
    ldr x9, =done
    ldr x10, [x9]
    cmp x10, #2
    b.ne wait_both
    b guest_halt
reader:
    mrs x19, mpidr_el1
    and x19, x19, #0xff
    ldr x9, =first
    mrs x1, cntvct_el0
    str x1, [x9, x19, lsl #3]
    mov x20, #300
    ldr x21, =last
    ldr x22, =violations
read_again:
    ldr x2, [x21]
    mrs x1, cntvct_el0
    cmp x1, x2
    b.hs in_order
    ldr x3, [x22]
    add x3, x3, #1
    str x3, [x22]
in_order:
    str x1, [x21]
    subs x20, x20, #1
    b.ne read_again
    ldr x9, =done
add_done:
    ldaxr x10, [x9]
    add x10, x10, #1
    stlxr w12, x10, [x9]
    cbnz w12, add_done
    ret
.balign 8
before_on: .quad 0
first: .skip 16
last: .quad 0
violations: .quad 0
done: .quad 0
"""


def boot(source, cpus=2):
    vm = create_vm(ram_size=64 << 20, smp=cpus)
    prog = assemble(HEADER + source, RAM)
    vm.load(prog)
    vm.vcpus[0].set_reg("pc", prog["_start"])
    return vm, prog


def u64(vm, prog, name, index=0):
    return int.from_bytes(vm.read_memory(prog[name] + 8 * index, 8), "little")


def test_every_vcpu_reads_one_monotonic_system_time():
    vm, prog = boot(MONOTONIC)
    ex = vm.run(quantum=37, timeout=30)
    assert ex.reason is ExitReason.SYSTEM_EVENT, ex.describe()
    assert u64(vm, prog, "done") == 2
    assert u64(vm, prog, "violations") == 0
    # CPU 1's first read comes after CPU 0's read before CPU_ON: one time, not its own.
    assert u64(vm, prog, "first", 1) > u64(vm, prog, "before_on")
    # Nobody idled: the count is the instructions of both vCPUs.
    retired = sum(v.instructions for v in vm.vcpus)
    assert vm.system_counter.count() == retired * TICKS_PER_INSTRUCTION
    assert vm.vcpus[0].timer.physical_count() == vm.vcpus[1].timer.physical_count()


# CPU 1 arms its virtual timer DELAY ticks ahead and waits in WFI for it; its handler
# records the interrupt (irq_log) and raises `woken`. CPU 0 either spins until `woken`
# (BUSY: its instructions make the time) or waits in WFI itself (IDLE: nothing runs, time
# jumps to the deadline); CPU 1 powers the machine off.
TIMER_ON_CPU1 = """
guest_main:
    mov x0, #1
    ldr x1, =sleeper
    bl cpu_on
    ldr x9, =woken
{cpu0}
sleeper:
""" + SETUP + """    mrs x1, cntvct_el0
    ldr x2, ={delay}
    add x1, x1, x2
    msr cntv_cval_el0, x1
    ldr x0, =cval
    str x1, [x0]
    mov x2, #1               // ENABLE
    msr cntv_ctl_el0, x2
    msr daifclr, #2
sleep:
    wfi
    ldr x9, =woken
    ldr x10, [x9]
    cbz x10, sleep
    ldr x0, =0x84000008      // SYSTEM_OFF
    hvc #0
timer_off:
    mov x1, #3               // ENABLE | IMASK
    msr cntv_ctl_el0, x1
    ldr x1, =woken
    mov x2, #1
    str x2, [x1]
    ret
.balign 8
cval: .quad 0
woken: .quad 0
spins: .quad 0
"""
BUSY = """
    ldr x12, =spins
    mov x10, #0
spin:
    add x10, x10, #1
    str x10, [x12]
    ldr x11, [x9]
    cbz x11, spin
    b .
"""
IDLE = """
idle:
    wfi
    b idle
"""
DELAY = 20_000
QUANTUM = 1000


def irq_records(vm, prog):
    count = u64(vm, prog, "irq_log")
    raw = vm.read_memory(prog["irq_log"] + 8, 64 * count)
    return [[int.from_bytes(raw[64 * n + 8 * k:64 * n + 8 * k + 8], "little") for k in range(6)]
            for n in range(count)]


def run_timer_guest(cpu0):
    vm, prog = boot(TIMER_ON_CPU1.format(cpu0=cpu0, intid=VIRQ, delay=DELAY))
    ex = vm.run(quantum=QUANTUM, timeout=30)
    assert (ex.reason, ex.vcpu) == (ExitReason.SYSTEM_EVENT, 1), ex.describe()
    return vm, prog


def test_when_every_vcpu_waits_time_jumps_to_the_next_deadline():
    vm, prog = run_timer_guest(IDLE)
    [(seq, vector, iar, elr, spsr, cntvct)] = irq_records(vm, prog)
    cval = u64(vm, prog, "cval")
    assert iar & 0x3FF == VIRQ and vector == 0x280  # IRQ from EL1h
    # Taken exactly at the deadline: the handler's CNTVCT read is its 22nd instruction.
    assert cntvct - cval == 21
    assert elr == prog["sleep"] + 4  # WFI completed
    # The time passed without instructions: the count is ahead of what the vCPUs retired.
    retired = sum(v.instructions for v in vm.vcpus)
    assert vm.system_counter.count() - retired * TICKS_PER_INSTRUCTION >= DELAY - retired


def test_a_waiting_vcpu_wakes_when_the_others_instructions_reach_its_deadline():
    vm, prog = run_timer_guest(BUSY)
    [(seq, vector, iar, elr, spsr, cntvct)] = irq_records(vm, prog)
    cval = u64(vm, prog, "cval")
    assert iar & 0x3FF == VIRQ
    # Not before the deadline; at the first turn of CPU 1 after it.
    assert 21 <= cntvct - cval <= 21 + QUANTUM
    assert elr == prog["sleep"] + 4
    # CPU 0's spinning made the time: no idle jump.
    assert vm.system_counter.count() == sum(v.instructions for v in vm.vcpus) * TICKS_PER_INSTRUCTION
    assert u64(vm, prog, "spins") * 4 >= DELAY - QUANTUM


def test_an_smp_run_with_timers_replays_exactly():
    runs = []
    for cpu0 in (BUSY, BUSY, IDLE, IDLE):
        vm, prog = run_timer_guest(cpu0)
        runs.append((irq_records(vm, prog), [v.instructions for v in vm.vcpus], vm.system_counter.count(),
                     u64(vm, prog, "spins")))
    assert runs[0] == runs[1] and runs[2] == runs[3]
    assert runs[0] != runs[2]
