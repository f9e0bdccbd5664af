"""The host's hypercall filter: KVM_ARM_VM_SMCCC_FILTER (Linux Documentation/virt/kvm/devices/vm.rst,
arch/arm64/kvm/hypercalls.c kvm_smccc_set_filter).

The host assigns an action to a range of function IDs: HANDLE (the sandbox answers, the
default), DENY (the guest gets NOT_SUPPORTED) or FWD_TO_USER (the vCPU exits with
KVM_EXIT_HYPERCALL and the host supplies x0-x3). Ranges never overlap each other nor the Arm
Architecture Calls ranges, and the filter is fixed once a vCPU has run, as in KVM.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass
from enum import IntEnum

from ..kvm import EBUSY, EEXIST, EINVAL, kvm_error
from .smccc import ARCH_RANGES


class FilterAction(IntEnum):
    """enum kvm_smccc_filter_action (uapi asm/kvm.h)."""

    HANDLE = 0  # KVM_SMCCC_FILTER_HANDLE
    DENY = 1  # KVM_SMCCC_FILTER_DENY
    FWD_TO_USER = 2  # KVM_SMCCC_FILTER_FWD_TO_USER


_LAYOUT = struct.Struct("<IIB15s")  # struct kvm_smccc_filter: base, nr_functions, action, pad[15]
FILTER_SIZE = _LAYOUT.size  # 24


@dataclass(frozen=True)
class KvmSmcccFilter:
    """struct kvm_smccc_filter, with its exact little-endian layout."""

    base: int
    nr_functions: int
    action: int
    pad: bytes = bytes(15)

    def pack(self) -> bytes:
        return _LAYOUT.pack(self.base, self.nr_functions, self.action, bytes(self.pad).ljust(15, b"\0")[:15])

    @classmethod
    def unpack(cls, data: bytes) -> "KvmSmcccFilter":
        if len(data) != FILTER_SIZE:
            raise kvm_error(EINVAL, f"struct kvm_smccc_filter is {FILTER_SIZE} bytes, got {len(data)}")
        return cls(*_LAYOUT.unpack(data))


class SmcccFilter:
    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ranges: list[tuple[int, int, FilterAction]] = []  # (first, last, action), sorted
        self.ranges_set = False  # a plain attribute: read on every hypercall

    def set(self, f: "KvmSmcccFilter | bytes", *, vm_has_run: bool) -> None:
        """Add one range (KVM_ARM_VM_SMCCC_FILTER on the KVM_ARM_VM_SMCCC_CTRL group)."""
        if isinstance(f, (bytes, bytearray)):
            f = KvmSmcccFilter.unpack(bytes(f))
        if any(bytes(f.pad)):
            raise kvm_error(EINVAL, "kvm_smccc_filter.pad must be zero")
        try:
            action = FilterAction(f.action)
        except ValueError:
            raise kvm_error(EINVAL, f"unknown SMCCC filter action {f.action}") from None
        if not 0 <= f.base <= 0xFFFFFFFF or not 0 < f.nr_functions <= 0xFFFFFFFF:
            raise kvm_error(EINVAL, "an SMCCC filter range needs 32-bit base and 1 <= nr_functions")
        first, last = f.base, f.base + f.nr_functions - 1
        if last > 0xFFFFFFFF:
            raise kvm_error(EINVAL, f"SMCCC filter range {first:#x} + {f.nr_functions:#x} wraps")
        if vm_has_run:
            raise kvm_error(EBUSY, "the SMCCC filter is fixed once a vCPU has run")
        for lo, hi in ARCH_RANGES:
            if first <= hi and lo <= last:
                raise kvm_error(EEXIST, f"[{first:#x}, {last:#x}] overlaps the Arm Architecture Calls "
                                        f"[{lo:#x}, {hi:#x}], which KVM keeps")
        for lo, hi, _ in self._ranges:
            if first <= hi and lo <= last:
                raise kvm_error(EEXIST, f"[{first:#x}, {last:#x}] overlaps the filter range [{lo:#x}, {hi:#x}]")
        at = bisect.bisect(self._starts, first)
        self._starts.insert(at, first)
        self._ranges.insert(at, (first, last, action))
        self.ranges_set = True

    def action(self, fid: int) -> FilterAction:
        """What the filter says about function ID `fid` (HANDLE when no range covers it)."""
        at = bisect.bisect(self._starts, fid) - 1
        if at >= 0:
            lo, hi, action = self._ranges[at]
            if fid <= hi:
                return action
        return FilterAction.HANDLE

    def ranges(self) -> list[KvmSmcccFilter]:
        return [KvmSmcccFilter(lo, hi - lo + 1, int(a)) for lo, hi, a in self._ranges]

    def state(self) -> list[list[int]]:
        return [[lo, hi, int(a)] for lo, hi, a in self._ranges]

    def restore(self, state: list[list[int]]) -> None:
        self._starts = [lo for lo, _, _ in state]
        self._ranges = [(lo, hi, FilterAction(a)) for lo, hi, a in state]
        self.ranges_set = bool(self._ranges)
