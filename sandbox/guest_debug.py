"""KVM_SET_GUEST_DEBUG for a sandbox vCPU: breakpoints and single step exit to the host.

The vocabulary is KVM's (Documentation/virt/kvm/api.rst, KVM_SET_GUEST_DEBUG; arm64
arch/arm64/include/uapi/asm/kvm.h):

- KVM_GUESTDBG_ENABLE turns guest debugging on; without it every other bit is ignored.
- KVM_GUESTDBG_USE_SW_BP: a BRK instruction the guest executes no longer enters the guest's
  vector; the run returns KVM_EXIT_DEBUG with hsr = the BRK syndrome (EC 0x3C) and the PC at
  the BRK. A debugger sets a software breakpoint by writing `BRK #0` over an instruction
  (as QEMU's gdbstub does on KVM); a BRK that is not the debugger's goes back to the guest
  with `reinject`.
- KVM_GUESTDBG_SINGLESTEP: every run retires one instruction and returns KVM_EXIT_DEBUG with
  the software-step syndrome (EC 0x32, as KVM reports the step of a guest from EL2). A step
  whose instruction takes an exception ends at the vector, where the exception left the PC.
- GUESTDBG_EXIT_ON_EXCEPTION (the sandbox's own bit, no KVM equivalent): the run also
  returns KVM_EXIT_DEBUG right after the guest takes any exception, with hsr = the syndrome
  the guest got (0 for IRQ/FIQ), far = its FAR and the PC at the vector. This is what lets gdb
  stop on guest exceptions.

Hardware breakpoints and watchpoints (KVM_GUESTDBG_USE_HW) are not offered: Unicorn has no
debug registers; KVM_SET_GUEST_DEBUG with that bit fails with EINVAL, as on a host without
KVM_CAP_GUEST_DEBUG_HW_BPS.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .arch.esr import EC, ec_name, ec_of, syn_brk, syn_software_step
from .arch.exception import ExceptionEntry, ExceptionKind
from .exits import DebugExit, Exit
from .kvm import EINVAL, ExitReason, kvm_error

if TYPE_CHECKING:
    from .traps import Trap
    from .vcpu import Vcpu

KVM_GUESTDBG_ENABLE = 0x00000001  # uapi linux/kvm.h
KVM_GUESTDBG_SINGLESTEP = 0x00000002  # uapi linux/kvm.h
KVM_GUESTDBG_USE_SW_BP = 1 << 16  # arm64 uapi asm/kvm.h
KVM_GUESTDBG_USE_HW = 1 << 17  # arm64 uapi asm/kvm.h (not offered here)
GUESTDBG_EXIT_ON_EXCEPTION = 1 << 31  # the sandbox's own: exit after every exception entry

VALID_CONTROL = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP | KVM_GUESTDBG_USE_SW_BP | GUESTDBG_EXIT_ON_EXCEPTION

# DebugExit.event: what stopped the run.
BREAKPOINT, STEP, EXCEPTION = "breakpoint", "step", "exception"


class GuestDebug:
    """The guest-debug state of one vCPU (`vcpu.guest_debug`)."""

    def __init__(self, vcpu: "Vcpu"):
        self.vcpu = vcpu
        self.control = 0  # 0 whenever KVM_GUESTDBG_ENABLE is clear: nothing to check

    def set(self, control: int) -> None:
        """KVM_SET_GUEST_DEBUG's `control` word. EINVAL for bits KVM would refuse."""
        if control & ~VALID_CONTROL:
            raise kvm_error(EINVAL, f"guest debug control {control:#x} has unsupported bits "
                                    f"{control & ~VALID_CONTROL:#x} (hardware breakpoints are not offered)")
        self.control = control if control & KVM_GUESTDBG_ENABLE else 0

    @property
    def stepping(self) -> bool:
        return bool(self.control & KVM_GUESTDBG_SINGLESTEP)

    @property
    def uses_sw_bp(self) -> bool:
        return bool(self.control & KVM_GUESTDBG_USE_SW_BP)

    # -- the hooks the vCPU calls ---------------------------------------------------------

    def breakpoint_exit(self, trap: "Trap") -> Exit:
        """The KVM_EXIT_DEBUG for a BRK the guest executed with USE_SW_BP."""
        return Exit(ExitReason.DEBUG, trap.pc, debug=DebugExit(syn_brk(trap.imm), far=trap.pc, event=BREAKPOINT,
                                                               detail=f"brk #{trap.imm:#x}"))

    def exception_exit(self, entry: ExceptionEntry) -> Exit | None:
        """After an exception entry: the exit that stops the run there, if any."""
        if self.control & GUESTDBG_EXIT_ON_EXCEPTION:
            esr = entry.esr or 0
            what = ExceptionKind(entry.kind).name if entry.esr is None else ec_name(ec_of(esr))
            return Exit(ExitReason.DEBUG, entry.pc, debug=DebugExit(
                esr, far=entry.far or 0, event=EXCEPTION,
                detail=f"{what} taken at vector +{entry.vector_offset:#05x}, ELR {entry.elr:#x}"))
        if self.stepping:
            return self._step(entry.pc, "step into exception vector")
        return None

    def step_budget(self, max_instructions: int | None) -> int:
        """The instruction budget of a run while single-stepping."""
        return 1 if max_instructions is None else min(max_instructions, 1)

    def step_exit(self, exit_: Exit) -> Exit:
        """Turn the end of a one-instruction run into the single-step exit."""
        if exit_.reason is ExitReason.INSTRUCTION_BUDGET and exit_.instructions:
            step = self._step(exit_.pc)
            step.instructions = exit_.instructions
            return step
        return exit_

    @staticmethod
    def _step(pc: int, detail: str = "") -> Exit:
        # KVM reports the step from EL2: the exception came from a lower EL (EC 0x32).
        return Exit(ExitReason.DEBUG, pc, debug=DebugExit(syn_software_step(False), event=STEP, detail=detail))

    # -- for the host --------------------------------------------------------------------------

    def reinject(self, exit_: Exit) -> None:
        """Give a BRK that exited with USE_SW_BP back to the guest: it takes the exception it
        would have taken without debugging (what QEMU does for a BRK that is not gdb's)."""
        if exit_.debug is None or ec_of(exit_.debug.hsr) != EC.BRK64:
            raise kvm_error(EINVAL, "only a breakpoint exit can be reinjected")
        self.vcpu.take_exception(ExceptionKind.SYNC, exit_.debug.hsr, exit_.pc)
