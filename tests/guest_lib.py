"""Helpers for the shim's tests: a machine with several vCPUs running the mini kernel with
smp.S and sdei.S, a doorbell device through which guest code raises interrupts, and readers
for what the guest wrote."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sandbox import Exit, Program, Vm, assemble
from sandbox.sdei_client import SdeiRecord, sdei_records

RAM = 0x40000000
DOORBELL = 0x0B000000  # nothing else lives here on the sandbox's machine
HEADER = '.include "kernel.S"\n.include "smp.S"\n.include "sdei.S"\n'


class Doorbell:
    """An MMIO device whose registers are interrupt lines: a write of INTID | Aff0 << 32 to
    +0x0 raises that interrupt (the PPI of the vCPU with that Aff0), to +0x8 lowers it."""

    def __init__(self, vm: Vm):
        self.vm = vm
        self.rings: list[tuple[str, int, int]] = []

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        intid, aff0 = value & 0xFFFFFFFF, value >> 32
        mpidr = aff0 if intid < 32 else None
        self.rings.append(("raise" if offset == 0 else "lower", intid, aff0))
        if offset == 0:
            self.vm.raise_interrupt(intid, mpidr)
        else:
            self.vm.lower_interrupt(intid, mpidr)


@dataclass
class Machine:
    vm: Vm
    program: Program
    doorbell: Doorbell

    def sym(self, name: str) -> int:
        return self.program[name]

    def words(self, name: str, n: int, offset: int = 0) -> list[int]:
        return list(struct.unpack(f"<{n}Q", self.vm.read_memory(self.program[name] + offset, 8 * n)))

    def word(self, name: str, offset: int = 0) -> int:
        return self.words(name, 1, offset)[0]

    def signed(self, name: str, n: int) -> list[int]:
        return list(struct.unpack(f"<{n}q", self.vm.read_memory(self.program[name], 8 * n)))

    def set_word(self, name: str, value: int, offset: int = 0) -> None:
        self.vm.write_memory(self.program[name] + offset, struct.pack("<Q", value & (2**64 - 1)))

    def records(self, cpu: int = 0) -> list[SdeiRecord]:
        return sdei_records(self.vm, self.program, cpu)

    def run(self, **kw: object) -> Exit:
        return self.vm.run(**kw)  # type: ignore[arg-type]


def machine(source: str, *, cpus: int = 1, vm: Vm | None = None, **vm_args: object) -> Machine:
    """The mini kernel + smp.S + sdei.S + `source` (which defines guest_main) on `cpus`
    vCPUs (Aff0 = index), vCPU 0 at _start, the doorbell mapped."""
    vm = vm or Vm(**vm_args)  # type: ignore[arg-type]
    while len(vm.vcpus) < cpus:
        vm.create_vcpu()
    program = assemble(HEADER + source, RAM)
    vm.load(program)
    bell = Doorbell(vm)
    vm.add_device(DOORBELL, 0x1000, bell, "doorbell")
    vm.vcpus[0].set_reg("pc", program["_start"])
    return Machine(vm, program, bell)


def s64(value: int) -> int:
    value &= 2**64 - 1
    return value - 2**64 if value >> 63 else value
