"""Running one variant of a scenario: build the machine, walk the steps, observe the end.

Steps happen in file order. Each waits for its trigger (only that trigger is armed), then
its actions run; a step without `when` acts at once. Between steps the vCPU runs; a guest
exit that the waiting step does not take ends the run (so does a terminal exit: system
event, internal error). What was observed is then compared with `[expect]`.

For fuzzers and tests the run can also be driven by hand: `advance(instructions)` runs to
an exact instruction boundary, `apply(name, value)` performs any registered action there,
`checkpoint()` / `rewind()` save and return to a point (Vm.snapshot / Vm.restore plus the
runner's own position), `execute()` carries on with the steps and returns the result.
"""

from __future__ import annotations

import contextlib
import json
import struct
import time
from typing import TYPE_CHECKING, Any, Iterator

from ..devices.gic import GicV2
from ..devices.serror_source import SErrorSource
from ..exits import Exit
from ..kvm import ExitReason
from ..observe import Event
from ..ras.ghes import FirmwareFirst
from ..vm import Vm
from .actions import ACTIONS, ActionFailed
from .fields import Doc, Ref
from .model import ScenarioSpec, Step, Variant
from .positions import Path
from .result import VariantResult
from .sdei_expect import record_completion
from .sections import SECTIONS
from .verdict import judge
from .triggers import TRIGGERS, Verdict

if TYPE_CHECKING:
    from ..trace import TraceRecorder
    from ..vcpu import Vcpu

TERMINAL = {ExitReason.SYSTEM_EVENT, ExitReason.SHUTDOWN, ExitReason.INTERNAL_ERROR, ExitReason.TIME_BUDGET}
UNLIMITED = 1 << 62


