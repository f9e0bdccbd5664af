"""vCPU power states for PSCI (Arm DEN0022 PSCI 1.1, sections 5.1.4 CPU_ON and 5.1.5 AFFINITY_INFO).

vCPU 0 starts powered on, every other vCPU powered off, as a VMM creates secondaries with
KVM_ARM_VCPU_POWER_OFF. CPU_ON resets its target the way KVM does (kvm_reset_vcpu: EL1h,
D/A/I/F masked, registers and EL1 system registers at their reset values, x0 = context_id,
PC = the entry point) and leaves it ON_PENDING until the target starts its first run;
CPU_OFF powers the caller off. KVM's KVM_GET/SET_MP_STATE view is offered as well.
"""

from __future__ import annotations

import functools
from enum import IntEnum
from typing import TYPE_CHECKING

from unicorn import UC_ARCH_ARM64, UC_MODE_ARM, Uc
from unicorn import arm64_const as A

from ..arch.sysreg import SYSREGS
from ..kvm import EINVAL, kvm_error

if TYPE_CHECKING:
    from ..vcpu import Vcpu

MPIDR_HWID_MASK = 0xFF00FFFFFF  # Aff3 [39:32], Aff2..Aff0 [23:0] (Arm ARM D17.2.101; Linux MPIDR_HWID_BITMASK)
SCTLR_EE = 1 << 25  # SCTLR_EL1.EE: data endianness at EL1 (Arm ARM D17.2.118)
RESET_PSTATE = 0x3C5  # EL1h, D/A/I/F masked (KVM VCPU_RESET_PSTATE_EL1)


class PowerState(IntEnum):
    """AFFINITY_INFO return values (PSCI 5.1.5, table 18)."""

    ON = 0
    OFF = 1
    ON_PENDING = 2


class MpState(IntEnum):
    """struct kvm_mp_state values arm64 uses (uapi linux/kvm.h KVM_MP_STATE_*)."""

    RUNNABLE = 0
    STOPPED = 5


def vcpu_by_mpidr(vcpus: "list[Vcpu]", mpidr: int) -> "Vcpu | None":
    """The vCPU whose MPIDR affinity is `mpidr`; None for bits outside the affinity fields
    or no such vCPU (KVM kvm_psci_valid_affinity, kvm_mpidr_to_vcpu; TF-A's MPIDR checks)."""
    if mpidr & ~MPIDR_HWID_MASK:
        return None
    for v in vcpus:
        if v.mpidr & MPIDR_HWID_MASK == mpidr:
            return v
    return None


@functools.cache
def reset_sysregs() -> dict[str, int]:
    """EL1 system registers of a freshly reset CPU (the ones a snapshot carries), read once
    from a new Unicorn 'max' CPU."""
    from ..snapshot import SAVED_SYSREGS
    uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
    uc.ctl_set_cpu_model(A.UC_CPU_ARM64_MAX)
    return {name: uc.cpr_read(*SYSREGS[name]) for name in SAVED_SYSREGS}


class VcpuPower:
    def __init__(self) -> None:
        self.states: list[PowerState] = []
        self.has_run = False  # a vCPU has entered the guest (fixes the SMCCC filter, as in KVM)

    def add(self, vcpu: "Vcpu") -> None:
        self.states.append(PowerState.ON if vcpu.index == 0 else PowerState.OFF)

    def state(self, vcpu: "Vcpu") -> PowerState:
        return self.states[vcpu.index]

    def powered_on(self) -> int:
        return sum(1 for s in self.states if s is not PowerState.OFF)

    def start(self, vcpu: "Vcpu") -> bool:
        """A run begins: False if the vCPU is off; an ON_PENDING vCPU is ON from now."""
        s = self.states[vcpu.index]
        if s is PowerState.OFF:
            return False
        if s is PowerState.ON_PENDING:
            self.states[vcpu.index] = PowerState.ON
        self.has_run = True
        return True

    def power_on(self, caller: "Vcpu", target: "Vcpu", entry: int, context_id: int) -> None:
        """CPU_ON's effect on the target (the caller has validated it)."""
        big_endian = caller.reg("SCTLR_EL1") & SCTLR_EE
        reset_cpu(target)
        if big_endian:
            target.set_reg("SCTLR_EL1", target.reg("SCTLR_EL1") | SCTLR_EE)
        target.set_regs({"x0": context_id, "pc": entry})
        self.states[target.index] = PowerState.ON_PENDING

    def power_off(self, vcpu: "Vcpu") -> None:
        self.states[vcpu.index] = PowerState.OFF

    # -- KVM_GET/SET_MP_STATE -------------------------------------------------------------

    def get_mp_state(self, vcpu: "Vcpu") -> MpState:
        return MpState.STOPPED if self.states[vcpu.index] is PowerState.OFF else MpState.RUNNABLE

    def set_mp_state(self, vcpu: "Vcpu", mp_state: int) -> None:
        """KVM_SET_MP_STATE: RUNNABLE powers the vCPU on where it is, STOPPED powers it off;
        anything else is EINVAL (arm64 kvm_arch_vcpu_ioctl_set_mpstate)."""
        try:
            m = MpState(mp_state)
        except ValueError:
            raise kvm_error(EINVAL, f"mp_state {mp_state} is not RUNNABLE (0) or STOPPED (5)") from None
        self.states[vcpu.index] = PowerState.ON if m is MpState.RUNNABLE else PowerState.OFF

    def save(self) -> list[int]:
        return [int(s) for s in self.states]

    def restore(self, states: list[int]) -> None:
        for i, s in enumerate(states[:len(self.states)]):
            self.states[i] = PowerState(s)


def reset_cpu(vcpu: "Vcpu") -> None:
    """kvm_reset_vcpu: general-purpose, FP/SIMD and EL1 system registers to reset values,
    SP_EL0/SP_EL1 zero, PSTATE EL1h with D/A/I/F masked."""
    vcpu.reset()
    vcpu.set_regs({"sp_el0": 0, "sp_el1": 0})
    for name, value in reset_sysregs().items():
        vcpu.set_reg(name, value)
    uc = vcpu.uc
    uc.reg_write_batch([(A.UC_ARM64_REG_Q0 + i, 0) for i in range(32)])
    uc.reg_write(A.UC_ARM64_REG_FPCR, 0)
    uc.reg_write(A.UC_ARM64_REG_FPSR, 0)
