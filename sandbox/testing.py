"""Helpers for guest tests: assemble a guest with the mini kernel, run it, read what it saw.

Used by the pytest plugin's `boot_guest` fixture (sandbox.pytest_plugin) and importable
directly (`from sandbox.testing import boot`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .asm import Program, assemble
from .exits import Exit
from .firmware import ExceptionRecord
from .kvm import ExitReason
from .vcpu import Vcpu
from .vm import RAM_BASE, Vm

RAM = RAM_BASE


@dataclass
class GuestRun:
    """A guest that was booted: its machine, the program and the exit it stopped with."""

    vm: Vm
    vcpu: Vcpu
    program: Program
    exit: Exit

    @property
    def records(self) -> list[ExceptionRecord]:
        """What the guest's recording vector table saw (firmware/vectors.S), oldest first."""
        return self.vm.exception_records(self.program)

    def sym(self, name: str) -> int:
        return self.program[name]


def boot(source: str, *, vm: Vm | None = None, run: bool = True, base: int = RAM,
         **run_kwargs: object) -> GuestRun:
    """Assemble `source` with the mini kernel (firmware/kernel.S; it must define guest_main),
    load it at `base`, start vCPU 0 at _start and (with `run`) run it to the first exit."""
    vm = vm or Vm()
    vcpu = vm.vcpus[0] if vm.vcpus else vm.create_vcpu()
    program = assemble('.include "kernel.S"\n' + source, base)
    vm.load(program)
    vcpu.set_reg("pc", program["_start"])
    ex = vcpu.run(**run_kwargs) if run else None  # type: ignore[arg-type]
    return GuestRun(vm, vcpu, program, ex)  # type: ignore[arg-type]


def assert_halted(run: GuestRun) -> None:
    """The guest came back to _start and powered off (PSCI SYSTEM_OFF)."""
    assert run.exit.reason is ExitReason.SYSTEM_EVENT, run.exit.describe()
