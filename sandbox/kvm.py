"""KVM's names and numbers, defined once (Linux include/uapi/linux/kvm.h and
arch/arm64/include/uapi/asm/kvm.h), plus the sandbox's own exit reasons."""

from __future__ import annotations

import errno
import os
from enum import IntEnum


class ExitReason(IntEnum):
    """Why `Vcpu.run()` returned: KVM_EXIT_* values where KVM has one (uapi linux/kvm.h)."""

    UNKNOWN = 0
    EXCEPTION = 1
    HYPERCALL = 3
    DEBUG = 4
    MMIO = 6
    SHUTDOWN = 8
    INTERNAL_ERROR = 17
    SYSTEM_EVENT = 24
    ARM_NISV = 28
    ARM_SEA = 41
    # The sandbox's own reasons (no KVM equivalent): numbers well above KVM's range.
    INSTRUCTION_BUDGET = 0x1000  # the run's instruction budget was reached
    TIME_BUDGET = 0x1001  # the run's wall-time budget was reached
    IDLE = 0x1002  # WFI with nothing that could wake the vCPU
    POWERED_OFF = 0x1003  # the vCPU is off (PSCI CPU_OFF, or a secondary never started): KVM_MP_STATE_STOPPED


class SystemEventType(IntEnum):
    """kvm_run.system_event.type (uapi linux/kvm.h KVM_SYSTEM_EVENT_*)."""

    SHUTDOWN = 1
    RESET = 2
    CRASH = 3
    WAKEUP = 4
    SUSPEND = 5


class InternalErrorSuberror(IntEnum):
    """kvm_run.internal.suberror; the sandbox adds its own after KVM's."""

    EMULATION = 1  # KVM_INTERNAL_ERROR_EMULATION
    EXCEPTION_STORM = 0x100  # the same exception entered repeatedly without progress
    UNHANDLED_TRAP = 0x101  # something Unicorn reported that the model cannot represent
    HOST_ERROR = 0x102  # a host-side callback raised


class Cap(IntEnum):
    """KVM_CAP_* numbers (uapi linux/kvm.h)."""

    SET_GUEST_DEBUG = 23
    VCPU_EVENTS = 41
    ARM_PSCI = 87
    ARM_PSCI_0_2 = 102
    ARM_INJECT_SERROR_ESR = 158  # a.k.a. KVM_CAP_ARM_SET_SERROR_ESR in api.rst
    ARM_NISV_TO_USER = 177
    ARM_INJECT_EXT_DABT = 178
    ARM_SEA_TO_USER = 245
    # Proposed, never merged (Jiaqi Yan's 2025-07-31 series 1/4 used 245; merged 245 is
    # SEA_TO_USER): the sandbox gives it a number of its own outside KVM's range.
    ARM_INJECT_EXT_IABT = 0x10000
    # Gavin Shan's SDEI virtualization series v5 (20220322080710.51727-*, never merged):
    # KVM_ARM_SDEI_COMMAND and the SDEI hypercalls. A number of the sandbox's own.
    ARM_SDEI = 0x10001


KVM_CAP_ARM_SET_SERROR_ESR = Cap.ARM_INJECT_SERROR_ESR


def kvm_error(code: int, what: str) -> OSError:
    """An OSError carrying errno `code`, as an ioctl would fail with -code."""
    return OSError(code, f"{os.strerror(code)}: {what}")


EINVAL, EBUSY, EEXIST, ENOMEM, ENOSYS, EFAULT, ENOENT, ERANGE = (
    errno.EINVAL, errno.EBUSY, errno.EEXIST, errno.ENOMEM, errno.ENOSYS, errno.EFAULT,
    errno.ENOENT, errno.ERANGE)
ENXIO, EPERM, ENOTTY = errno.ENXIO, errno.EPERM, errno.ENOTTY
