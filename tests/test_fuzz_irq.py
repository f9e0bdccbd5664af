"""The "irq" event kind on the IRQ demonstration (scenarios/fuzz/irq-handler.toml, a machine
with a GIC): the sweep finds the handler action that clobbers x9 and writes a reproducer that
replays alone, the correct action is clean, masked pulses wait for the unmask; the fast path
agrees with the general one, also after a run that ends with an interrupt still latched; a
lost edge and an IRQ entered while PSTATE.I masks it are flagged."""

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox.arch.exception import ExceptionKind
from sandbox.cli import main
from sandbox.fuzz.fastpath import FastExecutor, agree
from sandbox.fuzz.general import run_general
from sandbox.fuzz.plan import Injection, Plan
from sandbox.fuzz.sweep import sweep_points
from sandbox.fuzz.target import Target

DEMO = Path(__file__).resolve().parent.parent / "scenarios" / "fuzz" / "irq-handler.toml"
SPI = 40  # the interrupt the demonstration enables, edge-triggered
CORRECT = Target(DEMO, variant="correct", events=["irq", "serror"])
FAST = FastExecutor(CORRECT, verifying=True)


def test_sweep_finds_the_clobbering_action_and_its_reproducer_replays(tmp_path, capsys):
    assert main(["sweep", str(DEMO), "--variant", "faulty", "--events", "irq", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    files = sorted((tmp_path / "faulty").glob("*.toml"))
    assert files and "warning" not in out
    text = files[0].read_text()
    assert "raise_interrupt" in text and "lower_interrupt" in text and "expect_violations" in text
    assert main(["run", str(files[0])]) == 0
    assert "PASS reproduction: context: handler of +0x280" in capsys.readouterr().out


def test_every_pulse_breaks_context_with_the_faulty_action_and_none_with_the_correct_one(tmp_path, capsys):
    for variant, status in (("faulty", 1), ("correct", 0)):
        assert main(["sweep", str(DEMO), "--variant", variant, "--events", "irq", "--out", str(tmp_path),
                     "--json", "--all-rows"]) == status
        rows = json.loads(capsys.readouterr().out)["rows"]
        assert {r["masking"] for r in rows} == {"EL1h unmasked", "EL1h masked"}
        broken = {v["invariant"] for r in rows for v in r["violations"]}
        if variant == "faulty":
            assert all(r["violations"] for r in rows) and "context" in broken  # masked ones at the unmask
        else:
            assert not broken


def test_fast_and_general_agree_and_a_latched_interrupt_does_not_leak_into_the_next_run():
    points = sweep_points(CORRECT)
    after_mask = Plan.of(Injection.make(CORRECT.baseline.end - 3, "irq", {"intid": SPI}))  # never taken
    for p in [pt.plan for pt in points[::4]] + [after_mask]:
        fast = FAST.execute(p)
        assert not agree(fast, run_general(CORRECT, p)), p.describe()
    for p in points:
        if p.kind == "serror":
            FAST.execute(after_mask)  # ends with SPI 40 latched and the IRQ line up
            fast = FAST.execute(p.plan)
            assert fast.ok and not agree(fast, run_general(CORRECT, p.plan)), (p.boundary.count, fast.summary())
    FAST.point.restore()
    assert FAST.point.verify()


def test_an_edge_that_vanishes_is_flagged_as_lost():
    # A faulty host clears the latched edge behind the GIC's back before the guest unmasks.
    masked = next(p for p in sweep_points(CORRECT) if p.kind == "irq" and p.masking() == "EL1h masked")
    run = CORRECT.run_for(masked.plan, budget=CORRECT.baseline.budget)
    assert run.execute(until_step=len(run.spec.steps)) is None
    run.vm.interrupt_controller.spi.latched.discard(SPI)
    run.vm.interrupt_controller.update()
    outcome = run_general(CORRECT, masked.plan, run=run, result=run.execute())
    assert [v.invariant for v in outcome.violations] == ["irq-delivery"], outcome.summary()
    assert "1 lost" in outcome.violations[0].message


def test_an_irq_entered_while_pstate_i_masks_it_is_flagged():
    # A faulty host enters the IRQ vector itself in the guest's masked stretch.
    masked = next(p for p in sweep_points(CORRECT) if p.kind == "irq" and p.masking() == "EL1h masked")
    run = CORRECT.run_for(Plan(()), raw_extra=[{"when": {"instructions": masked.boundary.count}}])
    assert run.execute(until_step=len(run.spec.steps)) is None
    vcpu = run.vm.vcpus[0]
    vcpu.take_exception(ExceptionKind.IRQ, None, vcpu.reg("pc"))
    outcome = run_general(CORRECT, Plan(()), run=run, result=run.execute())
    assert any(v.invariant == "delivery" and "IRQ taken while PSTATE masks it" in v.message
               for v in outcome.violations), outcome.summary()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_pulses_and_serrors_keep_every_invariant_and_both_paths_agree(data):
    window = CORRECT.boundaries()
    start, end = window[0].count, CORRECT.baseline.end
    kinds = data.draw(st.lists(st.sampled_from(["irq", "serror"]), min_size=1, max_size=3))
    plan = Plan.of(*(Injection.make(data.draw(st.integers(start, end)), k, {"intid": SPI} if k == "irq" else {})
                     for k in kinds))
    fast = FAST.execute(plan)
    assert fast.ok, (plan.describe(), fast.summary())
    assert not agree(fast, run_general(CORRECT, plan)), plan.describe()