class ScenarioRun:
    def __init__(self, spec: ScenarioSpec, variant: Variant, doc: Doc, *,
                 recorder: "TraceRecorder | None" = None, count_instructions: bool = False):
        self.spec, self.variant, self.doc = spec, variant, doc
        self.program = variant.program
        self.recorder = recorder
        self.counting = (count_instructions or spec.limits.count_instructions
                         or spec.limits.max_instructions is not None
                         or any(s.trigger is not None and TRIGGERS[s.trigger.name].needs_instruction_count
                                for s in spec.steps))
        self.exits: list[Exit] = []
        self.last_exit: Exit | None = None
        self.step_index = 0
        self.fired: list[int] = []
        self.host_error: str | None = None
        self.failure: str | None = None
        self.notes: list[str] = []
        self.ended = False
        self.runs = 0
        self.host_exceptions: list[dict[str, int]] = []
        self.sdei_completions: list[dict[str, Any]] = []  # what each accepted COMPLETE restored
        self.deadline = time.monotonic() + spec.limits.timeout
        self.vm = self._build()

    # -- machine ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _at(self, path: Path) -> Iterator[None]:
        """A machine-building error is the file's error at `path`."""
        try:
            yield
        except OSError as e:
            raise self.doc.error(path, e.strerror or str(e)) from None

    def resolve(self, ref: Ref) -> int:
        return self.doc.resolve(ref, self.program.symbols)

    def _build(self) -> Vm:
        spec, m = self.spec, self.spec.machine
        with self._at(("machine",)):
            vm = Vm(ram_size=0, unbacked=m.unbacked, ras=m.ras, storm_threshold=m.storm_threshold, uart=m.uart,
                    quirks=set(m.quirks) | set(self.variant.quirks))
        for i, (base, size) in enumerate(m.ram):
            with self._at(("machine", "ram", i) if len(m.ram) > 1 or base != 0x40000000 else ("machine", "ram")):
                vm.add_ram(base, size)
        for cap in m.offer:
            vm.set_capability(cap, True)
        for cap in m.withhold:
            vm.set_capability(cap, False)
        self.devices: dict[str, Any] = {}
        for d in spec.devices:
            with self._at(d.path):
                device = SErrorSource(vm, d.args.get("iss"), delay_instructions=d.args.get("delay", 0))
                vm.add_device(d.base, d.size, device, d.name)
            self.devices[d.name] = device
        for _ in range(m.vcpus):
            vm.create_vcpu()
        if m.gic:
            with self._at(("machine", "gic")):
                GicV2.create(vm)
        for cap in m.enable:
            with self._at(("machine", "enable")):
                vm.enable_cap(cap)
        with self._at(("firmware",)):
            vm.load(self.program)
        for i, p in enumerate(spec.poison):
            with self._at(("poison", i)):
                vm.poison(self.resolve(p.address), p.size)
        if spec.firmware_first is not None:
            with self._at(("firmware_first",)):
                ff = FirmwareFirst(vm, self.resolve(spec.firmware_first.base), spec.firmware_first.sources)
            if "ghes_hest_ptr" in self.program.symbols:
                ff.publish(self.program.symbols["ghes_hest_ptr"])
        vm.vcpus[0].set_reg("pc", self.resolve(spec.firmware.entry))
        self._observe(vm)
        return vm

    def _observe(self, vm: Vm) -> None:
        vm.observers.append(self._on_event)
        for name, value in self.spec.sections.items():
            SECTIONS[name].observe(self, value, vm)
        if self.recorder is not None:
            self.recorder.context = {"variant": self.variant.name}
            self.recorder.counted = self.counting
            self.recorder.attach(vm)

    def _on_event(self, event: Event) -> None:
        if event.kind == "exception":
            e = event.data["entry"]
            self.host_exceptions.append({"vector": e.vector_offset, "ec": (e.esr or 0) >> 26 & 0x3F,
                                         "esr": e.esr or 0, "far": e.far or 0, "elr": e.elr, "spsr": e.spsr,
                                         "cpu": event.vcpu})
        elif event.kind == "sdei_complete":
            record_completion(self, event)

    def instruction_count(self) -> int:
        """Instructions retired by all vCPUs (carried by snapshots, so restores keep counting);
        with one vCPU, that vCPU's count. Vm.run's budget counts the same sum."""
        vcpus = self.vm.vcpus
        return vcpus[0].instructions if len(vcpus) == 1 else sum(v.instructions for v in vcpus)

    def note(self, text: str) -> None:
        self.notes.append(text)

    # -- running ---------------------------------------------------------------------------------

    def _run_vcpu(self, vcpu: "Vcpu", target: int | None) -> Exit | None:
        """One vcpu.run() within the scenario's limits; None when a limit ended the run."""
        self.runs += 1
        if self.runs > self.spec.limits.max_exits:
            self._end(failure=f"more than {self.spec.limits.max_exits} exits (raise run.max_exits?)")
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            self._end(failure=f"the scenario ran out of time ({self.spec.limits.timeout:g} s)")
            return None
        # Several vCPUs: Vm.run schedules every powered-on one (Exit.vcpu says which exited);
        # a step addressed to vCPU N arms its trigger on that vCPU.
        run = vcpu.run if len(self.vm.vcpus) == 1 else self.vm.run
        try:
            if self.counting:
                now = self.instruction_count()
                cap = self.spec.limits.max_instructions if self.spec.limits.max_instructions is not None else now + UNLIMITED
                goal = cap if target is None else min(cap, target)
                return run(max_instructions=max(0, goal - now), timeout=left)
            return run(timeout=left)
        except OSError as e:
            self._end(host_error=f"KVM_RUN: {e}")
            return None

    def _end(self, *, failure: str | None = None, host_error: str | None = None) -> None:
        self.ended = True
        self.failure = self.failure or failure
        self.host_error = self.host_error or host_error

    def _record_exit(self, ex: Exit) -> None:
        self.exits.append(ex)
        self.last_exit = ex

    def _fire(self, step: Step, ex: Exit | None) -> None:
        self.fired.append(step.index)
        self.step_index += 1
        vcpu = self.vm.vcpus[step.vcpu]
        if self.vm.observers:
            self.vm.notify("step", vcpu, vcpu.reg("pc"), index=step.index, name=step.name or None,
                           trigger=step.trigger.name if step.trigger else None)
        for call in step.actions:
            try:
                ACTIONS[call.name].apply(self, self.vm.vcpus[step.vcpu], call.args)
            except OSError as e:
                self._end(host_error=f"{call.name}: {e}")
            except ActionFailed as e:
                self._end(failure=f"{self.doc.file}: {'.'.join(str(p) for p in call.path)}: {e}")
            except Exception as e:  # a sandbox bug must not hide the scenario's result
                self._end(failure=f"{call.name}: internal error {type(e).__name__}: {e}")
            if self.ended:
                return

    def run_until_exit(self, vcpu: "Vcpu", limit: int | None) -> None:
        """The `run` action: run now to the next exit and record it."""
        target = self.instruction_count() + limit if limit is not None and self.counting else None
        ex = self._run_vcpu(self.vm.vcpus[vcpu.index], target)
        if ex is not None:
            self._record_exit(ex)
            if ex.reason in TERMINAL:
                self.ended = True

    def execute(self, *, until_step: int | None = None) -> VariantResult | None:
        """Run the remaining steps to the end and compare with the expectations. With
        `until_step`, stop (and return None) once that many steps have fired: the point
        after the scenario's own preparation, where a fuzzer starts."""
        steps = self.spec.steps
        while not self.ended:
            if until_step is not None and self.step_index >= until_step:
                return None
            step = steps[self.step_index] if self.step_index < len(steps) else None
            if step is not None and step.trigger is None:
                self._fire(step, None)
                continue
            vcpu = self.vm.vcpus[step.vcpu if step is not None else 0]
            armed = None
            if step is not None and step.trigger is not None:
                t = step.trigger
                armed = TRIGGERS[t.name].arm(self, vcpu, t.args, t.count)
            try:
                ex = self._run_vcpu(vcpu, armed.target_instructions if armed is not None else None)
            finally:
                if armed is not None:
                    armed.disarm()
            if ex is None:
                break
            verdict = armed.check(ex) if armed is not None else Verdict.NONE
            if verdict is Verdict.STOP and step is not None:
                self._fire(step, ex)
                continue
            self._record_exit(ex)
            if verdict is Verdict.EXIT and step is not None:
                self._fire(step, ex)
                if ex.reason in TERMINAL:
                    self.ended = True
                continue
            self.ended = True
        return self.result()

    # -- driving by hand (fuzzers) ------------------------------------------------------------

    def advance(self, instructions: int) -> Exit | None:
        """Run vCPU 0 to the absolute instruction count `instructions` (steps are not
        processed). Returns None at that boundary, else the exit that came first (recorded)."""
        self.counting = True
        ex = self._run_vcpu(self.vm.vcpus[0], instructions)
        if ex is None:
            return None
        if ex.reason is ExitReason.INSTRUCTION_BUDGET and self.instruction_count() >= instructions:
            return None
        self._record_exit(ex)
        return ex

    def apply(self, name: str, value: Any, vcpu: int = 0) -> None:
        """Perform a registered action now, its value written as in a scenario file."""
        if name not in ACTIONS:
            raise KeyError(f"unknown action {name!r}")
        doc = Doc("<apply>", {})
        args = ACTIONS[name].parse(doc, (name,), value)
        for ref in doc.refs:
            doc.resolve(ref, self.program.symbols)
        saved, self.doc = self.doc, doc
        try:
            ACTIONS[name].apply(self, self.vm.vcpus[vcpu], args)
        finally:
            self.doc = saved

    def snapshot_restore(self) -> None:
        """Continue in a fresh Vm restored from a snapshot of this one."""
        self._switch(self.vm.snapshot())

    def _switch(self, data: bytes) -> None:
        old = self.vm
        new = Vm.restore(data, devices=self.devices)
        for d in self.devices.values():
            d.attach(new)
        if self._on_event in old.observers:
            old.observers.remove(self._on_event)
        if self.recorder is not None:
            self.recorder.detach()
        self.last_exit = None  # the exit belonged to the old Vm's vCPU
        self.vm = new
        self._observe(new)

    def checkpoint(self) -> bytes:
        """Everything needed to come back here: the Vm snapshot and the runner's position."""
        state = {"step": self.step_index, "fired": self.fired, "exits": len(self.exits), "runs": self.runs,
                 "host_exceptions": len(self.host_exceptions), "sdei_completions": len(self.sdei_completions)}
        head = json.dumps(state).encode()
        return struct.pack("<I", len(head)) + head + self.vm.snapshot()

    def rewind(self, checkpoint: bytes) -> None:
        (n,) = struct.unpack_from("<I", checkpoint)
        state = json.loads(checkpoint[4:4 + n])
        self._switch(checkpoint[4 + n:])
        self.step_index, self.fired = state["step"], list(state["fired"])
        del self.exits[state["exits"]:]
        del self.host_exceptions[state["host_exceptions"]:]
        del self.sdei_completions[state.get("sdei_completions", len(self.sdei_completions)):]
        self.runs = state["runs"]
        self.ended, self.failure, self.host_error = False, None, None
        self.deadline = time.monotonic() + self.spec.limits.timeout

    # -- what happened --------------------------------------------------------------------------

    def result(self) -> VariantResult:
        """What was observed, compared with the variant's expectations."""
        return judge(self)


def check_buildable(spec: ScenarioSpec, doc: Doc) -> None:
    """Build every variant's machine once, so that what only a Vm can check (RAM overlaps,
    poison outside RAM, devices on top of each other) is a load-time error too."""
    for v in spec.variants:
        ScenarioRun(spec, v, doc)
