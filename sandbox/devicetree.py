"""The flattened device tree of a Vm, generated from what the Vm actually has.

kvmtool's habit: nothing is written by hand; the generator walks the machine (RAM regions,
vCPUs and their MPIDRs, the PSCI conduit, the MMIO devices registered on the memory map, the
vCPUs' timers) and emits one node per thing, in the layout QEMU's virt board produces
(hw/arm/virt.c create_fdt, fdt_add_*), so a kernel built for `-M virt` finds what it expects.

The blob is written with libfdt's sequential-write API through pylibfdt, the binding the dtc
project maintains next to libfdt itself (QEMU, kvmtool and U-Boot build their trees with the
same library). The pure-Python `fdt` package would install without a compiler, but it is a
separate reimplementation without a release since 2022; libfdt is the reference, and the
tests read the blob back with it and with Linux.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import libfdt

from .devices.gic import GicV2
from .devices.pl011 import PL011
from .hyp import psci
from .hyp.smccc import Conduit
from .memmap import TIMER_NS_EL1_PPI, TIMER_NS_EL2_PPI, TIMER_S_EL1_PPI, TIMER_VIRT_PPI, UART_SPI

if TYPE_CHECKING:
    from .vm import Vm

# Devicetree bindings: interrupt-controller/arm,gic.yaml (3 cells: type, number, flags).
GIC_SPI = 0
GIC_PPI = 1
IRQ_TYPE_LEVEL_HIGH = 4
PPI_CPU_MASK_SHIFT = 8  # flags[15:8]: the CPUs a PPI is wired to (GICv2 only)

PSCI_MIGRATE_64 = 0xC4000005  # MIGRATE, SMC64 (DEN0022 PSCI 5.1.8)

PHANDLE_GIC = 0x8001
PHANDLE_APB_PCLK = 0x8000
APB_PCLK_HZ = 24_000_000  # QEMU virt's "clk24mhz" fixed clock for the PL011


def _cells(*values: int) -> bytes:
    return struct.pack(f">{len(values)}I", *values)


def _reg(base: int, size: int) -> bytes:
    return struct.pack(">QQ", base, size)  # #address-cells = #size-cells = 2


def _strings(*items: str) -> bytes:
    return b"".join(s.encode() + b"\0" for s in items)


def _node_name(name: str, base: int) -> str:
    return f"{name}@{base:x}"


def generate(vm: "Vm", bootargs: str = "") -> bytes:
    """The DTB describing `vm`, with `bootargs` in /chosen."""
    gic = vm.interrupt_controller if isinstance(vm.interrupt_controller, GicV2) else None
    uart = next((r for r in vm.memory.mmio if isinstance(r.device, PL011)), None)
    sw = libfdt.FdtSw()
    sw.finish_reservemap()
    with sw.add_node(""):
        sw.property_string("compatible", "linux,dummy-virt")
        sw.property_u32("#address-cells", 2)
        sw.property_u32("#size-cells", 2)
        if gic is not None:
            sw.property_u32("interrupt-parent", PHANDLE_GIC)
        with sw.add_node("chosen"):
            sw.property_string("bootargs", bootargs)
            if uart is not None:
                sw.property_string("stdout-path", "/" + _node_name("pl011", uart.base))
        for ram in vm.memory.ram:
            with sw.add_node(_node_name("memory", ram.base)):
                sw.property_string("device_type", "memory")
                sw.property("reg", _reg(ram.base, ram.size))
        _cpus(sw, vm)
        _psci(sw, vm.hypervisor.psci_conduit)
        if gic is not None:
            _gic(sw, vm)
            if any(v.timer is not None for v in vm.vcpus):
                _timer(sw, vm)
        if uart is not None:
            _pl011(sw, uart.base, uart.size, with_interrupt=gic is not None)
    fdt = sw.as_fdt()
    fdt.pack()
    return bytes(fdt.as_bytearray())


def _cpus(sw: "libfdt.FdtSw", vm: "Vm") -> None:
    # reg = MPIDR_EL1 affinity fields (Aff3 in [39:32] needs two cells; bindings arm/cpus.yaml).
    affinities = [v.mpidr & 0xFF00FFFFFF for v in vm.vcpus]
    two_cells = any(a >> 32 for a in affinities)
    with sw.add_node("cpus"):
        sw.property_u32("#address-cells", 2 if two_cells else 1)
        sw.property_u32("#size-cells", 0)
        for aff in affinities:
            with sw.add_node(f"cpu@{aff:x}"):
                sw.property_string("device_type", "cpu")
                sw.property_string("compatible", "arm,arm-v8")
                sw.property("reg", struct.pack(">Q", aff) if two_cells else _cells(aff))
                sw.property_string("enable-method", "psci")


def _psci(sw: "libfdt.FdtSw", conduit: Conduit) -> None:
    with sw.add_node("psci"):
        sw.property("compatible", _strings("arm,psci-1.0", "arm,psci-0.2", "arm,psci"))
        sw.property_string("method", "hvc" if conduit is Conduit.HVC else "smc")
        # Function IDs for "arm,psci" (0.1) clients, as QEMU gives them (PSCI 0.2 IDs).
        sw.property_u32("cpu_suspend", psci.CPU_SUSPEND_64)
        sw.property_u32("cpu_off", psci.CPU_OFF)
        sw.property_u32("cpu_on", psci.CPU_ON_64)
        sw.property_u32("migrate", PSCI_MIGRATE_64)


def _gic(sw: "libfdt.FdtSw", vm: "Vm") -> None:
    dist = next(r for r in vm.memory.mmio if r.name == "gic-dist")
    cpu = next(r for r in vm.memory.mmio if r.name == "gic-cpu")
    with sw.add_node(_node_name("intc", dist.base)):
        sw.property_string("compatible", "arm,cortex-a15-gic")
        sw.property_u32("#interrupt-cells", 3)
        sw.property("interrupt-controller", b"")
        sw.property("reg", _reg(dist.base, dist.size) + _reg(cpu.base, cpu.size))
        sw.property_u32("#address-cells", 2)
        sw.property_u32("#size-cells", 2)
        sw.property("ranges", b"")
        sw.property_u32("phandle", PHANDLE_GIC)


def _timer(sw: "libfdt.FdtSw", vm: "Vm") -> None:
    flags = IRQ_TYPE_LEVEL_HIGH | (((1 << len(vm.vcpus)) - 1) << PPI_CPU_MASK_SHIFT)
    with sw.add_node("timer"):
        sw.property("compatible", _strings("arm,armv8-timer", "arm,armv7-timer"))
        # Order fixed by the arm,arch_timer binding: secure phys, non-secure phys, virt, hyp.
        sw.property("interrupts", b"".join(_cells(GIC_PPI, ppi, flags) for ppi in (
            TIMER_S_EL1_PPI, TIMER_NS_EL1_PPI, TIMER_VIRT_PPI, TIMER_NS_EL2_PPI)))
        sw.property("always-on", b"")


def _pl011(sw: "libfdt.FdtSw", base: int, size: int, with_interrupt: bool) -> None:
    with sw.add_node("apb-pclk"):
        sw.property_string("compatible", "fixed-clock")
        sw.property_u32("#clock-cells", 0)
        sw.property_u32("clock-frequency", APB_PCLK_HZ)
        sw.property_string("clock-output-names", "clk24mhz")
        sw.property_u32("phandle", PHANDLE_APB_PCLK)
    with sw.add_node(_node_name("pl011", base)):
        sw.property("compatible", _strings("arm,pl011", "arm,primecell"))
        sw.property("reg", _reg(base, size))
        if with_interrupt:
            sw.property("interrupts", _cells(GIC_SPI, UART_SPI, IRQ_TYPE_LEVEL_HIGH))
        sw.property("clocks", _cells(PHANDLE_APB_PCLK, PHANDLE_APB_PCLK))
        sw.property("clock-names", _strings("uartclk", "apb_pclk"))
