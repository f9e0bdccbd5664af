"""How firmware-first errors are announced to the guest, one function per HEST notification
type. `NOTIFIERS` is the registry `sandbox.ras.ghes` uses; `check_notifiable` says, before
anything is written, whether a notification can be raised at all.

- SEA: a synchronous external abort taken at the vCPU's current PC, as QEMU's
  kvm_inject_arm_sea() does: data abort, FSC 0x10, FnV = 1 (FAR not valid), EC by the
  vCPU's EL, so ESR 0x96000410 at EL1 and 0x92000410 from EL0 (reference/ras.md 1.2).
- SEI: a virtual SError with an architected RAS syndrome (IDS 0, DFSC 0x11 "asynchronous
  SError", AET from the error: RAS spec DDI0587B 2.4.4), taken when the guest unmasks.
- POLLED: nothing; the OS finds the record when it polls.
- SOFTWARE_DELEGATED (SDEI, type 11): the SDEI event whose number is the entry's
  notification vector is signalled to the vCPU through the shim's dispatcher (ACPI 6.5
  18.3.2.9: for type 11 the vector is the SDEI event number; Linux registers its GHES
  callback for that event with sdei_register_ghes; TF-A's RAS code dispatches it). An edge: a second
  signal before the handler runs gives one run. The guest must have registered and enabled
  the event (TF-A sdei_dispatch_event refuses otherwise); event 0 cannot be used (Linux
  sdei_register_ghes refuses it: it is the software-signalled event).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from ..arch import esr as E
from ..arch.exception import ExceptionKind
from ..arch import pstate as ps
from ..arch.ras import DEFAULT_VSERROR_ISS
from ..hyp.sdei_platform import check_signal, signal_event
from ..kvm import EINVAL, kvm_error
from .cper import Severity
from .hest import Notification

if TYPE_CHECKING:
    from ..vcpu import Vcpu
    from .ghes import MemoryError

Notifier = Callable[["Vcpu", "MemoryError", int], None]  # (vcpu, error, vector)


def sea_syndrome(pstate: int) -> int:
    """QEMU kvm_inject_arm_sea(): syn_data_abort_no_iss(same_el, FnV=1, ..., fsc=0x10)."""
    return E.syn_data_abort(ps.el(pstate) != 0, E.FSC.SEA, fnv=True)


def sei_syndrome(error: "MemoryError", ras: bool) -> int:
    """The vSError ISS announcing `error`: the PE error state after the error (AET): CE for a
    corrected error, UEO (restartable) for an action-optional one nobody consumed, UER
    (recoverable) for an action-required one, UC for a fatal one (DDI0587B 2.2, 2.4.4; Linux
    arm64_is_fatal_ras_serror() survives CE and UEO). Without FEAT_RAS there is no architected
    syndrome: KVM's implementation-defined one (IDS)."""
    if not ras:
        return DEFAULT_VSERROR_ISS
    if error.severity == Severity.FATAL:
        aet = E.AET.UC
    elif error.severity == Severity.CORRECTED:
        aet = E.AET.CE
    elif error.action_required:
        aet = E.AET.UER
    else:
        aet = E.AET.UEO
    return (int(aet) << E.AET_SHIFT) | E.FSC.SERROR


def notify_sea(vcpu: "Vcpu", error: "MemoryError", vector: int) -> None:
    pstate = vcpu.pstate()
    vcpu.take_exception(ExceptionKind.SYNC, sea_syndrome(pstate), vcpu.reg("pc"), from_pstate=pstate)


def notify_sei(vcpu: "Vcpu", error: "MemoryError", vector: int) -> None:
    vcpu.serror.pend_another(sei_syndrome(error, vcpu.vm.ras))
    vcpu.serror.deliver_if_unmasked()


def notify_polled(vcpu: "Vcpu", error: "MemoryError", vector: int) -> None:
    """Polled sources raise nothing: the OS reads the block on its own schedule."""


def notify_sdei(vcpu: "Vcpu", error: "MemoryError", vector: int) -> None:
    signal_event(vcpu.vm, vcpu, vector)


def check_notifiable(notification: Notification, vcpu: "Vcpu", vector: int) -> None:
    """OSError if `notification` cannot be raised on `vcpu` now (nothing is written then)."""
    if notification == Notification.SOFTWARE_DELEGATED:
        if vector == 0:
            raise kvm_error(EINVAL, "SDEI event 0 cannot notify a GHES source (Linux sdei_register_ghes)")
        check_signal(vcpu.vm, vcpu, vector)


NOTIFIERS: dict[Notification, Notifier] = {
    Notification.SEA: notify_sea,
    Notification.SEI: notify_sei,
    Notification.POLLED: notify_polled,
    Notification.SOFTWARE_DELEGATED: notify_sdei,
}

SYNCHRONOUS = frozenset({Notification.SEA})  # notifications tied to the access that consumed the error
