"""A device whose accesses end in an asynchronous external abort (an SError).

A bus slave that answers with an error (a posted write nobody accepts, a powered-down
peripheral) raises a physical SError some time after the access completed. Under KVM the
host takes it, sees it came from the guest, and reflects it as a virtual SError
(kvm_handle_guest_serror() -> kvm_inject_vabt(): ISS = IDS, the guest sees 0xBF000000;
reference/ras.md section 4). The model pends that vSError on the accessing vCPU once the
access has retired (and `delay_instructions` more have run); the guest then takes it when
PSTATE.A is clear, or an ESB defers it.

A second error response while the first SError is still pending does not replace it: the
vCPU takes one SError whose syndrome follows the RAS multiple-SError rule
(SErrorGate.pend_another). Reads return all ones, as a failed bus read commonly does.
`signals` counts the SErrors raised.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..serror import default_vserror_iss

if TYPE_CHECKING:
    from ..vcpu import Vcpu
    from ..vm import Vm

ALL_ONES = 0xFFFFFFFFFFFFFFFF


class SErrorSource:
    def __init__(self, vm: "Vm", iss: int | None = None, *, delay_instructions: int = 0):
        """`iss`: the vSError's ISS (VSESR_EL2[24:0]); None gives KVM's default.
        `delay_instructions`: how many instructions after the access the error arrives (a
        posted write's error response comes back later)."""
        self.vm = vm
        self.iss = iss
        self.delay = delay_instructions
        self.signals = 0

    def attach(self, vm: "Vm") -> None:
        """Follow the device to another Vm (after a snapshot is restored)."""
        self.vm = vm

    def read(self, offset: int, size: int) -> int:
        self._signal()
        return ALL_ONES

    def write(self, offset: int, size: int, value: int) -> None:
        self._signal()

    def _signal(self) -> None:
        vcpu = self._accessing_vcpu()
        if vcpu is None:
            return
        self.signals += 1
        iss = default_vserror_iss(self.vm) if self.iss is None else self.iss
        # Pended once the access has retired and `delay` more instructions have
        # (sandbox/access_completion.py).
        vcpu.pause_then(lambda: vcpu.serror.pend_another(iss), after_instructions=self.delay)

    def _accessing_vcpu(self) -> "Vcpu | None":
        # Device callbacks run inside the accessing vCPU's run; only one vCPU runs at a time.
        return next((v for v in self.vm.vcpus if v._running), None)
