"""SMC Calling Convention function IDs (Arm DEN0028 SMCCC, section 2.5 "Function Identifiers")."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

NOT_SUPPORTED = -1 & 0xFFFFFFFFFFFFFFFF  # SMCCC_RET_NOT_SUPPORTED, as a 64-bit register value
NOT_REQUIRED = -2 & 0xFFFFFFFFFFFFFFFF
INVALID_PARAMETER = -3 & 0xFFFFFFFFFFFFFFFF

SMCCC_VERSION = 0x80000000
SMCCC_ARCH_FEATURES = 0x80000001
SMCCC_VERSION_1_1 = 0x10001


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
    value: int

    @property
    def fast(self) -> bool:  # bit 31: 1 = fast call, 0 = yielding call
        return bool(self.value & (1 << 31))

    @property
    def smc64(self) -> bool:  # bit 30: 1 = SMC64/HVC64 calling convention
        return bool(self.value & (1 << 30))

    @property
    def owner(self) -> int:
        return (self.value >> 24) & 0x3F

    @property
    def number(self) -> int:
        return self.value & 0xFFFF

    @property
    def reserved_bits_clear(self) -> bool:  # bits [23:16] must be zero for fast calls
        return not (self.value >> 16) & 0xFF
