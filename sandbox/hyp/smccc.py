"""SMC Calling Convention: function IDs, conduits and the Arm Architecture calls
(Arm DEN0028 SMCCC, section 2.5 "Function Identifiers" and section 7 "Arm Architecture Calls").
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import IntEnum

MASK64 = 0xFFFFFFFFFFFFFFFF
NOT_SUPPORTED = -1 & MASK64  # SMCCC_RET_NOT_SUPPORTED, as a 64-bit register value (SMCCC 7.1)
NOT_REQUIRED = -2 & MASK64
INVALID_PARAMETER = -3 & MASK64

SMCCC_VERSION = 0x80000000
SMCCC_ARCH_FEATURES = 0x80000001
SMCCC_VERSION_1_1 = 0x10001  # what KVM reports (ARM_SMCCC_VERSION_1_1)

# Function-ID fields (SMCCC 2.5, table 2-1).
FAST_CALL = 1 << 31
SMC64 = 1 << 30
OWNER_SHIFT = 24
OWNER_MASK = 0x3F
FUNCTION_MASK = 0xFFFF

# The Arm Architecture Calls ranges (owner 0), SMC32 and SMC64: KVM keeps them for itself
# and refuses a user SMCCC filter over them (Linux arch/arm64/kvm/hypercalls.c,
# SMC32_ARCH_RANGE_BEGIN/END, SMC64_ARCH_RANGE_BEGIN/END).
ARCH_RANGES = ((0x80000000, 0x8000FFFF), (0xC0000000, 0xC000FFFF))


class Owner(IntEnum):
    """Owning entity, function ID bits [29:24] (SMCCC table 6-2)."""

    ARM_ARCH = 0
    CPU = 1
    SIP = 2
    OEM = 3
    STANDARD_SECURE = 4  # PSCI, SDEI
    STANDARD_HYP = 5
    VENDOR_HYP = 6


class Conduit(IntEnum):
    HVC = 0
    SMC = 1


@dataclass(frozen=True)
class FunctionId:
    """A decoded 32-bit function ID (x0/w0 of the call; bits [63:32] of x0 are ignored)."""

    value: int

    @property
    def fast(self) -> bool:  # bit 31: 1 = fast call, 0 = yielding call
        return bool(self.value & FAST_CALL)

    @property
    def smc64(self) -> bool:  # bit 30: 1 = SMC64/HVC64 calling convention
        return bool(self.value & SMC64)

    @property
    def owner(self) -> int:
        return (self.value >> OWNER_SHIFT) & OWNER_MASK

    @property
    def number(self) -> int:
        return self.value & FUNCTION_MASK

    @property
    def reserved_bits_clear(self) -> bool:  # bits [23:16] must be zero for fast calls
        return not (self.value >> 16) & 0xFF

    def describe(self) -> str:
        return describe_function(self.value)


@functools.lru_cache(maxsize=1024)
def describe_function(value: int) -> str:
    """FunctionId(value).describe(), kept per ID (every observed hypercall asks for it)."""
    f = FunctionId(value)
    kind = "fast" if f.fast else "yielding"
    conv = "SMC64" if f.smc64 else "SMC32"
    try:
        owner = Owner(f.owner).name
    except ValueError:
        owner = f"owner {f.owner}"
    return f"{value:#010x} ({kind} {conv} {owner} function {f.number:#x})"


def arguments_of(fid: int, values: "list[int] | tuple[int, ...]") -> tuple[int, ...]:
    """Arguments as the callee sees them: an SMC32/HVC32 call passes 32-bit values in
    w1..w6 and the upper halves are ignored (SMCCC 2.6)."""
    if fid & SMC64:
        return tuple(values)
    return tuple(v & 0xFFFFFFFF for v in values)
