"""QEMU virt's memory map and interrupt map: the one place every guest-physical address and
INTID of the machine comes from (kvmtool keeps its whole map in one header the same way).

Values are QEMU 7.2's hw/arm/virt.c `base_memmap[]` and `a15irqmap[]` for `-M virt` with the
default GICv2 (`gic-version=2`). Devices the sandbox does not model (flash, RTC, fw_cfg,
virtio-mmio, PCIe) are not listed: their addresses stay unbacked, as on a board without them.
"""

from __future__ import annotations

# -- guest-physical addresses (virt.c base_memmap) -----------------------------------------
GIC_DIST_BASE = 0x08000000  # VIRT_GIC_DIST
GIC_DIST_SIZE = 0x00010000
GIC_CPU_BASE = 0x08010000  # VIRT_GIC_CPU
GIC_CPU_SIZE = 0x00010000
UART_BASE = 0x09000000  # VIRT_UART (PL011)
UART_SIZE = 0x00001000
RAM_BASE = 0x40000000  # VIRT_MEM
RAM_MAX_SIZE = 255 << 30  # VIRT_MEM is 255 GiB long

# -- interrupts --------------------------------------------------------------------------
# SPI numbers as the device tree writes them (INTID = 32 + SPI), virt.c a15irqmap.
UART_SPI = 1  # VIRT_UART
# Architected timer PPIs as the device tree writes them (INTID = 16 + PPI), virt.h ARCH_TIMER_*_IRQ;
# the order is the one the arm,armv8-timer binding requires.
TIMER_S_EL1_PPI = 13
TIMER_NS_EL1_PPI = 14
TIMER_VIRT_PPI = 11
TIMER_NS_EL2_PPI = 10

SPI_BASE = 32
PPI_BASE = 16
VIRT_TIMER_INTID = PPI_BASE + TIMER_VIRT_PPI  # 27
PHYS_TIMER_INTID = PPI_BASE + TIMER_NS_EL1_PPI  # 30
UART_INTID = SPI_BASE + UART_SPI  # 33
NUM_SPIS = 256  # virt.h NUM_IRQS

# -- boot placement (QEMU hw/arm/boot.c for -kernel) ----------------------------------------
FLAT_LOAD_ADDRESS = RAM_BASE + 0x80000  # KERNEL64_LOAD_ADDR: non-Linux images
DTB_ALIGN = 8  # Linux Documentation/arm64/booting.rst: 8-byte aligned, at most 2 MiB
DTB_MAX_SIZE = 2 << 20
