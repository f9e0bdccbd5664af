"""The platform signalling an SDEI event, as firmware does for an event it owns (TF-A
`sdei_dispatch_event()`, used by its RAS code for firmware-first errors; Linux ghes_sdei).

Unlike KVM_SDEI_CMD_INJECT_EVENT, which adds a counted instance, a signal is an edge: the
event is pending once however often it is signalled before it is taken (DEN0054C 5.1.16.1,
quoted by Oliver Upton on KVM v6 03/18). The event must exist and be registered and enabled
for the target: TF-A refuses to dispatch an event its client has not registered and enabled
(sdei_dispatch_event returns -1), so the host gets OSError(ENOENT / EPERM) and nothing is
pending. A shared event goes where its registration routes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..kvm import ENOENT, EPERM, Cap, ENOTTY, kvm_error
from .sdei_state import STATUS_ENABLED, STATUS_REGISTERED

if TYPE_CHECKING:
    from ..vcpu import Vcpu
    from .sdei_events import SdeiEvent
    from ..vm import Vm


def signal_event(vm: "Vm", vcpu: "Vcpu", num: int) -> None:
    """Make SDEI event `num` pending for `vcpu` (its own for a private event; a shared event
    is routed by its registration), edge-triggered."""
    ev = check_signal(vm, vcpu, num)
    vm.hypervisor.sdei.pend(ev, vcpu.index)


def check_signal(vm: "Vm", vcpu: "Vcpu", num: int) -> "SdeiEvent":
    """The event `signal_event` would make pending, or the OSError it would raise."""
    if not vm.check_extension(Cap.ARM_SDEI):
        raise kvm_error(ENOTTY, "the Vm does not offer KVM_CAP_ARM_SDEI")
    sdei = vm.hypervisor.sdei
    ev = sdei.event(num) if 0 <= num <= 0xFFFFFFFF else None
    if ev is None:
        raise kvm_error(ENOENT, f"no SDEI event {num:#x}")
    state = sdei.table.handler(ev, vcpu.index).state
    if state & (STATUS_REGISTERED | STATUS_ENABLED) != STATUS_REGISTERED | STATUS_ENABLED:
        raise kvm_error(EPERM, f"SDEI event {num:#x} is not registered and enabled for vCPU {vcpu.index}")
    return ev
