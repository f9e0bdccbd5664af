"""SMCCC dispatch by function ID: one entry point for every HVC/SMC the guest makes.

A service answers on the conduit the Vm assigns it (HVC by default, like KVM's PSCI); on
the other conduit the call gets NOT_SUPPORTED, as on a platform with one conduit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..kvm import SystemEventType
from . import psci
from . import smccc
from .smccc import Conduit

if TYPE_CHECKING:
    from ..vcpu import Vcpu


@dataclass(frozen=True)
class CallResult:
    """What a hypercall does: return values for x0..x3, or an exit to the host."""

    regs: tuple[int, ...] = ()  # values for x0, x1, ... (missing ones are left unchanged)
    system_event: SystemEventType | None = None


class Hypervisor:
    def __init__(self, psci_conduit: Conduit = Conduit.HVC):
        self.psci_conduit = psci_conduit

    def call(self, vcpu: "Vcpu", conduit: Conduit, imm: int, fid: int) -> CallResult:
        """Handle one SMCCC call; `fid` is x0 (the function ID, 32 bits significant)."""
        fid &= 0xFFFFFFFF
        if imm != 0:
            # SMCCC 2.6: the immediate must be zero; anything else is not an SMCCC call.
            return CallResult((smccc.NOT_SUPPORTED,))
        if fid == smccc.SMCCC_VERSION:
            return CallResult((smccc.SMCCC_VERSION_1_1,))
        if fid == smccc.SMCCC_ARCH_FEATURES:
            queried = vcpu.reg("x1") & 0xFFFFFFFF
            known = queried in (smccc.SMCCC_VERSION, smccc.SMCCC_ARCH_FEATURES)
            return CallResult((0 if known else smccc.NOT_SUPPORTED,))
        if (fid >> 24) & 0x3F == smccc.Owner.STANDARD_SECURE and (fid & 0xFFFF) < 0x20:
            if conduit != self.psci_conduit:
                return CallResult((psci.NOT_SUPPORTED,))
            return self._psci(fid)
        return CallResult((smccc.NOT_SUPPORTED,))

    def _psci(self, fid: int) -> CallResult:
        if fid == psci.PSCI_VERSION:
            return CallResult((psci.VERSION_1_1,))
        if fid == psci.SYSTEM_OFF:
            return CallResult(system_event=SystemEventType.SHUTDOWN)
        if fid == psci.SYSTEM_RESET:
            return CallResult(system_event=SystemEventType.RESET)
        if fid == psci.MIGRATE_INFO_TYPE:
            return CallResult((psci.MIGRATE_INFO_TYPE_NOT_PRESENT,))
        return CallResult((psci.NOT_SUPPORTED,))
