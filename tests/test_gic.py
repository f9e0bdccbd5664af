"""The GICv2 as a driver uses it: what probing reads, acknowledge / end-of-interrupt with
priorities and preemption, PMR masking, SGIs with their source, EOImode split, groups, and
the host-side contract (raise/lower, errors, migration). The guests poll the CPU interface
with interrupts masked, as a driver's polling path does, and record what they read."""

import errno

import pytest

from sandbox import ExitReason, Vm
from sandbox.devices.gic import GicV2
from sandbox.virt import create_vm

from virt_guest import virt_boot


def values(r, n):
    raw = r.vm.read_memory(r.sym("seen"), 4 * n)
    return [int.from_bytes(raw[4 * i:4 * i + 4], "little") for i in range(n)]


def host_edge(vm, *intids):
    dist = next(m.device for m in vm.memory.mmio if m.name == "gic-dist")
    for intid in intids:
        offset = 0xC00 + (intid // 16) * 4
        dist.write(offset, 4, dist.read(offset, 4) | 2 << (2 * (intid % 16)))


# `rd OFFSET` / `wr OFFSET, value` on the CPU interface (x20) or distributor (x21); every
# read is appended to `seen` (x22).
PROLOGUE = """
.macro CPU_RD off
    ldr w0, [x20, #\\off]
    str w0, [x22], #4
.endm
.macro DIST_RD off
    ldr w0, [x21, #\\off]
    str w0, [x22], #4
.endm
guest_main:
    mov x28, x30
    bl gic_init
    ldr x20, =0x08010000
    ldr x21, =0x08000000
    ldr x22, =seen
"""
EPILOGUE = """
    mov x30, x28
    ret
.balign 8
seen: .skip 256
"""


def test_probe_reads_what_linux_expects_of_a_gicv2():
    r = virt_boot(PROLOGUE + """
    DIST_RD 0x004            // GICD_TYPER
    DIST_RD 0x008            // GICD_IIDR
    DIST_RD 0xfe8            // GICD_PIDR2
    DIST_RD 0x800            // GICD_ITARGETSR0: this CPU's mask
    DIST_RD 0xc00            // GICD_ICFGR0: SGIs edge-triggered, read-only
    mov w1, #0xff
    strb w1, [x21, #0x428]   // IPRIORITYR of INTID 40
    ldrb w0, [x21, #0x428]
    str w0, [x22], #4
    CPU_RD 0xfc              // GICC_IIDR
    DIST_RD 0x100            // ISENABLER0: SGIs always enabled
""" + EPILOGUE, smp=2)
    typer, iidr, pidr2, targets, icfgr0, prio, giccidr, isen0 = values(r, 8)
    assert typer & 0x1F == (32 + 256) // 32 - 1 and (typer >> 5) & 7 == 1  # 288 INTIDs, 2 CPUs
    assert typer & (1 << 10) == 0  # no Security Extensions
    assert (pidr2 >> 4) & 0xF == 2  # ArchRev: GICv2
    assert iidr == 0x0200143B and giccidr == 0x0202143B
    assert targets == 0x01010101
    assert icfgr0 == 0xAAAAAAAA
    assert prio == 0xF8  # 5 priority bits
    assert isen0 == 0xFFFF


def test_priorities_order_acknowledge_and_block_lower_ones_until_eoi():
    r = virt_boot(PROLOGUE + """
    mov x0, #40
    mov x1, #0xa0
    bl gic_enable
    mov x0, #41
    mov x1, #0x80
    bl gic_enable
    CPU_RD 0x18              // HPPIR: 41, the higher priority
    CPU_RD 0x0c              // IAR: 41
    CPU_RD 0x14              // RPR: 0x80
    CPU_RD 0x0c              // IAR: 1023, 40 (0xa0) cannot preempt 0x80
    mov w1, #41
    str w1, [x20, #0x10]     // EOIR 41
    CPU_RD 0x0c              // IAR: 40
    CPU_RD 0x14              // RPR: 0xa0
    mov w1, #40
    str w1, [x20, #0x10]
    CPU_RD 0x0c              // IAR: 1023, nothing left
    CPU_RD 0x14              // RPR: idle
""" + EPILOGUE, run=False)
    host_edge(r.vm, 40, 41)
    r.vm.raise_interrupt(40)
    r.vm.raise_interrupt(41)
    assert r.run().reason is ExitReason.SYSTEM_EVENT
    assert values(r, 8) == [41, 41, 0x80, 1023, 40, 0xA0, 1023, 0xFF]


def test_pmr_masks_priorities_at_or_below_it():
    r = virt_boot(PROLOGUE + """
    mov x0, #40
    mov x1, #0xa0
    bl gic_enable
    mov w1, #0xa0
    str w1, [x20, #4]        // PMR = 0xa0: priority 0xa0 is not above it
    CPU_RD 0x0c
    mov w1, #0xa8
    str w1, [x20, #4]
    CPU_RD 0x0c
    str w0, [x20, #0x10]
""" + EPILOGUE, run=False)
    host_edge(r.vm, 40)
    r.vm.raise_interrupt(40)
    r.run()
    assert values(r, 2) == [1023, 40]


def test_sgi_carries_its_source_and_is_pended_and_cleared_per_source():
    r = virt_boot(PROLOGUE + """
    ldr w1, =0x02000005      // SGIR: to this CPU, SGI 5
    str w1, [x21, #0xf00]
    ldrb w0, [x21, #0xf25]   // SPENDSGIR byte of SGI 5: source CPU 0
    str w0, [x22], #4
    CPU_RD 0x0c              // IAR: SGI 5 from CPU 0
    str w0, [x20, #0x10]
    ldr w1, =0x02000006
    str w1, [x21, #0xf00]
    mov w1, #1
    strb w1, [x21, #0xf16]   // CPENDSGIR: withdraw SGI 6 from CPU 0
    CPU_RD 0x0c              // nothing
""" + EPILOGUE)
    assert values(r, 3) == [1, 5, 1023]


def test_eoimode_split_drops_priority_and_deactivates_separately():
    r = virt_boot(PROLOGUE + """
    mov x0, #40
    mov x1, #0xa0
    bl gic_enable
    mov w1, #0x201           // GICC_CTLR: EnableGrp0 | EOImodeS
    str w1, [x20]
    CPU_RD 0x0c              // IAR 40
    str w0, [x20, #0x10]     // EOIR: priority drop only
    CPU_RD 0x14              // RPR idle
    DIST_RD 0x304            // ISACTIVER1: 40 still active
    ldr x1, =0x08000204
    mov w2, #(1 << 8)
    str w2, [x1]             // ISPENDR: pend 40 again while active
    CPU_RD 0x0c              // not signalled while active
    mov w1, #40
    ldr x2, =0x08011000
    str w1, [x2]             // GICC_DIR: deactivate
    CPU_RD 0x0c              // now it comes
""" + EPILOGUE, run=False)
    host_edge(r.vm, 40)
    r.vm.raise_interrupt(40)
    r.run()
    assert values(r, 5) == [40, 0xFF, 1 << 8, 1023, 40]


def test_group1_needs_ackctl_or_the_alias_to_be_acknowledged():
    r = virt_boot(PROLOGUE + """
    mov x0, #40
    mov x1, #0xa0
    bl gic_enable
    mov w1, #(1 << 8)
    str w1, [x21, #0x84]     // IGROUPR1: INTID 40 in Group 1
    mov w1, #3
    str w1, [x21]            // GICD_CTLR: both groups
    str w1, [x20]            // GICC_CTLR: both groups, AckCtl = 0
    CPU_RD 0x0c              // 1022
    CPU_RD 0x20              // AIAR: 40
    str w0, [x20, #0x24]     // AEOIR
""" + EPILOGUE, run=False)
    host_edge(r.vm, 40)
    r.vm.raise_interrupt(40)
    r.run()
    assert values(r, 2) == [1022, 40]


def test_host_contract_errors_are_kvm_errnos():
    vm = create_vm(ram_size=32 << 20)
    with pytest.raises(OSError) as e:
        vm.raise_interrupt(5000)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        vm.raise_interrupt(27, mpidr=0x55)  # no such vCPU
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        vm.create_vcpu()  # the GIC is sized for its vCPUs
    assert e.value.errno == errno.EBUSY
    many = Vm(ram_size=16 << 20)
    for _ in range(9):
        many.create_vcpu()
    with pytest.raises(OSError) as e:
        GicV2.create(many)
    assert e.value.errno == errno.EINVAL


def test_gic_state_migrates_mid_interrupt():
    r = virt_boot(PROLOGUE + """
    mov x0, #40
    mov x1, #0xa0
    bl gic_enable
    CPU_RD 0x0c              // acknowledge 40...
    hvc #0x55                // (not SMCCC) ...the host snapshots here
    CPU_RD 0x14              // RPR 0xa0 survives the move
    str w0, [x20, #0x10]
""" + EPILOGUE, run=False)
    host_edge(r.vm, 40)
    r.vm.raise_interrupt(40)
    r.vm.raise_interrupt(33)  # the UART's SPI, level, never enabled: pending state must move too
    gic = r.vm.interrupt_controller
    for _ in range(200):  # step to the point where 40 is active
        assert r.run(max_instructions=1).reason is ExitReason.INSTRUCTION_BUDGET
        if 40 in gic.spi.active:
            break
    state = gic.state()
    assert state["spi"]["active"] == [40] and 33 in state["spi"]["level"]
    moved = Vm.restore(r.vm.snapshot())
    assert moved.interrupt_controller.state() == state
    assert moved.vcpus[0].run().reason is ExitReason.SYSTEM_EVENT
