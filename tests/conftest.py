"""Shared fixtures: a Vm with one vCPU, and a helper that assembles a guest, runs it and
returns what the guest's own vector table recorded."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from sandbox import Exit, ExitReason, Program, Vcpu, Vm, assemble
from sandbox.firmware import ExceptionRecord

RAM = 0x40000000


@dataclass
class GuestRun:
    vm: Vm
    vcpu: Vcpu
    program: Program
    exit: Exit

    @property
    def records(self) -> list[ExceptionRecord]:
        return self.vm.exception_records(self.program)

    def sym(self, name: str) -> int:
        return self.program[name]


def boot(source: str, *, vm: Vm | None = None, run: bool = True, **run_kwargs: object) -> GuestRun:
    """Assemble `source` with the mini kernel (it must define guest_main), load it at RAM
    base, start at _start and run to the first exit."""
    vm = vm or Vm()
    vcpu = vm.vcpus[0] if vm.vcpus else vm.create_vcpu()
    program = assemble('.include "kernel.S"\n' + source, RAM)
    vm.load(program)
    vcpu.set_reg("pc", program["_start"])
    ex = vcpu.run(**run_kwargs) if run else None  # type: ignore[arg-type]
    return GuestRun(vm, vcpu, program, ex)  # type: ignore[arg-type]


def assert_halted(run: GuestRun) -> None:
    assert run.exit.reason is ExitReason.SYSTEM_EVENT, run.exit.describe()


@pytest.fixture
def vm() -> Vm:
    return Vm()


@pytest.fixture
def vcpu(vm: Vm) -> Vcpu:
    return vm.create_vcpu()
