"""The fast execution path: one machine for the whole campaign, restored before each run.

`FastExecutor(target)` builds the scenario's machine once, runs it to the start of the
window (every scenario step fired) and keeps a `RestorePoint` there. `execute(plan)` then
restores the point, performs the plan's steps and runs to the scenario's end, with what
makes a run cheap:

- register access through the C API (`fastregs`), no wall-clock timer per run (the
  instruction budget bounds every run, as in the general path);
- the SError gate kept armed for the campaign (`SErrorGate.keep_armed`): no translation flush
  when an SError becomes pending;
- the restore point: CPU context, the pages written since, the model's host-side state.

The step loop is ScenarioRun.execute's for the two triggers injections use (`instructions`,
`exit`), with the same actions from the same registry, so an outcome here equals the
general path's for the same plan (tests/test_fuzz_fastpath.py checks it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from unicorn import UC_HOOK_BLOCK, Uc

from ..kvm import ExitReason
from ..scenario.actions import ACTIONS, ActionFailed
from ..scenario.runner import TERMINAL, UNLIMITED
from . import fastregs
from .invariants import Checker, RunEnd
from .outcome import Outcome, outcome_of
from .plan import Plan
from .restore_point import RestorePoint
from .section import checker_of

if TYPE_CHECKING:
    from ..exits import Exit
    from ..scenario.model import Step
    from .target import Target


class FastPathUnsupported(Exception):
    """The scenario or the plan needs something only the general path does."""


def fast_path_problem(target: "Target") -> str | None:
    """Why `target` cannot use the fast path, or None."""
    spec = target.spec
    if spec.machine.vcpus != 1:
        return "the fast path runs one vCPU"
    if spec.firmware_first is not None:
        return "firmware-first state is not part of the fast path's restore point"
    return None


class FastExecutor:
    def __init__(self, target: "Target", *, coverage: tuple[int, int] | None = None, verifying: bool = False):
        problem = fast_path_problem(target)
        if problem is not None:
            raise FastPathUnsupported(problem)
        self.target = target
        self.budget = target.baseline.budget
        run = self.run = target.run_for(Plan(()), budget=self.budget)
        own = len(target.spec.steps)
        if run.execute(until_step=own) is not None:
            raise FastPathUnsupported("the scenario's steps do not all fire")
        self.own_steps = own
        self.vm = run.vm
        self.vcpu = self.vm.vcpus[0]
        base_checker = checker_of(run)
        assert base_checker is not None
        self.base_checker = base_checker
        self.vm.observers.clear()  # each execution attaches its own checker
        self.ring = run.program.symbols.get("exc_ring")
        uc = self.vcpu.uc
        fastregs.install(uc)
        self.vcpu.serror.keep_armed()  # pending and clearing never retranslate code
        self.blocks: set[int] = set()
        if coverage is not None:
            uc.hook_add(UC_HOOK_BLOCK, self._on_block, None, coverage[0], coverage[1] - 1)
        uc.ctl_flush_tb()  # translations made before these hooks existed must not run again
        self.base_runs = run.runs
        self.base_exits = list(run.exits)
        self.point = RestorePoint(self.vm, verifying=verifying)
        self.executions = 0

    def advance_to(self, count: int) -> None:
        """Move the restore point forward to instruction boundary `count` (the start of a
        sweep window), so that executions do not run the part before it again."""
        self.point.restore()
        self.vm.observers[:] = [self.base_checker]
        loop = _StepLoop(self, self.base_checker)
        while self.vcpu.instructions < count and not loop.ended:
            ex = loop._run_vcpu(count)
            if ex is None or ex.reason is not ExitReason.INSTRUCTION_BUDGET:
                raise FastPathUnsupported(f"the run ends before instruction boundary {count}")
        self.vm.observers.clear()
        self.base_runs = loop.runs
        self.point.save()

    def _on_block(self, uc: Uc, address: int, size: int, _ud: object) -> None:
        self.blocks.add(address)

    @property
    def start(self) -> int:
        """The instruction count of the restore point: plans inject at or after it."""
        return self.point.vcpus[0].instructions

    def execute(self, plan: Plan) -> Outcome:
        steps = self.target.steps_for(plan)[self.own_steps:]
        for step in steps:
            if step.trigger is not None and step.trigger.name not in ("instructions", "exit"):
                raise FastPathUnsupported(f"trigger {step.trigger.name!r}")
        self.point.restore()
        self.executions += 1
        checker = self.base_checker.fork()
        self.vm.observers[:] = [checker]
        self.blocks = set()
        end = _StepLoop(self, checker).go(steps)
        checker.finish(end)
        return outcome_of(checker, self.vm, self.ring, [e.reason.name for e in end.exits], self.vcpu.instructions,
                          frozenset(self.blocks))


class _StepLoop:
    """ScenarioRun.execute for the `instructions` and `exit` triggers (same order of
    checks, same exit bookkeeping, same limits)."""

    def __init__(self, ex: FastExecutor, checker: Checker):
        self.ex = ex
        self.run = ex.run
        self.vcpu = ex.vcpu
        self.runs = ex.base_runs
        self.end = RunEnd(list(ex.base_exits))
        self.ended = False
        self.run.last_exit = None

    def _run_vcpu(self, target: int | None) -> "Exit | None":
        self.runs += 1
        limits = self.run.spec.limits
        if self.runs > limits.max_exits:
            self._stop(failure=f"more than {limits.max_exits} exits (raise run.max_exits?)")
            return None
        now = self.vcpu.instructions
        cap = limits.max_instructions if limits.max_instructions is not None else now + UNLIMITED
        goal = cap if target is None else min(cap, target)
        try:
            return self.vcpu.run(max_instructions=max(0, goal - now), timeout=None)
        except OSError as e:
            self._stop(host_error=f"KVM_RUN: {e}")
            return None

    def _stop(self, *, failure: str | None = None, host_error: str | None = None) -> None:
        self.ended = True
        self.end.failure = self.end.failure or failure
        self.end.host_error = self.end.host_error or host_error

    def _record(self, ex: "Exit") -> None:
        self.end.exits.append(ex)
        self.run.last_exit = ex

    def _fire(self, step: "Step") -> None:
        for call in step.actions:
            try:
                ACTIONS[call.name].apply(self.run, self.vcpu, call.args)
            except OSError as e:
                self._stop(host_error=f"{call.name}: {e}")
            except ActionFailed as e:
                self._stop(failure=f"{self.run.doc.file}: {'.'.join(str(p) for p in call.path)}: {e}")
            except Exception as e:  # a sandbox bug must not hide the result
                self._stop(failure=f"{call.name}: internal error {type(e).__name__}: {e}")
            if self.ended:
                return

    def go(self, steps: "tuple[Step, ...]") -> RunEnd:
        i = 0
        while not self.ended:
            step = steps[i] if i < len(steps) else None
            if step is not None and step.trigger is None:
                i += 1
                self._fire(step)
                continue
            target = reason = None
            if step is not None:
                assert step.trigger is not None
                if step.trigger.name == "instructions":
                    target = step.trigger.args
                else:
                    reason = step.trigger.args
            ex = self._run_vcpu(target)
            if ex is None:
                break
            if target is not None and ex.reason is ExitReason.INSTRUCTION_BUDGET and self.vcpu.instructions >= target:
                i += 1
                self._fire(step)  # type: ignore[arg-type]
                continue
            self._record(ex)
            if reason is not None and ex.reason is reason:
                i += 1
                self._fire(step)  # type: ignore[arg-type]
                if ex.reason in TERMINAL:
                    self.ended = True
                continue
            self.ended = True
        return self.end


def agree(a: Outcome, b: Outcome) -> dict[str, Any]:
    """The fields in which two outcomes differ (empty when they agree)."""
    ca, cb = a.comparable(), b.comparable()
    return {k: (ca[k], cb[k]) for k in ca if ca[k] != cb[k]}
