"""PSCI 1.1 for the guest (Arm DEN0022 PSCI; KVM arch/arm64/kvm/psci.c is the model).

PSCI_VERSION, PSCI_FEATURES, CPU_ON, CPU_OFF, AFFINITY_INFO, SYSTEM_OFF, SYSTEM_RESET and
MIGRATE_INFO_TYPE, in their SMC32 and (where they take addresses) SMC64 forms. Everything
else in the PSCI range answers NOT_SUPPORTED, which PSCI_FEATURES reports too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from ..exits import Exit, SystemEventExit
from ..kvm import ExitReason, SystemEventType
from .result import CallResult
from .power import MPIDR_HWID_MASK, PowerState, vcpu_by_mpidr
from .smccc import SMCCC_VERSION, arguments_of

if TYPE_CHECKING:
    from ..vcpu import Vcpu
    from ..vm import Vm

PSCI_VERSION = 0x84000000
CPU_SUSPEND_32 = 0x84000001
CPU_SUSPEND_64 = 0xC4000001
CPU_OFF = 0x84000002
CPU_ON_32 = 0x84000003
CPU_ON_64 = 0xC4000003
AFFINITY_INFO_32 = 0x84000004
AFFINITY_INFO_64 = 0xC4000004
MIGRATE_INFO_TYPE = 0x84000006
SYSTEM_OFF = 0x84000008
SYSTEM_RESET = 0x84000009
PSCI_FEATURES = 0x8400000A

VERSION_1_1 = (1 << 16) | 1  # PSCI 5.1.1: major [31:16], minor [15:0]

# Return codes (PSCI 5.2.2, table 6), as 64-bit register values.
SUCCESS = 0
NOT_SUPPORTED = -1 & 0xFFFFFFFFFFFFFFFF
INVALID_PARAMETERS = -2 & 0xFFFFFFFFFFFFFFFF
DENIED = -3 & 0xFFFFFFFFFFFFFFFF
ALREADY_ON = -4 & 0xFFFFFFFFFFFFFFFF
ON_PENDING = -5 & 0xFFFFFFFFFFFFFFFF
INTERNAL_FAILURE = -6 & 0xFFFFFFFFFFFFFFFF
NOT_PRESENT = -7 & 0xFFFFFFFFFFFFFFFF
DISABLED = -8 & 0xFFFFFFFFFFFFFFFF
INVALID_ADDRESS = -9 & 0xFFFFFFFFFFFFFFFF

# MIGRATE_INFO_TYPE: 2 = "Trusted OS is either not present or does not require migration".
MIGRATE_INFO_TYPE_NOT_PRESENT = 2
MAX_AFFINITY_LEVEL = 3  # AFFINITY_INFO lowest_affinity_level 0..3 (KVM kvm_psci_vcpu_affinity_info)

Handler = Callable[["Vcpu", "list[int]"], "int | CallResult"]


def affinity_mask(level: int) -> int:
    """MPIDR bits that name a node at `level` (0 = one PE; 3 leaves only Aff3, bits [39:32])."""
    return MPIDR_HWID_MASK & ~((1 << (8 * level)) - 1)


class Psci:
    def __init__(self, vm: "Vm"):
        self.vm = vm
        self.handlers: dict[int, Handler] = {
            PSCI_VERSION: lambda v, a: VERSION_1_1,
            PSCI_FEATURES: self._features,
            CPU_ON_32: self._cpu_on, CPU_ON_64: self._cpu_on,
            CPU_OFF: self._cpu_off,
            AFFINITY_INFO_32: self._affinity_info, AFFINITY_INFO_64: self._affinity_info,
            MIGRATE_INFO_TYPE: lambda v, a: MIGRATE_INFO_TYPE_NOT_PRESENT,
            SYSTEM_OFF: lambda v, a: self._system_event(v, a, SystemEventType.SHUTDOWN),
            SYSTEM_RESET: lambda v, a: self._system_event(v, a, SystemEventType.RESET),
        }

    def _features(self, vcpu: "Vcpu", a: "list[int]") -> int:
        """PSCI_FEATURES (5.1.14): 0 for an implemented function (none has feature flags
        here), NOT_SUPPORTED otherwise; SMCCC_VERSION is reported as implemented (SMCCC 7.2)."""
        fid = a[1] & 0xFFFFFFFF
        return SUCCESS if fid in self.handlers or fid == SMCCC_VERSION else NOT_SUPPORTED

    def _cpu_on(self, vcpu: "Vcpu", a: "list[int]") -> "int | CallResult":
        """CPU_ON(target_cpu, entry_point_address, context_id) (5.1.4)."""
        target_mpidr, entry, context = arguments_of(a[0], (a[1], a[2], a[3]))
        target = vcpu_by_mpidr(self.vm.vcpus, target_mpidr)
        if target is None:
            return INVALID_PARAMETERS
        power = self.vm.hypervisor.power
        state = power.state(target)
        if state is PowerState.ON:
            return ALREADY_ON
        if state is PowerState.ON_PENDING:
            return ON_PENDING
        ram = self.vm.memory.ram_at(entry)
        if ram is None or entry + 4 > ram.end:
            # The target starts with its MMU off: the entry point is a physical address.
            return INVALID_ADDRESS
        power.power_on(vcpu, target, entry, context)
        self.vm.hypervisor.sdei.cpu_reset(target)  # PEs start masked after CPU_ON (TF-A sdei_cpu_on_init)
        return CallResult((SUCCESS,), reschedule=True)

    def _cpu_off(self, vcpu: "Vcpu", a: "list[int]") -> CallResult:
        """CPU_OFF (5.1.3): never returns on success."""
        self.vm.hypervisor.power.power_off(vcpu)
        self.vm.hypervisor.sdei.cpu_reset(vcpu)
        return CallResult(exit=Exit(ExitReason.POWERED_OFF, 0), reschedule=True)

    def _affinity_info(self, vcpu: "Vcpu", a: "list[int]") -> int:
        """AFFINITY_INFO(target_affinity, lowest_affinity_level) (5.1.5)."""
        target, level = arguments_of(a[0], (a[1], a[2]))
        if level > MAX_AFFINITY_LEVEL or target & ~MPIDR_HWID_MASK:
            return INVALID_PARAMETERS
        mask = affinity_mask(level)
        power = self.vm.hypervisor.power
        states = [power.state(v) for v in self.vm.vcpus if v.mpidr & mask == target & mask]
        if not states:
            return INVALID_PARAMETERS
        for s in (PowerState.ON, PowerState.ON_PENDING):
            if s in states:
                return int(s)
        return int(PowerState.OFF)

    def _system_event(self, vcpu: "Vcpu", a: "list[int]", kind: SystemEventType) -> CallResult:
        """SYSTEM_OFF / SYSTEM_RESET (5.1.9, 5.1.10): KVM_EXIT_SYSTEM_EVENT, the VMM acts."""
        return CallResult(exit=Exit(ExitReason.SYSTEM_EVENT, 0, system_event=SystemEventExit(kind)))
