"""The hypervisor shim: what answers the guest's HVC and SMC calls."""

from .dispatch import CallResult, Hypervisor

__all__ = ["CallResult", "Hypervisor"]
