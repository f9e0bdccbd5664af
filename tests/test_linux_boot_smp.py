"""Debian's unmodified arm64 kernel on two vCPUs (`sandbox.boot.start(smp=2)`): the kernel
starts CPU 1 with PSCI CPU_ON, both run through Vm.run(), and both CPUs' console lines carry
timestamps of one system time (the Vm-wide counter)."""

from __future__ import annotations

import re
import time

import pytest

from sandbox import ExitReason
from sandbox.boot import start

from test_linux_boot import EARLYCON, kernel  # noqa: F401 (the fixture)

pytestmark = pytest.mark.slow

STAMP = re.compile(r"^\[\s*(\d+\.\d+)\] (.*)$", re.M)


def run_until(machine, pattern, *, budget, step=20_000_000):
    """Run every vCPU in slices until the console shows `pattern`; (instructions, seconds)."""
    regex = re.compile(pattern)
    began, retired = time.perf_counter(), 0
    while retired < budget:
        ex = machine.run(max_instructions=step, timeout=300)
        retired += ex.instructions or 0
        if regex.search(machine.vm.uart.text):
            return retired, time.perf_counter() - began
        assert ex.reason is ExitReason.INSTRUCTION_BUDGET, ex.describe() + "\n" + machine.vm.uart.text[-3000:]
    raise AssertionError(f"no {pattern!r} after {retired} instructions:\n{machine.vm.uart.text[-3000:]}")


def test_debian_kernel_brings_up_both_vcpus_on_one_system_time(kernel):  # noqa: F811
    machine = start(kernel, smp=2, bootargs=EARLYCON)
    retired, seconds = run_until(machine, r"SMP: Total of 2 processors activated", budget=300_000_000)
    text = machine.vm.uart.text
    assert "psci: PSCIv1.1 detected in firmware." in text
    assert "psci: SMC Calling Convention v1.1" in text
    assert "smp: Bringing up secondary CPUs ..." in text
    assert "CPU1: Booted secondary processor 0x0000000001 [0x000f0510]" in text
    assert "smp: Brought up 1 node, 2 CPUs" in text
    assert "CPU1: failed" not in text and "BUG" not in text and "WARNING" not in text
    assert all(v.instructions > 0 for v in machine.vm.vcpus)
    # One time for both CPUs: CPU 1's lines sit between CPU 0's in time as on the console
    # (each vCPU on its own count printed CPU 1's lines hours "later"). From the bring-up
    # on: when tty0 registers, the kernel replays its log from 0.000000 once.
    stamps = [float(s) for s, _ in STAMP.findall(text[text.index("smp: Bringing up secondary CPUs"):])]
    assert len(stamps) >= 5 and stamps == sorted(stamps) and stamps[-1] < 1.0
    print(f"2 CPUs up after {retired} instructions "
          f"({', '.join(str(v.instructions) for v in machine.vm.vcpus)}), {seconds:.2f} s")
