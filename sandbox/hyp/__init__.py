"""The hypervisor shim: what answers the guest's HVC and SMC calls (SMCCC, PSCI, SDEI), the
host's SMCCC filter, vCPU power states, and the VMM side of SDEI."""

from .dispatch import Hypervisor
from .result import CallResult

__all__ = ["CallResult", "Hypervisor"]
