"""Helpers for tests on the virt machine: a guest with the mini kernel and the GIC
library (firmware/gic.S), and what its interrupt handler recorded."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sandbox import Exit, Program, Vcpu, Vm, assemble
from sandbox.firmware import ExceptionRecord
from sandbox.virt import create_vm

RAM = 0x40000000
GICD = 0x08000000
GICC = 0x08010000

# guest_main's start for one SPI: gic.S's vector table, the GIC on, the SPI edge-triggered
# (only INTIDs 32-47: GICD_ICFGR2), enabled at priority 0xa0. `.format(intid=N)`.
SPI_SETUP = """
    mov x29, x30
    ldr x0, =irq_vectors
    msr vbar_el1, x0
    isb
    bl gic_init
    ldr x0, =0x08000c08      // GICD_ICFGR2 (INTIDs 32-47): INTID 40 edge-triggered
    mov w1, #(2 << 16)
    str w1, [x0]
    mov x0, #{intid}
    mov x1, #0xa0
    bl gic_enable
    mov x30, x29
"""


@dataclass(frozen=True)
class IrqRecord:
    seq: int
    vector: int
    iar: int
    elr: int
    spsr: int
    cntvct: int

    @property
    def intid(self) -> int:
        return self.iar & 0x3FF


@dataclass
class VirtRun:
    vm: Vm
    vcpu: Vcpu
    program: Program
    exit: Exit | None

    def sym(self, name: str) -> int:
        return self.program[name]

    @property
    def records(self) -> list[ExceptionRecord]:
        return self.vm.exception_records(self.program)

    @property
    def irqs(self) -> list[IrqRecord]:
        base = self.program["irq_log"]
        (count,) = struct.unpack("<Q", self.vm.read_memory(base, 8))
        raw = self.vm.read_memory(base + 8, 64 * 64)
        return [IrqRecord(*struct.unpack_from("<6Q", raw, (n % 64) * 64)) for n in range(max(0, count - 64), count)]

    def u64(self, name: str) -> int:
        return int.from_bytes(self.vm.read_memory(self.program[name], 8), "little")

    def run(self, **kw: object) -> Exit:
        self.exit = self.vcpu.run(**kw)  # type: ignore[arg-type]
        return self.exit


def virt_boot(source: str, *, run: bool = True, vm: Vm | None = None, **vm_kwargs: object) -> VirtRun:
    """Assemble `source` (defines guest_main) with kernel.S and gic.S at RAM base, on a virt
    machine, and run it to its first exit."""
    vm = vm or create_vm(ram_size=64 << 20, **vm_kwargs)  # type: ignore[arg-type]
    program = assemble('.include "kernel.S"\n.include "gic.S"\n' + source, RAM)
    vm.load(program)
    vcpu = vm.vcpus[0]
    vcpu.set_reg("pc", program["_start"])
    r = VirtRun(vm, vcpu, program, None)
    if run:
        r.run()
    return r
