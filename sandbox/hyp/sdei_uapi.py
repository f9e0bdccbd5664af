"""The state structs of KVM_ARM_SDEI_COMMAND (seed 002: Gavin Shan's SDEI series v5,
Documentation/virt/kvm/arm/sdei.rst and uapi asm/kvm_sdei_state.h), as Python objects with
their exact little-endian byte layouts (`pack()` / `unpack()`).

    kvm_sdei_cmd                      16 bytes   cmd u32, version/count u32, pointer/num u64
    kvm_sdei_exposed_event_state      24 bytes   num, type, signaled, priority, padding[5], notifier
    kvm_sdei_registered_event_state 8408 bytes   num, route_mode, padding[3], (hole 4),
                                                 route_affinity, ep_address[512], ep_arg[512],
                                                 registered[8], enabled[8], unregister_pending[8]
    kvm_sdei_vcpu_event_state         16 bytes   num, event_count u32, padding u32
    kvm_sdei_vcpu_regs_state         160 bytes   regs[18], pc, pstate
    kvm_sdei_vcpu_state              344 bytes   masked, padding[7], critical_num, normal_num,
                                                 critical_regs, normal_regs

The per-vCPU arrays have KVM_SDEI_MAX_VCPUS (512) entries, the bitmaps 512/64 words. The
notifier of the exposed-event struct was a kernel function pointer in v5 (rejected in
review); here it is a Python callable, which has no byte form: it packs as 0 and bytes with
a non-zero notifier are refused (EINVAL).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Callable

from ..kvm import EINVAL, kvm_error
from .sdei_abi import KVM_SDEI_INVALID_EVENT, KVM_SDEI_MAX_VCPUS, SAVED_GPREGS

BITMAP_WORDS = KVM_SDEI_MAX_VCPUS // 64


class SdeiCmd(IntEnum):
    """KVM_SDEI_CMD_* sub-commands, numbered in the order the v5 document lists them."""

    GET_VERSION = 0
    GET_EXPOSED_EVENT_COUNT = 1
    GET_EXPOSED_EVENT = 2
    SET_EXPOSED_EVENT = 3
    GET_REGISTERED_EVENT_COUNT = 4
    GET_REGISTERED_EVENT = 5
    SET_REGISTERED_EVENT = 6
    GET_VCPU_EVENT_COUNT = 7
    GET_VCPU_EVENT = 8
    SET_VCPU_EVENT = 9
    GET_VCPU_STATE = 10
    SET_VCPU_STATE = 11
    INJECT_EVENT = 12


VCPU_COMMANDS = frozenset({SdeiCmd.GET_VCPU_EVENT_COUNT, SdeiCmd.GET_VCPU_EVENT, SdeiCmd.SET_VCPU_EVENT,
                           SdeiCmd.GET_VCPU_STATE, SdeiCmd.SET_VCPU_STATE, SdeiCmd.INJECT_EVENT})


def _size_check(layout: struct.Struct, data: bytes, name: str) -> None:
    if len(data) != layout.size:
        raise kvm_error(EINVAL, f"struct {name} is {layout.size} bytes, got {len(data)}")


_CMD = struct.Struct("<IIQ")


@dataclass
class KvmSdeiCmd:
    """struct kvm_sdei_cmd. `count` is the union of version and count; `num` the union of
    the state pointer and the event number (a pointer means nothing to Python: the command
    takes its array as bytes beside the struct)."""

    cmd: int
    count: int = 0
    num: int = 0

    @property
    def version(self) -> int:
        return self.count

    def pack(self) -> bytes:
        return _CMD.pack(self.cmd, self.count, self.num)

    @classmethod
    def unpack(cls, data: bytes) -> "KvmSdeiCmd":
        _size_check(_CMD, data, "kvm_sdei_cmd")
        return cls(*_CMD.unpack(data))


_EXPOSED = struct.Struct("<QBBB5sQ")


@dataclass
class ExposedEventState:
    num: int
    type: int = 0  # 0 private, 1 shared
    signaled: int = 0  # can be signalled
    priority: int = 0  # 0 normal, 1 critical
    padding: bytes = bytes(5)
    notifier: Callable | None = None  # (vcpu, num, KVM_SDEI_NOTIFY_*) on delivery and completion

    def pack(self) -> bytes:
        return _EXPOSED.pack(self.num, self.type, self.signaled, self.priority, bytes(self.padding), 0)

    @classmethod
    def unpack(cls, data: bytes) -> "ExposedEventState":
        _size_check(_EXPOSED, data, "kvm_sdei_exposed_event_state")
        num, typ, sig, prio, pad, notifier = _EXPOSED.unpack(data)
        if notifier:
            raise kvm_error(EINVAL, "kvm_sdei_exposed_event_state.notifier must be 0 in bytes: a notifier "
                                    "is a Python callable, set on the object")
        return cls(num, typ, sig, prio, pad)


_REGISTERED = struct.Struct(f"<QB3s4xQ{KVM_SDEI_MAX_VCPUS}Q{KVM_SDEI_MAX_VCPUS}Q"
                            f"{BITMAP_WORDS}Q{BITMAP_WORDS}Q{BITMAP_WORDS}Q")


def _zeros(n: int) -> Callable[[], list[int]]:
    return lambda: [0] * n


@dataclass
class RegisteredEventState:
    """One registered event; a private event has one entry per vCPU index, a shared one
    uses index 0 (v5 kvm_sdei_vcpu_index)."""

    num: int
    route_mode: int = 0
    padding: bytes = bytes(3)
    route_affinity: int = 0
    ep_address: list[int] = field(default_factory=_zeros(KVM_SDEI_MAX_VCPUS))
    ep_arg: list[int] = field(default_factory=_zeros(KVM_SDEI_MAX_VCPUS))
    registered: list[int] = field(default_factory=_zeros(BITMAP_WORDS))
    enabled: list[int] = field(default_factory=_zeros(BITMAP_WORDS))
    unregister_pending: list[int] = field(default_factory=_zeros(BITMAP_WORDS))

    @staticmethod
    def bit(bitmap: list[int], index: int) -> bool:
        return bool(bitmap[index // 64] >> (index % 64) & 1)

    @staticmethod
    def set_bit(bitmap: list[int], index: int) -> None:
        bitmap[index // 64] |= 1 << (index % 64)

    def indices(self) -> list[int]:
        """vCPU indices with any bit set."""
        return [i for i in range(KVM_SDEI_MAX_VCPUS)
                if self.bit(self.registered, i) or self.bit(self.enabled, i) or self.bit(self.unregister_pending, i)]

    def pack(self) -> bytes:
        return _REGISTERED.pack(self.num, self.route_mode, bytes(self.padding), self.route_affinity,
                                *self.ep_address, *self.ep_arg, *self.registered, *self.enabled,
                                *self.unregister_pending)

    @classmethod
    def unpack(cls, data: bytes) -> "RegisteredEventState":
        _size_check(_REGISTERED, data, "kvm_sdei_registered_event_state")
        f = _REGISTERED.unpack(data)
        n, w = KVM_SDEI_MAX_VCPUS, BITMAP_WORDS
        o = 4
        return cls(f[0], f[1], f[2], f[3], list(f[o:o + n]), list(f[o + n:o + 2 * n]),
                   list(f[o + 2 * n:o + 2 * n + w]), list(f[o + 2 * n + w:o + 2 * n + 2 * w]),
                   list(f[o + 2 * n + 2 * w:o + 2 * n + 3 * w]))


_VCPU_EVENT = struct.Struct("<QII")


@dataclass
class VcpuEventState:
    """A pending event on a vCPU: `event_count` instances not yet delivered."""

    num: int
    event_count: int = 1
    padding: int = 0

    def pack(self) -> bytes:
        return _VCPU_EVENT.pack(self.num, self.event_count, self.padding)

    @classmethod
    def unpack(cls, data: bytes) -> "VcpuEventState":
        _size_check(_VCPU_EVENT, data, "kvm_sdei_vcpu_event_state")
        return cls(*_VCPU_EVENT.unpack(data))


_REGS = struct.Struct(f"<{SAVED_GPREGS}QQQ")


@dataclass
class VcpuRegsState:
    """The context a running handler interrupted: x0-x17, PC, PSTATE."""

    regs: list[int] = field(default_factory=_zeros(SAVED_GPREGS))
    pc: int = 0
    pstate: int = 0

    def pack(self) -> bytes:
        return _REGS.pack(*self.regs, self.pc, self.pstate)

    @classmethod
    def unpack(cls, data: bytes) -> "VcpuRegsState":
        _size_check(_REGS, data, "kvm_sdei_vcpu_regs_state")
        f = _REGS.unpack(data)
        return cls(list(f[:SAVED_GPREGS]), f[SAVED_GPREGS], f[SAVED_GPREGS + 1])


_VCPU_STATE = struct.Struct(f"<B7sQQ{_REGS.size}s{_REGS.size}s")


@dataclass
class VcpuState:
    """A vCPU's SDEI state: the PE mask and the running critical and normal handlers
    (KVM_SDEI_INVALID_EVENT when none) with the contexts they interrupted."""

    masked: int = 1
    padding: bytes = bytes(7)
    critical_num: int = KVM_SDEI_INVALID_EVENT
    normal_num: int = KVM_SDEI_INVALID_EVENT
    critical_regs: VcpuRegsState = field(default_factory=VcpuRegsState)
    normal_regs: VcpuRegsState = field(default_factory=VcpuRegsState)

    def pack(self) -> bytes:
        return _VCPU_STATE.pack(self.masked, bytes(self.padding), self.critical_num, self.normal_num,
                                self.critical_regs.pack(), self.normal_regs.pack())

    @classmethod
    def unpack(cls, data: bytes) -> "VcpuState":
        _size_check(_VCPU_STATE, data, "kvm_sdei_vcpu_state")
        masked, pad, crit, norm, cregs, nregs = _VCPU_STATE.unpack(data)
        return cls(masked, pad, crit, norm, VcpuRegsState.unpack(cregs), VcpuRegsState.unpack(nregs))


SIZES = {"kvm_sdei_cmd": _CMD.size, "kvm_sdei_exposed_event_state": _EXPOSED.size,
         "kvm_sdei_registered_event_state": _REGISTERED.size, "kvm_sdei_vcpu_event_state": _VCPU_EVENT.size,
         "kvm_sdei_vcpu_regs_state": _REGS.size, "kvm_sdei_vcpu_state": _VCPU_STATE.size}


def unpack_array(cls: type, data: bytes, count: int) -> list:
    """`count` structs of type `cls` from a byte array (what a state pointer points to)."""
    size = SIZES[{ExposedEventState: "kvm_sdei_exposed_event_state",
                  RegisteredEventState: "kvm_sdei_registered_event_state",
                  VcpuEventState: "kvm_sdei_vcpu_event_state"}[cls]]
    if len(data) < size * count:
        raise kvm_error(EINVAL, f"{count} x {cls.__name__} need {size * count} bytes, got {len(data)}")
    return [cls.unpack(data[i * size:(i + 1) * size]) for i in range(count)]  # type: ignore[attr-defined]
