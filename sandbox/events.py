"""`VcpuEvents`: struct kvm_vcpu_events for arm64, with its exact byte layouts and KVM's
validation rules for KVM_SET_VCPU_EVENTS.

Two binary forms:

- the merged upstream layout, 64 bytes (Linux arch/arm64/include/uapi/asm/kvm.h; api.rst):
  serror_pending @0, serror_has_esr @1, ext_dabt_pending @2, pad[5] @3, serror_esr @8,
  reserved[12] @16;
- the seed-003 layout (Jiaqi Yan, "Documentation: kvm: update UAPI for injecting SEA",
  2025-07-31, patch 4/4), offered only by a Vm that advertises KVM_CAP_ARM_INJECT_EXT_IABT:
  ext_iabt_pending @3, pad[4] @4, serror_esr @8, ext_abt_esr @16, reserved[12] @24 (72
  bytes, as that document writes it; patch 2/4 of the same series kept 64 bytes by adding
  ext_abt_has_esr and shrinking reserved to 10 words - the sandbox follows the document).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import NamedTuple

from .arch import esr as E
from .arch.ras import DEFAULT_VSERROR_ISS
from .kvm import EINVAL, kvm_error

_UPSTREAM = struct.Struct("<BBB5sQ12I")
_WITH_IABT = struct.Struct("<BBBB4sQQ12I")
UPSTREAM_SIZE = _UPSTREAM.size  # 64
WITH_IABT_SIZE = _WITH_IABT.size  # 72


@dataclass
class VcpuEvents:
    serror_pending: int = 0
    serror_has_esr: int = 0
    ext_dabt_pending: int = 0
    ext_iabt_pending: int = 0
    serror_esr: int = 0
    ext_abt_esr: int = 0
    pad: bytes = b"\0" * 5
    reserved: tuple[int, ...] = field(default_factory=lambda: (0,) * 12)

    def pack(self, with_iabt: bool = False) -> bytes:
        """The C struct's bytes (little-endian, as on arm64)."""
        if with_iabt:
            return _WITH_IABT.pack(self.serror_pending, self.serror_has_esr, self.ext_dabt_pending,
                                   self.ext_iabt_pending, bytes(self.pad[:4]).ljust(4, b"\0"),
                                   self.serror_esr, self.ext_abt_esr, *self.reserved)
        pad = bytes(self.pad[:5]).ljust(5, b"\0")
        if self.ext_iabt_pending:
            # Byte 3 is pad[0] in the merged layout: keep what the caller set visible.
            pad = bytes([self.ext_iabt_pending]) + pad[1:]
        return _UPSTREAM.pack(self.serror_pending, self.serror_has_esr, self.ext_dabt_pending, pad,
                              self.serror_esr, *self.reserved)

    @classmethod
    def unpack(cls, data: bytes, with_iabt: bool = False) -> "VcpuEvents":
        layout = _WITH_IABT if with_iabt else _UPSTREAM
        if len(data) != layout.size:
            raise kvm_error(EINVAL, f"struct kvm_vcpu_events is {layout.size} bytes here, got {len(data)}")
        if with_iabt:
            sp, he, dabt, iabt, pad, esr, abt_esr, *res = _WITH_IABT.unpack(data)
            return cls(sp, he, dabt, iabt, esr, abt_esr, pad + b"\0", tuple(res))
        sp, he, dabt, pad, esr, *res = _UPSTREAM.unpack(data)
        return cls(sp, he, dabt, 0, esr, 0, pad, tuple(res))


class SetRequest(NamedTuple):
    """A validated KVM_SET_VCPU_EVENTS: what to inject."""

    serror_iss: int | None  # None: no SError to pend
    dabt: bool
    iabt: bool
    abt_iss: int


def validate(ev: VcpuEvents, *, has_ras_esr: bool, with_iabt: bool, has_dabt: bool, has_iabt: bool) -> SetRequest:
    """KVM's checks (Linux arch/arm64/kvm/arm.c kvm_arm_vcpu_set_events, guest.c
    __kvm_arm_vcpu_set_events, v6.17+), all done before anything is injected so an EINVAL
    never leaves a half-applied request (upstream commits the SEA before checking the SError
    part; the unmerged seed-003 series validates first, and so does the sandbox).

    Byte fields count as C bools: any nonzero value is true."""
    if any(ev.reserved):
        raise kvm_error(EINVAL, "kvm_vcpu_events.reserved must be zero")
    pad = bytes(ev.pad)
    if with_iabt:
        if any(pad[:4]):
            raise kvm_error(EINVAL, "kvm_vcpu_events.exception.pad must be zero")
    else:
        if any(pad[:5]) or ev.ext_iabt_pending:
            # Byte 3 is pad[0] in the merged layout (ext_iabt_pending is not merged upstream).
            raise kvm_error(EINVAL, "kvm_vcpu_events.exception.pad must be zero")
    dabt, iabt = bool(ev.ext_dabt_pending), bool(ev.ext_iabt_pending)
    if dabt and not has_dabt:
        raise kvm_error(EINVAL, "ext_dabt_pending needs KVM_CAP_ARM_INJECT_EXT_DABT")
    if iabt and not has_iabt:
        raise kvm_error(EINVAL, "ext_iabt_pending needs KVM_CAP_ARM_INJECT_EXT_IABT")
    if dabt and iabt:
        raise kvm_error(EINVAL, "ext_dabt_pending and ext_iabt_pending cannot both be set")
    if ev.ext_abt_esr & ~E.ISS_MASK:
        raise kvm_error(EINVAL, "ext_abt_esr may only hold ISS bits [24:0]")
    if not ev.serror_pending:
        # serror_has_esr / serror_esr are ignored when no SError is requested (guest.c).
        return SetRequest(None, dabt, iabt, ev.ext_abt_esr)
    if ev.serror_has_esr and not has_ras_esr:
        raise kvm_error(EINVAL, "serror_has_esr needs KVM_CAP_ARM_SET_SERROR_ESR (a CPU with RAS)")
    if ev.serror_has_esr and ev.serror_esr & ~E.ISS_MASK:
        raise kvm_error(EINVAL, "serror_esr may only hold ISS bits [24:0]")
    iss = ev.serror_esr if ev.serror_has_esr else DEFAULT_VSERROR_ISS
    return SetRequest(iss, dabt, iabt, ev.ext_abt_esr)
