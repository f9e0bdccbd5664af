"""`Exit`: what `Vcpu.run()` returns, shaped like KVM's `struct kvm_run` exit payloads."""

from __future__ import annotations

from dataclasses import dataclass, field

from .kvm import ExitReason, InternalErrorSuberror, SystemEventType


@dataclass
class MmioExit:
    """kvm_run.mmio: a guest access to guest-physical memory with nothing behind it.
    For a read, put the value in `data` (little-endian, `len` bytes) before the next run."""

    phys_addr: int
    data: bytearray
    len: int
    is_write: bool
    esr_iss: int = 0  # sandbox extension: the data-abort ISS KVM decoded (ISV, SAS, SSE, SRT, SF, AR, WnR)


@dataclass
class NisvExit:
    """kvm_run.arm_nisv: a data abort on an access with no valid instruction syndrome."""

    esr_iss: int
    fault_ipa: int


ARM_SEA_FLAG_GPA_VALID = 1 << 0  # KVM_EXIT_ARM_SEA_FLAG_GPA_VALID (uapi linux/kvm.h)


@dataclass
class SeaExit:
    """kvm_run.arm_sea: the guest consumed an uncorrectable memory error (poison). `esr` is
    the EL2 view (EC | IL | FnV | EA | CM | WnR | FSC); `gva` is valid when esr.FnV == 0."""

    flags: int
    esr: int
    gva: int
    gpa: int


KVM_HYPERCALL_EXIT_SMC = 1 << 0  # kvm_run.hypercall.flags: the guest used SMC (uapi linux/kvm.h)
KVM_HYPERCALL_EXIT_16BIT = 1 << 1  # a 16-bit instruction (never for AArch64)


@dataclass
class HypercallExit:
    """kvm_run.hypercall for an SMCCC call the host chose to handle (KVM_EXIT_HYPERCALL
    with the SMCCC filter): `nr` is the function ID; set `ret` (x0..x3) before running on."""

    nr: int
    args: tuple[int, ...]
    flags: int  # KVM_HYPERCALL_EXIT_SMC (bit 0) when the conduit was SMC
    immediate: int
    ret: list[int] = field(default_factory=lambda: [0, 0, 0, 0])


@dataclass
class SystemEventExit:
    type: SystemEventType
    flags: int = 0


@dataclass
class SemihostingExit:
    """How a guest ended itself through semihosting SYS_EXIT / SYS_EXIT_EXTENDED (KVM has no
    semihosting; the exit is a SYSTEM_EVENT, see sandbox.semihosting): `reason` is the
    ADP_Stopped_* code, `subcode` its argument, `status` the exit status a process would get."""

    reason: int
    subcode: int
    status: int


@dataclass
class DebugExit:
    """kvm_run.debug.arch (struct kvm_debug_exit_arch): `hsr` is the syndrome of the debug
    event (BRK, software step, or the exception the guest took, see sandbox.guest_debug)."""

    hsr: int
    hsr_high: int = 0
    far: int = 0
    event: str = ""  # sandbox extension: "breakpoint", "step" or "exception"
    detail: str = ""  # sandbox extension: what happened, in words


@dataclass
class InternalErrorExit:
    suberror: InternalErrorSuberror
    message: str
    data: dict[str, object] = field(default_factory=dict)


@dataclass
class Exit:
    reason: ExitReason
    pc: int
    mmio: MmioExit | None = None
    arm_nisv: NisvExit | None = None
    arm_sea: SeaExit | None = None
    hypercall: HypercallExit | None = None
    system_event: SystemEventExit | None = None
    internal: InternalErrorExit | None = None
    semihosting: SemihostingExit | None = None
    debug: DebugExit | None = None
    instructions: int | None = None  # retired this run, when the run counted them
    vcpu: int | None = None  # index of the vCPU that exited (Vcpu.run and Vm.run fill it)

    def machine_status(self) -> int | None:
        """For an exit that stops the machine (SYSTEM_EVENT), the status a process running
        the guest exits with, as QEMU's does: the semihosting exit status, 0 for a power-off,
        1 otherwise (reset, crash). None for any other exit."""
        if self.reason is not ExitReason.SYSTEM_EVENT or self.system_event is None:
            return None
        if self.semihosting is not None:
            return self.semihosting.status & 0xFF
        return 0 if self.system_event.type is SystemEventType.SHUTDOWN else 1

    def describe(self) -> str:
        text = f"{self.reason.name} at pc={self.pc:#x}"
        if self.mmio:
            m = self.mmio
            text += f" {'write' if m.is_write else 'read'} {m.len}B @ {m.phys_addr:#x}"
            if m.is_write:
                text += f" data={int.from_bytes(m.data[:m.len], 'little'):#x}"
        if self.arm_nisv:
            text += f" ipa={self.arm_nisv.fault_ipa:#x} esr_iss={self.arm_nisv.esr_iss:#x}"
        if self.arm_sea:
            text += f" esr={self.arm_sea.esr:#010x} gva={self.arm_sea.gva:#x} gpa={self.arm_sea.gpa:#x}"
        if self.system_event:
            text += f" {self.system_event.type.name}"
        if self.semihosting:
            text += f" (semihosting exit, status {self.semihosting.status})"
        if self.debug:
            text += f" hsr={self.debug.hsr:#010x}" + (f" {self.debug.detail}" if self.debug.detail else "")
        if self.hypercall:
            text += f" function {self.hypercall.nr:#010x}"
        if self.internal:
            text += f" {self.internal.suberror.name}: {self.internal.message}"
        return text
