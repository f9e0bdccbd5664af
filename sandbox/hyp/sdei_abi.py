"""SDEI (Arm DEN0054C) numbers: function IDs, error codes, flags, info and feature IDs, and
the limits of the KVM SDEI series v5 (reference/sdei.md sections 1, 2 and 5).

Error codes are 64-bit register values (signed in the spec).
"""

from __future__ import annotations

from enum import IntEnum

MASK64 = 0xFFFFFFFFFFFFFFFF


class SdeiFn(IntEnum):
    """Function IDs: fast SMC64 calls of the Standard Secure Service range, 0xC4000020-0xC400003F
    reserved for SDEI (TF-A include/services/sdei.h; Linux uapi linux/arm_sdei.h)."""

    VERSION = 0xC4000020
    EVENT_REGISTER = 0xC4000021
    EVENT_ENABLE = 0xC4000022
    EVENT_DISABLE = 0xC4000023
    EVENT_CONTEXT = 0xC4000024
    EVENT_COMPLETE = 0xC4000025
    EVENT_COMPLETE_AND_RESUME = 0xC4000026
    EVENT_UNREGISTER = 0xC4000027
    EVENT_STATUS = 0xC4000028
    EVENT_GET_INFO = 0xC4000029
    EVENT_ROUTING_SET = 0xC400002A
    PE_MASK = 0xC400002B
    PE_UNMASK = 0xC400002C
    INTERRUPT_BIND = 0xC400002D
    INTERRUPT_RELEASE = 0xC400002E
    EVENT_SIGNAL = 0xC400002F  # v1.1
    FEATURES = 0xC4000030  # v1.1 (KVM v7 15/22; v6 had 0xC4000050 by mistake)
    PRIVATE_RESET = 0xC4000031
    SHARED_RESET = 0xC4000032


FN_FIRST, FN_LAST = 0xC4000020, 0xC400003F  # the reserved range; 0xC4000033.. are unknown: -1

# Error codes (DEN0054C; Linux uapi arm_sdei.h SDEI_*; TF-A SDEI_E*).
SUCCESS = 0
NOT_SUPPORTED = -1 & MASK64
INVALID_PARAMETERS = -2 & MASK64
DENIED = -3 & MASK64
PENDING = -5 & MASK64
OUT_OF_RESOURCE = -10 & MASK64
ERROR_CODES = frozenset({NOT_SUPPORTED, INVALID_PARAMETERS, DENIED, PENDING, OUT_OF_RESOURCE})

# VERSION: bits [62:48] major, [47:32] minor, [31:0] vendor (Linux SDEI_VERSION_*_SHIFT).
# 1.1 (DEN0054C with EVENT_SIGNAL and FEATURES) from vendor "KVM" =
# ARM_SMCCC_VENDOR_HYP_UID_KVM_REG_2, as the KVM series reports it (v7 16/22).
VENDOR_KVM = 0x4B564D
VERSION_1_1 = (1 << 48) | (1 << 32) | VENDOR_KVM

# EVENT_COMPLETE status (x1); TF-A ignores it, Linux sends FAILED when its callback fails.
EV_HANDLED = 0
EV_FAILED = 1

# EVENT_REGISTER flags (x4) and ROUTING_SET mode (x2) (TF-A-Tests smc_fuzz sdei_smc_calls.txt).
RM_ANY = 0
RM_PE = 1
REGF_RELATIVE = 1 << 1  # v1.1 relative mode: not supported (KVM and TF-A reject it)

SAVED_GPREGS = 18  # EVENT_CONTEXT indices 0..17 (TF-A SDEI_SAVED_GPREGS)


class EventType(IntEnum):
    PRIVATE = 0
    SHARED = 1


class Priority(IntEnum):
    NORMAL = 0
    CRITICAL = 1


class Info(IntEnum):
    """EVENT_GET_INFO x2 (Linux uapi SDEI_EVENT_INFO_*)."""

    EV_TYPE = 0
    EV_SIGNALED = 1
    EV_PRIORITY = 2
    EV_ROUTING_MODE = 3
    EV_ROUTING_AFF = 4


class Feature(IntEnum):
    """FEATURES x1 (TF-A FEATURE_BIND_SLOTS; KVM v7 15/22)."""

    BIND_SLOTS = 0
    RELATIVE_MODE = 1


SW_SIGNALED_EVENT = 0  # event 0: private, normal, the only one EVENT_SIGNAL accepts
EVENT_NUMBER_RESERVED = 1 << 31  # bit 31 must be 0 (DEN0054C 4.4, via Oliver Upton on KVM v5 02/22)

# Interrupt IDs a bind accepts (GICv3: PPI 16-31 -> private slot, SPI 32-1019 -> shared slot).
PPI_FIRST, PPI_LAST = 16, 31
SPI_FIRST, SPI_LAST = 32, 1019

# KVM SDEI series v5 (02/22 asm/kvm_sdei.h, uapi kvm_sdei_state.h).
KVM_SDEI_EVENT_NUM_TYPE_SHIFT = 22
KVM_SDEI_EVENT_NUM_TYPE_MASK = 3 << KVM_SDEI_EVENT_NUM_TYPE_SHIFT
KVM_SDEI_EVENT_NUM_TYPE_VIRT = 1  # events KVM/the VMM provide have 0b01 in bits [23:22]
KVM_SDEI_MAX_VCPUS = 512  # sizes the per-vCPU arrays of kvm_sdei_registered_event_state
KVM_SDEI_MAX_EVENTS = 128  # registered / exposed / per-vCPU event instances
KVM_SDEI_INVALID_EVENT = 0xFFFFFFFF  # "no event" in kvm_sdei_vcpu_state.{critical,normal}_num

# Events the sandbox numbers for interrupt bindings: KVM-visible (bits [23:22] = 0b01),
# 1000+slot private and 2000+slot shared as on TF-A's Arm platforms (arm_def.h
# ARM_SDEI_DP_EVENT_* / ARM_SDEI_DS_EVENT_*).
DYNAMIC_PRIVATE_BASE = (KVM_SDEI_EVENT_NUM_TYPE_VIRT << KVM_SDEI_EVENT_NUM_TYPE_SHIFT) | 1000
DYNAMIC_SHARED_BASE = (KVM_SDEI_EVENT_NUM_TYPE_VIRT << KVM_SDEI_EVENT_NUM_TYPE_SHIFT) | 2000
DEFAULT_BIND_SLOTS = (3, 3)  # (private, shared), as the Arm FVP: FEATURES(BIND_SLOTS) = 0x00030003

# The implementation version KVM_SDEI_CMD_GET_VERSION reports (seed 002: "different from that
# of the followed SDEI specification"): 1.1 = DEN0054C with routing and interrupt binding.
KVM_SDEI_IMPL_VERSION = 0x00010001


def is_kvm_visible(num: int) -> bool:
    """Event 0 or a number with the KVM 'virtual' type in bits [23:22] and bit 31 clear
    (v5 kvm_sdei_is_supported)."""
    if num == SW_SIGNALED_EVENT:
        return True
    return (not num & ~0x7FFFFFFF and
            (num & KVM_SDEI_EVENT_NUM_TYPE_MASK) >> KVM_SDEI_EVENT_NUM_TYPE_SHIFT == KVM_SDEI_EVENT_NUM_TYPE_VIRT)


def signed(value: int) -> int:
    """A 64-bit register value as the signed number the spec writes."""
    value &= MASK64
    return value - (1 << 64) if value >> 63 else value
