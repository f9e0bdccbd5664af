"""The run loop: `Vcpu.run()` runs the guest until something needs the host and returns an
`Exit` (budgets, timers, SDEI and SError delivery between engine runs, traps and faults
stopped by hooks, WFI)."""

from __future__ import annotations

import dataclasses
import time
import traceback
from typing import Callable

from unicorn import UcError
from unicorn import arm64_const as A

from .. import icount, rawregs
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
            if self._mmio_pending is not None:
                self._complete_mmio()
            if self._hypercall_pending is not None:
                self._complete_hypercall()
            self._abort_site = None
            self._storm_key, self._storm_count = None, 0  # a storm is counted within one run
            stepping = self.guest_debug.control and self.guest_debug.stepping
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
                return Exit(ExitReason.INSTRUCTION_BUDGET, self.pc(), instructions=retired)
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
            if self._delayed:  # an action waits for retired instructions (pause_then)
                due = min(d[0] for d in self._delayed)
                count = min(count, due) if count else due
            pc = self.pc()
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
            done, counted = 0, False
            if count and self._icounter is not None:
                started = self._icounter.value  # the engine's emu_counter (sandbox.icount)
                counted = True
                limit = self._ilimit.value or count  # a hook may have lowered it
                done = min(started, limit)
                # An instruction that faulted (abort, UNDEFINED...) was started but did
                # not retire; SVC/HVC/SMC complete before their trap.
                # An instruction breakpoint (KVM_EXIT_DEBUG) stops before its instruction.
                if (stop is not None and (stop.trap is not None or (
                        stop.exit is not None and stop.exit.reason is ExitReason.DEBUG))
                        and done and started <= limit):
                    done -= 1
                limit_reached = started > limit
            if self._access.recording:
                if stop is not None and stop.trap is None:
                    # A device or watch stopped us mid-instruction: finish it once (its own
                    # exit, if it has one, waits for that). A counted run took the instruction
                    # as done already; it retires (or not) in the step.
                    completed = self._complete_stopped_access()
                    if counted:
                        done += completed - 1
                    stop = self._stop  # the step may have stopped for a reason of its own
                else:
                    self._access.clear()  # it faulted: the trap takes it from the start
            if counted:
                retired += done
                if remaining is not None:
                    remaining -= done
                self.instructions += done
            action_exit = self._age_delayed(done if counted else None) if self._delayed else None
            if stop is not None and stop.actions:  # work hooks left for the loop (pause_then)
                action_exit = self._take_actions(stop.actions) or action_exit
            if stop is None or (stop.exit is None and stop.trap is None):
                if action_exit is not None:
                    action_exit.instructions = retired if max_instructions is not None else None
                    return action_exit
                if stop is not None:
                    continue  # a pause requested by a hook (pause_then, _request_pause)
            if stop is not None and stop.exit is not None:
                stop.exit.instructions = retired if max_instructions is not None else None
                return stop.exit
            if stop is not None and stop.trap is not None:
                trap = stop.trap
                if trap.access is not Access.FETCH:
                    # The PC a memory hook sees can be the start of the translation block;
                    # after the fault Unicorn has restored the exact PC of the access.
                    trap = dataclasses.replace(trap, pc=uc.reg_read(A.UC_ARM64_REG_PC))
                exit_ = (self._poisoned_access(trap) if trap.protected else self._fault(trap)) or action_exit
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
                if self._delayed:  # time passes while it waits: what was due later lands now
                    action_exit = self._age_delayed(None)
                    if action_exit is not None:
                        action_exit.instructions = retired if max_instructions is not None else None
                        return action_exit
                    continue
                if self._wakeup_pending() or self.vm.scheduler.idle_until_event(self):
                    continue
                return Exit(ExitReason.IDLE, pc, instructions=retired if max_instructions is not None else None)

    def _take_actions(self, actions: "list[tuple[Callable[[], None], int]]") -> Exit | None:
        """Run the actions hooks left (in order) or keep those that wait for instructions;
        the first exit one of them causes is returned (the others still run)."""
        first: Exit | None = None
        for action, wait in actions:
            if wait:
                self._delayed.append([wait, action])
                continue
            self._stop = None
            action()
            if first is None and self._stop is not None and self._stop.exit is not None:
                first = self._stop.exit
        self._stop = None
        return first

    def _age_delayed(self, retired: int | None) -> Exit | None:
        """`retired` more instructions have run (None: run them all now): the delayed
        actions that are due run, in the order they were asked for."""
        due = []
        for entry in list(self._delayed):
            entry[0] = 0 if retired is None else entry[0] - retired
            if entry[0] <= 0:
                self._delayed.remove(entry)
                due.append((entry[1], 0))
        return self._take_actions(due) if due else None

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
        rawregs.emu_start(self.uc, pc, timeout, count)
