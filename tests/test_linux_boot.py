"""Acceptance with a real kernel: Debian's unmodified arm64 kernel boots on the virt machine
to its console banner through the PL011 (earlycon), and a virtual SError pended through the
vCPU-events API before boot is reported by the kernel's own SError handler when it first
unmasks PSTATE.A (setup_arch, right after earlycon is up)."""

from __future__ import annotations

import os
import re
import time

import pytest

from sandbox import ExitReason
from sandbox.arch.esr import syn_serror
from sandbox.boot import boot
from sandbox.events import VcpuEvents
from sandbox.loaders.image import load_linux_image
from sandbox.memmap import UART_BASE
from sandbox.virt import create_vm

from debian_kernel import KernelUnavailable, fetch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kernel():
    try:
        return fetch()
    except KernelUnavailable as e:
        if os.environ.get("SANDBOX_REQUIRE_KERNEL"):
            pytest.fail(str(e))
        pytest.skip(str(e))


# The explicit form: a bare "earlycon" waits for the ACPI/DT stdout-path scan, which
# comes after the first PSTATE.A unmask in Debian's kernel (CONFIG_ACPI_SPCR_TABLE).
EARLYCON = f"earlycon=pl011,{UART_BASE:#x}"


def boot_kernel(kernel, bootargs=EARLYCON):
    vm = create_vm()
    image = load_linux_image(vm, kernel)
    boot(vm, image, bootargs=bootargs)
    return vm


def run_until(vm, pattern, *, budget, step=2_000_000):
    """Run vCPU 0 in slices until the console shows `pattern`; (match, instructions, seconds)."""
    vcpu = vm.vcpus[0]
    regex = re.compile(pattern)
    start, retired = time.perf_counter(), 0
    while retired < budget:
        ex = vcpu.run(max_instructions=step, timeout=120)
        retired += ex.instructions or 0
        m = regex.search(vm.uart.text)
        if m:
            return m, retired, time.perf_counter() - start
        assert ex.reason is ExitReason.INSTRUCTION_BUDGET, ex.describe() + "\n" + vm.uart.text[-3000:]
    raise AssertionError(f"no {pattern!r} after {retired} instructions:\n{vm.uart.text[-3000:]}")


def test_debian_kernel_prints_its_banner_through_the_pl011(kernel):
    vm = boot_kernel(kernel)
    m, retired, seconds = run_until(vm, r"Machine model: linux,dummy-virt", budget=40_000_000)
    text = vm.uart.text
    assert "Booting Linux on physical CPU 0x0000000000" in text
    assert re.search(r"Linux version 6\.\d+\.\d+-\d+-arm64 \(debian-kernel@lists\.debian\.org\)", text)
    assert "earlycon: pl11 at MMIO 0x0000000009000000" in text
    print(f"banner after {retired} instructions, {seconds:.2f} s")


def test_pended_serror_is_reported_by_the_kernels_own_handler(kernel):
    vm = boot_kernel(kernel)
    iss = 0x11  # DFSC 0x11 (asynchronous SError), AET 0 (uncontainable): fatal for Linux
    vm.vcpus[0].set_events(VcpuEvents(serror_pending=1, serror_has_esr=1, serror_esr=iss))
    m, retired, seconds = run_until(vm, r"SError Interrupt on CPU0, code (0x[0-9a-f]+)", budget=40_000_000,
                                    step=500_000)
    assert int(m.group(1), 16) == syn_serror(iss) == 0xBE000011
    assert vm.vcpus[0].get_events().serror_pending == 0
    # The kernel took it in its own handler: its stack trace names it.
    run_until(vm, r"Kernel panic - not syncing: Asynchronous SError Interrupt", budget=40_000_000)
    assert "do_serror" in vm.uart.text and "setup_arch" in vm.uart.text
    print(f"SError reported after {retired} instructions, {seconds:.2f} s")


def test_without_injection_the_kernel_boots_to_the_end_on_the_gic_and_the_timer(kernel):
    """As far as a machine without block devices goes: the kernel looks for its root
    filesystem and panics (~870 M instructions, under a minute here)."""
    vm = boot_kernel(kernel)
    run_until(vm, r"VFS: Unable to mount root fs on unknown-block\(0,0\)", budget=1_500_000_000, step=50_000_000)
    text = vm.uart.text
    assert "clocksource: Switched to clocksource arch_sys_counter" in text
    assert "uart-pl011 9000000.pl011" in text  # the real driver probed the UART from the tree
    assert "Root IRQ handler: gic_handle_irq" in text
    assert "arch_timer: cp15 timer(s) running at 62.50MHz (virt)" in text
    assert "Calibrating delay loop (skipped), value calculated using timer frequency" in text
    assert "SError" not in text and "Oops" not in text and "WARNING" not in text and "BUG" not in text
    vcpu = vm.vcpus[0]
    assert vcpu.irq.taken > 10  # timer ticks, acknowledged and ended through the GIC
    gic = vm.interrupt_controller
    assert gic.cpus[0].active_priorities == []
