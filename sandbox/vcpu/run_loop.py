"""The run loop: `Vcpu.run()` runs the guest until something needs the host and returns an
`Exit` (budgets, timers, SDEI and SError delivery between engine runs, traps and faults
stopped by hooks, WFI)."""

from __future__ import annotations

import dataclasses
import time
import traceback

from unicorn import UcError
from unicorn import arm64_const as A

from .. import icount
from ..exits import Exit, InternalErrorExit
from ..kvm import EBUSY, EINVAL, ExitReason, InternalErrorSuberror, kvm_error
from ..traps import Access
from .stops import RunFailure

DEFAULT_TIME_BUDGET = 10.0  # seconds


class RunLoop:
    """Mixin of Vcpu: KVM_RUN."""

    def run(self, *, max_instructions: int | None = None, timeout: float | None = DEFAULT_TIME_BUDGET) -> Exit:
        """Run until the guest needs the host. `max_instructions` (exact, costs Unicorn's
        per-instruction counter) and `timeout` (seconds of wall time) bound the run."""
        exit_ = self._run_guarded(max_instructions, timeout)
        self.last_exit = exit_
        if self.vm.observers:
            self.vm.notify("exit", self, exit_.pc, exit=exit_)
        return exit_

    def _run_guarded(self, max_instructions: int | None, timeout: float | None) -> Exit:
        """One run without the observer report (Vm.run reports once for all vCPUs)."""
        if self._running:
            raise kvm_error(EBUSY, "the vCPU is already running")
        if max_instructions is not None and max_instructions < 0:
            raise kvm_error(EINVAL, "max_instructions must be >= 0")
        if not self.vm.hypervisor.power.start(self):
            # PSCI: powered off (KVM_MP_STATE_STOPPED) until another vCPU's CPU_ON.
            return Exit(ExitReason.POWERED_OFF, self.uc.reg_read(A.UC_ARM64_REG_PC), vcpu=self.index)
        self._running = True
        self._run_counts = max_instructions is not None
        try:
            self.virtual_sites.check()  # the MMU regime may have changed since the last run
            self._complete_mmio()
            self._complete_hypercall()
            self._abort_site = None
            self._storm_key, self._storm_count = None, 0  # a storm is counted within one run
            stepping = self.guest_debug.stepping
            exit_ = self._run(self.guest_debug.step_budget(max_instructions) if stepping else max_instructions, timeout)
            if stepping:
                exit_ = self.guest_debug.step_exit(exit_)
        except RunFailure:
            raise
        except Exception:
            exit_ = Exit(ExitReason.INTERNAL_ERROR, self.uc.reg_read(A.UC_ARM64_REG_PC),
                         internal=InternalErrorExit(InternalErrorSuberror.HOST_ERROR, traceback.format_exc(limit=8)))
        finally:
            self._running = False
        exit_.vcpu = self.index
        return exit_

    def _run(self, max_instructions: int | None, timeout: float | None) -> Exit:
        uc = self.uc
        deadline = None if timeout is None else time.monotonic() + timeout
        remaining = max_instructions
        retired = 0
        while True:
            if remaining == 0:
                return Exit(ExitReason.INSTRUCTION_BUDGET, uc.reg_read(A.UC_ARM64_REG_PC), instructions=retired)
            micros = 0
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return Exit(ExitReason.TIME_BUDGET, uc.reg_read(A.UC_ARM64_REG_PC),
                                instructions=retired if remaining is not None else None)
                micros = max(1, int(left * 1e6))
            self._stop = None
            if self.virtual_sites.stale:
                self.virtual_sites.refresh()  # the guest wrote SCTLR/TCR/TTBR: walk again
            if self.timer is not None:
                self.timer.update()  # a compare value reached: the timer's PPI goes high
            if self.sdei_check:
                self._deliver_sdei()  # SDEI events are not masked by PSTATE (DEN0054C: from EL2/EL3)
            if self.serror.pending and self.serror.deliver_if_unmasked() and self._stop is not None:
                return self._stop.exit  # type: ignore[return-value]
            self.serror.settle()
            if self.irq is not None:
                self.irq.settle()  # the vector hooks follow the IRQ/FIQ lines (sandbox.irq)
            count = remaining or 0
            if self.timer is not None:  # always counted: stop where the next timer fires
                count = self.timer.instructions_until_event(count)
            elif self.irq is not None and not count:
                count = icount.UNBOUNDED  # counted: interrupts stop it at exact boundaries
            pc = uc.reg_read(A.UC_ARM64_REG_PC)
            error: UcError | None = None
            self._in_emulation = True
            try:
                self._emu_start(pc, timeout=micros, count=count)
            except UcError as e:
                error = e
            finally:
                self._in_emulation = False
            stop = self._stop
            limit_reached = False
            if count:
                started = icount.started_instructions(uc)
                if started is not None:
                    limit = icount.run_limit(uc) or count  # a hook may have lowered it
                    done = min(started, limit)
                    # An instruction that faulted (abort, UNDEFINED...) was started but did
                    # not retire; SVC/HVC/SMC complete before their trap.
                    # An instruction breakpoint (KVM_EXIT_DEBUG) stops before its instruction.
                    if (stop is not None and (stop.trap is not None or (
                            stop.exit is not None and stop.exit.reason is ExitReason.DEBUG))
                            and done and started <= limit):
                        done -= 1
                    limit_reached = started > limit
                    retired += done
                    if remaining is not None:
                        remaining -= done
                    self.instructions += done
            if stop is not None and stop.exit is None and stop.trap is None:
                if self._mmio_replay.recording:  # a device stopped us mid-instruction: finish it
                    # the count above took that instruction as done; it retires in the step
                    done = self._complete_stopped_access() - (1 if remaining is not None else 0)
                    retired += done
                    self.instructions += done
                    if remaining is not None:
                        remaining -= done
                if stop.then is not None:  # a hook left work for the loop (_pause_then)
                    self._stop = None
                    stop.then()
                    if self._stop is not None and self._stop.exit is not None:
                        return self._stop.exit
                continue  # a pause requested by a hook (see _request_pause)
            if stop is not None and stop.exit is not None:
                stop.exit.instructions = retired if max_instructions is not None else None
                return stop.exit
            if stop is not None and stop.trap is not None:
                trap = stop.trap
                if trap.access is not Access.FETCH:
                    # The PC a memory hook sees can be the start of the translation block;
                    # after the fault Unicorn has restored the exact PC of the access.
                    trap = dataclasses.replace(trap, pc=uc.reg_read(A.UC_ARM64_REG_PC))
                exit_ = self._poisoned_access(trap) if trap.protected else self._fault(trap)
                if exit_ is not None:
                    exit_.instructions = retired if max_instructions is not None else None
                    return exit_
                continue
            if error is not None:
                return Exit(ExitReason.INTERNAL_ERROR, uc.reg_read(A.UC_ARM64_REG_PC), internal=InternalErrorExit(
                    InternalErrorSuberror.EMULATION, f"Unicorn: {error}"))
            if remaining == 0 or limit_reached:
                continue  # a budget or a timer event: the top of the loop handles it
            if deadline is not None and time.monotonic() >= deadline:
                continue
            # Unicorn returned on its own: WFI halts the CPU (QEMU EXCP_HLT).
            pc = uc.reg_read(A.UC_ARM64_REG_PC)
            if self._fetch(pc - 4) == 0xD503207F:
                if self._wakeup_pending() or self.vm.scheduler.idle_until_event(self):
                    continue
                return Exit(ExitReason.IDLE, pc, instructions=retired if max_instructions is not None else None)

    def _wakeup_pending(self) -> bool:
        """Whether a WFI would wake now: a pending SError wakes it even while PSTATE.A masks
        it (WFI wake-up events ignore PSTATE masking, Arm ARM D1.16.2), and so does an
        asserted IRQ/FIQ or an SDEI event due on this vCPU (an interrupt routed to EL2/EL3 is
        a wake-up event too). Time passing while idle is the scheduler's (idle_until_event)."""
        if self.serror.pending or (self.irq is not None and self.irq.pending):
            return True
        return self.sdei_check and self.vm.hypervisor.sdei.next_dispatch(self) is not None

    def _emu_start(self, pc: int, *, timeout: int = 0, count: int = 0) -> None:
        """uc.emu_start with a correct instruction count. Unicorn counts with a code hook
        it adds on the first counted run, and a code hook only reaches translations made
        after it exists: blocks translated by an uncounted run would run uncounted (a budget
        of 10 overshot by millions). So the first counted run after an uncounted one drops
        the translation cache; Unicorn itself flushes when counting stops."""
        if count and not self._counting:
            self.uc.ctl_flush_tb()
        self._counting = count > 0
        self.uc.emu_start(pc, 0, timeout=timeout, count=count)
