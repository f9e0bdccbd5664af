"""The vCPU side of HVC/SMC: read the call, hand it to the hypervisor shim (sandbox/hyp),
apply what it decided (return values, exits, SDEI context switches)."""

from __future__ import annotations

from typing import Any

from ..hyp.result import CallResult
from ..kvm import ExitReason
from .registers import X_IDS


class HypercallPath:
    """Mixin of Vcpu: hypercalls and SDEI delivery."""

    def _hypercall(self, conduit: int) -> None:
        """An HVC/SMC: the shim decides what it does (hyp.dispatch), the vCPU applies it.
        The common answer is a bare x0; anything else is a CallResult."""
        calls = self._call_regs
        x = calls.x  # x0-x30 and (slot 32) PC of this CPU, read in place (sandbox/cpustate.py)
        if x is None:
            regs, pc = calls.read()
        else:
            regs, pc = x, x[32]
        result = self.vm.hypervisor.call(self, conduit, regs, pc, calls.immediate(pc))
        if result.__class__ is not int:
            self._apply_call(result)  # type: ignore[arg-type]
        elif x is not None:
            x[0] = result
        else:
            calls.write_x0(result)  # type: ignore[arg-type]
        if self.sdei_check:
            self._deliver_sdei()

    def _apply_call(self, result: CallResult) -> None:
        """Apply what the shim decided: return registers, a context switch (SDEI dispatch
        or COMPLETE), an exception-like entry (COMPLETE_AND_RESUME), an exit."""
        if result.regs:
            self.uc.reg_write_batch(list(zip(X_IDS, result.regs)))
        if result.context is not None:
            self.switch_context(result.context)
        if result.resume is not None:
            r = result.resume
            self.take_exception(r.kind, None, r.elr, from_pstate=r.from_pstate, target=r.target)
        if result.exit is not None:
            result.exit.pc = self.pc()  # past the call (or where it resumed)
            if result.exit.reason is ExitReason.HYPERCALL:
                self._hypercall_pending = result.exit
            self._stop_with(result.exit)
        if result.reschedule:
            self.vm.scheduler.power_changed(self)

    def switch_context(self, context: Any) -> None:
        """Load x0-x17, PC and PSTATE (a hyp.result.GuestContext): the documented sibling
        of take_exception for SDEI. A handler entry's PSTATE is computed by
        arch.exception.entry_pstate (hyp/sdei_delivery.py), the rule every exception entry
        follows; COMPLETE restores a saved context bit for bit. ELR/SPSR are not touched."""
        self._context_regs.write_gprs_and_pc(context.regs, context.pc)
        self.set_pstate(context.pstate)

    def _deliver_sdei(self) -> None:
        """Dispatch the SDEI event the shim says is due on this vCPU, if any."""
        sdei = self.vm.hypervisor.sdei
        choice = sdei.next_dispatch(self)
        if choice is not None:
            regs, pc, pstate, sctlr = self._context_regs.read()
            self._apply_call(sdei.dispatch(self, choice, regs, pc, pstate, sctlr))

    def _complete_hypercall(self) -> None:
        """KVM_EXIT_HYPERCALL: the host's values in exit.hypercall.ret become x0-x3."""
        pending, self._hypercall_pending = self._hypercall_pending, None
        if pending is not None and pending.hypercall is not None:
            self.uc.reg_write_batch(list(zip(X_IDS, [int(v) for v in pending.hypercall.ret[:4]])))
