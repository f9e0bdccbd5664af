"""The "virt" machine profile: a Vm laid out and equipped like QEMU's `-M virt`.

`create_vm` builds it: RAM at 0x40000000, the PL011 at 0x09000000, a GICv2 at
0x08000000/0x08010000 (sandbox/memmap.py holds every address), N vCPUs with MPIDR Aff0 =
index, each with its generic timer on deterministic time, PSCI on the chosen conduit.
`sandbox.devicetree.generate` describes it; `sandbox.boot.boot` starts a loaded image the
way a bootloader does.

One departure from Unicorn's CPU, for replay: the profile hides FEAT_RNG
(ID_AA64ISAR0_EL1.RNDR = 0) because Unicorn's RNDR returns host randomness; a kernel shown
RNDR seeds its RNG from it and two boots would differ.
"""

from __future__ import annotations

from typing import TextIO

from .devices.gic import MAX_CPUS, GicV2
from .hyp.smccc import Conduit
from .idregs import ISAR0, ISAR0_RNDR, with_field
from .kvm import EINVAL, kvm_error
from .memmap import RAM_BASE
from .timer import attach_timer
from .vm import UnbackedPolicy, Vm

DEFAULT_RAM_SIZE = 256 << 20  # enough for a distribution kernel (image_size ~ 32 MiB + CMA)


def create_vm(*, ram_size: int = DEFAULT_RAM_SIZE, smp: int = 1, psci_conduit: Conduit = Conduit.HVC,
              uart_echo: TextIO | None = None, ras: bool = True, unbacked: UnbackedPolicy = "abort",
              quirks: "tuple[str, ...] | list[str] | set[str]" = (), max_ram: int | None = None) -> Vm:
    """A virt machine with `smp` vCPUs (powered off except vCPU 0 until PSCI CPU_ON)."""
    if not 1 <= smp <= MAX_CPUS:
        raise kvm_error(EINVAL, f"smp must be 1..{MAX_CPUS} (a GICv2 serves at most {MAX_CPUS} CPUs)")
    extra = {} if max_ram is None else {"max_ram": max_ram}
    vm = Vm(ram_size=ram_size, ram_base=RAM_BASE, unbacked=unbacked, ras=ras, psci_conduit=psci_conduit,
            uart_echo=uart_echo, quirks=quirks, **extra)
    for _ in range(smp):
        vm.create_vcpu()
    GicV2.create(vm)
    for vcpu in vm.vcpus:
        attach_timer(vcpu)
    boot_cpu = vm.vcpus[0]
    boot_cpu.set_reg("ID_AA64ISAR0_EL1", with_field(boot_cpu.reg("ID_AA64ISAR0_EL1"), ISAR0_RNDR, 0))
    assert vm.id_registers.read(ISAR0, boot_cpu) >> ISAR0_RNDR == 0
    return vm


# -- migration: the snapshot header keys of the machine's own devices ------------------------

GIC_REGION_NAMES = ("gic-dist", "gic-cpu")


def machine_state(vm: Vm) -> dict[str, object]:
    """New snapshot header keys: "gic" (the GICv2 state), "generic_timer" (one entry per
    vCPU, None without a timer) and "id_registers" (the guest's ID register view)."""
    gic = vm.interrupt_controller
    return {
        "gic": gic.state() if isinstance(gic, GicV2) else None,
        "generic_timer": [None if v.timer is None else v.timer.state() for v in vm.vcpus],
        "id_registers": vm.id_registers.state(),
    }


def restore_machine_state(vm: Vm, header: dict[str, object]) -> None:
    """Rebuild what `machine_state` saved on a Vm whose vCPUs are restored."""
    ids = header.get("id_registers")
    if ids is not None:
        vm.id_registers.restore(ids)  # type: ignore[arg-type]
    gic_state = header.get("gic")
    if gic_state is not None:
        gic = GicV2.create(vm, int(gic_state["num_irqs"]) - 32)  # type: ignore[index]
        gic.restore(gic_state)  # type: ignore[arg-type]
    for vcpu, timer_state in zip(vm.vcpus, header.get("generic_timer") or []):  # type: ignore[arg-type]
        if timer_state is not None:
            attach_timer(vcpu).restore(timer_state)
