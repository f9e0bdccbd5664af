"""Interrupt lines: where `Vm.raise_interrupt` / `Vm.lower_interrupt` send an interrupt.

INTIDs follow the GIC: SGI 0-15 and PPI 16-31 belong to one vCPU (named by its MPIDR; None
means vCPU 0), SPI 32-1019 to the machine. An INTID bound to a registered SDEI event is
SDEI's (TF-A hands a bound interrupt to EL3 at EVENT_REGISTER and back at UNREGISTER):
raising it makes the event pending, lowering it withdraws an instance not yet taken (a
level-sensitive source no longer asserted). Anything else goes to `vm.interrupt_controller`
(`raise_(intid, mpidr)` / `lower(intid, mpidr)`), the GIC when the machine has one. With
none, nothing can take the interrupt: OSError(ENXIO), what KVM_IRQ_LINE answers for a PPI or
SPI on a VM without an in-kernel irqchip; a device raising it from a hook stops the run
with an internal error that says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .hyp.power import MPIDR_HWID_MASK
from .kvm import EINVAL, ENXIO, kvm_error

if TYPE_CHECKING:
    from .vm import Vm


def interrupt_pe(vm: "Vm", intid: int, mpidr: int | None) -> int:
    """The vCPU index an SGI/PPI is for (0 for SPIs, whose routing is not the host's)."""
    if not isinstance(intid, int) or not 0 <= intid <= 0xFFFFFFFF:
        raise kvm_error(EINVAL, f"INTID {intid!r} is not a 32-bit interrupt number")
    if intid >= 32 or mpidr is None:
        return 0
    for v in vm.vcpus:
        if v.mpidr & MPIDR_HWID_MASK == mpidr & MPIDR_HWID_MASK:
            return v.index
    raise kvm_error(EINVAL, f"no vCPU has MPIDR {mpidr:#x}")


def interrupt_line(vm: "Vm", intid: int, mpidr: int | None, *, asserted: bool) -> None:
    pe = interrupt_pe(vm, intid, mpidr)
    sdei = vm.hypervisor.sdei
    ev = sdei.claims(intid, pe)
    if ev is not None:
        if asserted:
            sdei.pend(ev, pe)
        else:
            sdei.withdraw(ev, pe)
    elif vm.interrupt_controller is not None:
        if asserted:
            vm.interrupt_controller.raise_(intid, mpidr)
        else:
            vm.interrupt_controller.lower(intid, mpidr)
    else:
        raise kvm_error(ENXIO, f"INTID {intid} is not bound to a registered SDEI event and the Vm has "
                               "no interrupt controller")
