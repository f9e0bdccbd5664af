"""`Vm.run()`: every powered-on vCPU, one after the other, deterministically.

The vCPUs share guest RAM but each is its own Unicorn, so they take turns: round-robin in
index order, each turn a fixed quantum of guest instructions (DEFAULT_QUANTUM, counted
exactly by Unicorn). The same guest and the same host actions therefore give the same
interleaving on every run and on every machine. A vCPU's turn ends early when it exits to the
host (the next Vm.run resumes that vCPU for the rest of its quantum), idles in WFI (it
waits until something could wake it: a pending SError or SDEI event), or powers off
(PSCI CPU_OFF).

Time is the Vm's one system counter (sandbox/system_counter.py: every retired instruction of
any vCPU is a tick). When the turn passes, the timers of the vCPUs that did not run catch up
with the time the others made (a waiting vCPU whose deadline passed wakes); when every
powered-on vCPU waits, time jumps to the next timer deadline among them.

A PSCI CPU_ON (or CPU_OFF) ends the caller's turn right after the call. So while only one
vCPU is powered on and no instruction budget is asked for, it can run without counting, at
Unicorn's full speed: the next vCPU can only appear at such a call, an instruction boundary
the guest chose, and the interleaving is the same with or without a budget.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from unicorn import arm64_const as A

from .exits import Exit
from .hyp.power import PowerState
from .kvm import EINVAL, ExitReason, kvm_error

if TYPE_CHECKING:
    from .vcpu import Vcpu
    from .vm import Vm

DEFAULT_QUANTUM = 10_000  # guest instructions per turn when several vCPUs are on
DEFAULT_TIME_BUDGET = 10.0  # seconds (as Vcpu.run)


class Scheduler:
    def __init__(self, vm: "Vm"):
        self.vm = vm
        self.current = 0  # the vCPU whose turn it is
        self.left = 0  # instructions left in its turn (0: a fresh turn)
        self.waiting: set[int] = set()  # idle in WFI until something could wake them
        self._turn: "Vcpu | None" = None  # the vCPU inside Vm.run's current turn
        self._yielded = False  # that turn ended at a PSCI power change

    def power_changed(self, vcpu: "Vcpu") -> None:
        """A vCPU powered another on (or itself off): its turn ends after that call, counted
        or not, so that a budget never changes the interleaving."""
        if self._turn is vcpu:
            self._yielded = True
            vcpu._stop_with(Exit(ExitReason.INSTRUCTION_BUDGET, vcpu.uc.reg_read(A.UC_ARM64_REG_PC)))

    def idle_until_event(self, vcpu: "Vcpu") -> bool:
        """`vcpu` waits in WFI (its run loop asks): let time pass to the next timer deadline
        if nothing else can run meanwhile. Inside Vm.run that needs every other powered-on
        vCPU to be waiting too, and any of their deadlines counts; in a Vcpu.run() of the
        host's own only this vCPU's timers do (the host runs the others). True when `vcpu`
        now has something that wakes it."""
        vcpus = self.vm.vcpus
        if self._turn is None:
            idle = [vcpu]
        elif any(self._runnable(i) for i in range(len(vcpus)) if i != vcpu.index):
            return False  # time moves on with the others' instructions
        else:
            idle = [v for v in vcpus if self._on(v.index)]
        return self.vm.system_counter.idle_until_event(idle, vcpu)

    def _wake_waiting(self) -> None:
        """The timers of the vCPUs that did not run see the time the running one made; the
        waiting vCPUs with something to wake them become runnable."""
        vcpus = self.vm.vcpus
        for i, v in enumerate(vcpus):
            if v.timer is not None and self._on(i):
                v.timer.update()
        self.waiting = {i for i in self.waiting if self._on(i) and not vcpus[i]._wakeup_pending()}

    def _on(self, i: int) -> bool:
        return self.vm.hypervisor.power.states[i] is not PowerState.OFF

    def _runnable(self, i: int) -> bool:
        return self._on(i) and i not in self.waiting

    def _next(self, after: int) -> None:
        """The turn passes to the next runnable vCPU after `after`, in index order (a
        waiting vCPU whose wake-up came during the turn included)."""
        self._wake_waiting()
        n = len(self.vm.vcpus)
        for k in range(1, n + 1):
            i = (after + k) % n
            if self._runnable(i):
                self.current, self.left = i, 0
                return

    def run(self, *, max_instructions: int | None = None, timeout: float | None = DEFAULT_TIME_BUDGET,
            quantum: int = DEFAULT_QUANTUM) -> Exit:
        """Run the vCPUs until one of them needs the host; see the module docstring.
        `max_instructions` bounds the instructions of all vCPUs together (exact)."""
        vcpus = self.vm.vcpus
        if not vcpus:
            raise kvm_error(EINVAL, "the Vm has no vCPU")
        if quantum < 1:
            raise kvm_error(EINVAL, "the scheduling quantum must be at least 1 instruction")
        if max_instructions is not None and max_instructions < 0:
            raise kvm_error(EINVAL, "max_instructions must be >= 0")
        deadline = None if timeout is None else time.monotonic() + timeout
        budget = max_instructions
        retired = 0
        while True:
            self._wake_waiting()
            on = [i for i in range(len(vcpus)) if self._on(i)]
            if on and len(self.waiting) == len(on):
                # Everyone waits: time jumps to the next deadline among them.
                if self.vm.system_counter.idle_until_event([vcpus[i] for i in on], None):
                    continue
            if not self._runnable(self.current):
                self._next(self.current)
            v = vcpus[self.current]
            pc = v.uc.reg_read(A.UC_ARM64_REG_PC)
            if not on:
                return self._report(Exit(ExitReason.POWERED_OFF, pc, vcpu=v.index), retired, budget)
            if not self._runnable(self.current):
                return self._report(Exit(ExitReason.IDLE, pc, vcpu=v.index), retired, budget)
            if budget == 0:
                return self._report(Exit(ExitReason.INSTRUCTION_BUDGET, pc, vcpu=v.index), retired, budget)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return self._report(Exit(ExitReason.TIME_BUDGET, pc, vcpu=v.index), retired, budget)
            solo = len(on) == 1 and budget is None
            if self.left <= 0:
                self.left = quantum
            count = None if solo else self.left if budget is None else min(self.left, budget)
            self._turn, self._yielded = v, False
            try:
                ex = v._run_guarded(count, left)
            finally:
                self._turn = None
            done = ex.instructions or 0
            retired += done
            if budget is not None:
                budget -= done
            if not solo:
                self.left -= done
            if ex.reason is ExitReason.INSTRUCTION_BUDGET:
                if budget == 0:
                    return self._report(ex, retired, budget)
                if solo or self.left <= 0 or self._yielded:
                    self._next(v.index)
            elif ex.reason is ExitReason.IDLE:
                self.waiting.add(v.index)
                self._next(v.index)
            elif ex.reason is ExitReason.POWERED_OFF:
                self._next(v.index)
            else:
                return self._report(ex, retired, budget)

    def _report(self, ex: Exit, retired: int, budget: int | None) -> Exit:
        ex.instructions = retired if budget is not None else None
        vcpu = self.vm.vcpus[ex.vcpu if ex.vcpu is not None else self.current]
        vcpu.last_exit = ex
        if self.vm.observers:
            self.vm.notify("exit", vcpu, ex.pc, exit=ex)
        return ex

    def state(self) -> dict[str, Any]:
        return {"current": self.current, "left": self.left, "waiting": sorted(self.waiting)}

    def restore(self, state: dict[str, Any]) -> None:
        self.current, self.left, self.waiting = state["current"], state["left"], set(state["waiting"])
