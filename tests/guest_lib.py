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
    """An MMIO device whose 32-bit registers are interrupt lines: writing INTID | Aff0 << 16
    to +0x0 raises that interrupt (a PPI: the one of the vCPU with that Aff0), to +0x4
    lowers it."""

    RAISE, LOWER = 0x0, 0x4

    def __init__(self, vm: Vm):
        self.vm = vm
        self.rings: list[tuple[str, int, int]] = []

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if offset not in (self.RAISE, self.LOWER):
            return
        intid, aff0 = value & 0xFFFF, (value >> 16) & 0xFF
        mpidr = aff0 if intid < 32 else None
        self.rings.append(("raise" if offset == self.RAISE else "lower", intid, aff0))
        if offset == self.RAISE:
            self.vm.raise_interrupt(intid, mpidr)
        else:
            self.vm.lower_interrupt(intid, mpidr)


class RecordingController:
    """An interrupt controller that only records what reaches it (vm.interrupt_controller)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, int | None]] = []

    def raise_(self, intid: int, mpidr: int | None) -> None:
        self.seen.append(("raise", intid, mpidr))

    def lower(self, intid: int, mpidr: int | None) -> None:
        self.seen.append(("lower", intid, mpidr))


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


SCRIPT = """
// Make the calls of `script` (entries of x0..x5, 48 bytes each; `script_count` of them) on
// HVC, storing each x0 in `script_results`, then power off.
guest_main:
    ldr x19, =script
    ldr x20, =script_results
    ldr x21, =script_count
    ldr x21, [x21]
script_next:
    cbz x21, script_done
    ldp x0, x1, [x19]
    ldp x2, x3, [x19, #16]
    ldp x4, x5, [x19, #32]
    hvc #0
    str x0, [x20], #8
    add x19, x19, #48
    sub x21, x21, #1
    b script_next
script_done:
    b guest_halt
sdei_test_handler:
    ldr x0, =0xC4000025
    hvc #0
.balign 8
script_count: .quad 0
script_results: .skip 8 * 256
script: .skip 48 * 256
"""


def run_script(calls: list[tuple[int, ...]], m: Machine | None = None, **vm_args: object) -> list[int]:
    """Results (signed) of the SDEI/SMCCC calls `calls` = [(x0, x1, ...)] made in order by
    one vCPU."""
    m = m or machine(SCRIPT, **vm_args)
    raw = b"".join(struct.pack("<6Q", *[(v & (2**64 - 1)) for v in (list(c) + [0] * 6)[:6]]) for c in calls)
    m.vm.write_memory(m.sym("script"), raw)
    m.set_word("script_count", len(calls))
    ex = m.run()
    assert ex.reason.name == "SYSTEM_EVENT", ex.describe()
    return [s64(v) for v in m.words("script_results", len(calls))]
