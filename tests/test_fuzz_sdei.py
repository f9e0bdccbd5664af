"""The "sdei" event kind on the SDEI demonstration (scenarios/fuzz/sdei-handler.toml): the sweep
finds the handler hook that clobbers x23 and writes reproducers that replay alone, the
correct hook is clean; the SDEI invariants flag a dispatch while the PE is masked; a
campaign with sdei events is deterministic; the fast path's restore point returns the
dispatcher's state (and a GIC's) exactly, so a restored run equals a fresh one."""

import json
import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox.cli import main
from sandbox.fuzz.fastpath import FastExecutor, agree
from sandbox.fuzz.general import run_general
from sandbox.fuzz.plan import Injection, Plan
from sandbox.fuzz.restore_point import RestorePoint
from sandbox.fuzz.sweep import sweep_points
from sandbox.fuzz.target import Target
from sandbox.hyp import sdei_migration
from sandbox.hyp.sdei_delivery import Choice
from sandbox.scenario import Scenario, ScenarioError

from fuzz_lib import same_seed_twice
from virt_guest import SPI_SETUP, virt_boot

ROOT = Path(__file__).resolve().parent.parent / "scenarios" / "fuzz"
DEMO = ROOT / "sdei-handler.toml"
EVENT = 0x400010  # the event the demonstration exposes
CORRECT = Target(DEMO, variant="correct", events=["sdei"])
FAULTY = Target(DEMO, variant="faulty", events=["sdei"])
FAST = FastExecutor(CORRECT, verifying=True)
WINDOW = CORRECT.boundaries()
START, END = WINDOW[0].count, WINDOW[-1].count  # the loop: the guest has unmasked its PE


def _sdei(at, count=1, mask=False):
    params = {"event": EVENT, "count": count}
    if mask:
        params["mask"] = 1
    return Injection.make(at, "sdei", params)


# -- the demonstration ---------------------------------------------------------------------------

def test_sweep_finds_the_clobbering_hook_and_its_reproducer_replays(tmp_path, capsys):
    status = main(["sweep", str(DEMO), "--variant", "faulty", "--events", "sdei", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 1
    files = sorted((tmp_path / "faulty").glob("*.toml"))
    assert files and "minimal reproducer" in out and "warning" not in out
    minimal = files[0]
    text = minimal.read_text()
    assert "sdei_inject" in text and "instructions = " in text and "expect_violations" in text
    assert "x23 0x0->0x400010" in text  # the interrupted loop's x23 is the hook's total
    assert main(["run", str(minimal)]) == 0  # the reproduction passes: the violation is there
    assert "PASS" in capsys.readouterr().out
    # Without expect_violations the same file is an ordinary scenario run, and it fails.
    plain = minimal.with_name("plain.toml")
    plain.write_text(re.sub(r"expect_violations = \[[^]]*\]", "", text))
    result = Scenario.load(plain).run()
    assert not result.passed and "sdei-context" in result.text()


def test_every_unmasked_boundary_of_the_loop_breaks_sdei_context_with_the_faulty_hook(tmp_path, capsys):
    assert main(["sweep", str(DEMO), "--variant", "faulty", "--events", "sdei", "--out", str(tmp_path),
                 "--json", "--all-rows"]) == 1
    summary = json.loads(capsys.readouterr().out)
    # Each boundary twice: as the guest leaves the PE (unmasked: the handler runs at once and
    # breaks x23) and masked by the host (the instance stays pending: nothing to break).
    assert summary["points"] == 2 * summary["violating"] > 40
    violating = [row for row in summary["rows"] if row["violations"]]
    assert {row["masking"] for row in violating} == {"EL1h unmasked"}
    assert {row["masking"] for row in summary["rows"]} == {"EL1h unmasked", "EL1h masked"}
    invariants = {v["invariant"] for row in violating for v in row["violations"]}
    assert invariants == {"sdei-context", "sums"}  # sums: where x23 is still read afterwards


def test_the_same_sweep_over_the_correct_hook_finds_nothing(tmp_path, capsys):
    assert main(["sweep", str(DEMO), "--variant", "correct", "--events", "sdei", "--out", str(tmp_path),
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["violating"] == 0 and summary["points"] > 20
    assert not list(tmp_path.glob("**/*.toml"))


def test_sdei_points_exist_only_where_the_pe_has_the_event_enabled():
    assert sweep_points(Target(ROOT / "syscall-serror.toml", variant="vectors", events=["sdei"])) == []
    points = sweep_points(CORRECT)
    params = [dict(p.plan.injections[0].params) for p in points]
    assert params and params[::2] == [{"event": EVENT, "count": 1}] * (len(params) // 2)
    assert params[1::2] == [{"event": EVENT, "count": 1, "mask": 1}] * (len(params) // 2)
    assert [p.masking() for p in points[:2]] == ["EL1h unmasked", "EL1h masked"]


# -- the invariants on real guest code ----------------------------------------------------------

def test_an_instance_injected_into_a_masked_pe_stays_pending_and_is_kept():
    outcome = run_general(CORRECT, Plan.of(_sdei(START + 3, count=2, mask=True)))
    assert outcome.ok, outcome.summary()


def test_a_dispatch_while_the_pe_is_masked_is_flagged():
    # A faulty host: after masking the PE and injecting (the plan's steps), it dispatches the
    # event itself, as the run loop does, but without asking next_dispatch whether it may.
    plan = Plan.of(_sdei(START + 3, mask=True))
    run = CORRECT.run_for(plan, budget=CORRECT.baseline.budget)
    assert run.execute(until_step=len(run.spec.steps)) is None
    vcpu, sdei = run.vm.vcpus[0], run.vm.hypervisor.sdei
    assert sdei.pes[0].masked and sdei.next_dispatch(vcpu) is None
    ev = sdei.table.events[EVENT]
    regs, pc, pstate, sctlr = vcpu._context_regs.read()
    vcpu._apply_call(sdei.dispatch(vcpu, Choice(ev, sdei.table.handler(ev, 0), 0), regs, pc, pstate, sctlr))
    outcome = run_general(CORRECT, plan, run=run, result=run.execute())
    messages = [v.message for v in outcome.violations if v.invariant == "sdei-delivery"]
    assert any("while the PE is masked" in m for m in messages), outcome.summary()


def test_an_instance_that_vanishes_is_flagged_as_lost():
    # A faulty host drops the pending instance behind the dispatcher's back (no unregistration).
    plan = Plan.of(_sdei(START + 3, mask=True))
    run = CORRECT.run_for(plan, budget=CORRECT.baseline.budget)
    assert run.execute(until_step=len(run.spec.steps)) is None
    run.vm.hypervisor.sdei.table.pending.clear()
    outcome = run_general(CORRECT, plan, run=run, result=run.execute())
    assert [v.invariant for v in outcome.violations] == ["sdei-delivery"]
    assert "1 lost" in outcome.violations[0].message


# -- the campaign -------------------------------------------------------------------------------

def _fuzz(out: Path) -> int:
    return main(["fuzz", str(DEMO), "--variant", "faulty", "--events", "sdei,serror", "--seed", "5",
                 "--iterations", "160", "--out", str(out), "--json"])


def test_the_same_seed_gives_the_same_sdei_campaign(tmp_path, capsys):
    first, _second = same_seed_twice(_fuzz, tmp_path, capsys)
    assert any(i["kind"] == "sdei" for f in first["findings"] for i in f["plan"])
    for f in first["findings"]:
        assert Scenario.load(f["file"]).run().passed  # each minimised finding replays alone


# -- the restore point --------------------------------------------------------------------------

def test_the_restore_point_returns_the_dispatchers_state_and_ram():
    sdei = FAST.vm.hypervisor.sdei
    FAST.point.restore()
    at_point = sdei_migration.save(sdei)
    start = START
    for plan in (Plan.of(_sdei(start + 3, count=2, mask=True)),  # leaves the PE masked, 2 pending
                 Plan.of(_sdei(start + 5), _sdei(start + 9, count=2)),  # dispatched, one nested
                 Plan.of(_sdei(start + 1, mask=True), Injection.make(start + 4, "serror"))):
        FAST.execute(plan)
    assert sdei_migration.save(sdei) != at_point
    FAST.point.restore()
    assert sdei_migration.save(sdei) == at_point
    assert FAST.point.verify()


def test_a_restored_run_equals_a_fresh_run():
    start = START
    FAST.execute(Plan.of(_sdei(start + 2, count=2, mask=True)))  # state a restore must undo
    for plan in (Plan.of(_sdei(start + 6, count=2)), Plan.of(_sdei(start + 4), Injection.make(start + 20, "serror"))):
        fast, general = FAST.execute(plan), run_general(CORRECT, plan)
        assert not agree(fast, general), agree(fast, general)
        assert fast.ok


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_sdei_injections_keep_every_invariant_and_both_paths_agree(data):
    start, end = START, CORRECT.baseline.end
    n = data.draw(st.integers(1, 3))
    plan = Plan.of(*(_sdei(data.draw(st.integers(start, end)), data.draw(st.integers(1, 2)), data.draw(st.booleans()))
                     for _ in range(n)))
    fast = FAST.execute(plan)
    assert fast.ok, (plan.describe(), fast.summary())
    general = run_general(CORRECT, plan)
    assert not agree(fast, general), agree(fast, general)


# -- bad input ---------------------------------------------------------------------------------

def test_bad_sdei_action_arguments_are_scenario_errors(tmp_path):
    for action, where in (('{ sdei_set_masked = { masked = 1 } }', "sdei_set_masked.masked"),
                          ('{ sdei_inject = { event = 1, if_enabled = "yes" } }', "sdei_inject.if_enabled")):
        path = tmp_path / "bad.toml"
        path.write_text(f'format_version = 1\npurpose = "bad"\n[firmware]\nsource = "_start:\\n b ."\n'
                        f'[[steps]]\ndo = [ {action} ]\n')
        try:
            Scenario.load(path)
        except ScenarioError as e:
            assert where in str(e)
        else:
            raise AssertionError(f"{action} was accepted")


# -- the restore point on a machine with a GIC ----------------------------------------------------

GIC_GUEST = "guest_main:\n" + SPI_SETUP.format(intid=40) + """
ready:
    msr daifclr, #2
wait:
    ldr x0, =irq_log
    ldr x1, [x0]
    cbz x1, wait
    ret
"""


def test_a_restore_point_returns_the_gic_and_a_restored_run_equals_a_fresh_one():
    def to_ready():
        r = virt_boot(GIC_GUEST, run=False)
        while r.vcpu.reg("pc") != r.sym("ready"):
            r.run(max_instructions=1)
        return r

    def interrupt(r):  # the host raises SPI 40; the guest takes it, records it, powers off
        r.vm.raise_interrupt(40)
        ex = r.run(max_instructions=5000)
        return ex.reason.name, [(i.vector, i.intid, i.elr, i.spsr) for i in r.irqs], r.vm.interrupt_controller.state()

    r = to_ready()
    point = RestorePoint(r.vm, verifying=True)
    gic = r.vm.interrupt_controller
    at_point = gic.state()
    first = interrupt(r)
    assert first[0] == "SYSTEM_EVENT" and [irq[:2] for irq in first[1]] == [(0x280, 40)]
    r.vm.raise_interrupt(40)  # latched again, not taken: the state differs from the point's
    assert gic.state() != at_point
    point.restore()
    assert gic.state() == at_point and not r.vcpu.irq.pending and point.verify()
    assert interrupt(r) == first == interrupt(to_ready())


def test_an_interrupted_el0_loop_gets_its_sp_el0_and_pstate_back(tmp_path):
    # The demonstration with the loop at EL0t: the handler runs at EL1h on SP_EL1, so the
    # interrupted SP is SP_EL0, banked meanwhile. The correct hook keeps everything there too.
    text = DEMO.read_text().replace("work:\n", "    ldr x0, =work\n    ldr x1, =el0_stack_top\n    b enter_el0\nwork:\n")
    text = text.replace("    stp x20, x22, [x9]\n    ldp x29, x30, [sp], #16\n    ret\n", "    stp x20, x22, [x9]\n    svc #0xffff\n")
    path = tmp_path / "el0.toml"
    path.write_text(text.replace("no_other_exceptions = true\n", ""))
    for variant in ("correct", "faulty"):
        target = Target(path, variant=variant, events=["sdei"])
        points = sweep_points(target)
        fast = FastExecutor(target)
        bad = [p for p in points if not fast.execute(p.plan).ok]
        assert {p.masking() for p in points} == {"EL0 unmasked", "EL0 masked"}
        want = [p for p in points if p.masking() == "EL0 unmasked"] if variant == "faulty" else []
        assert bad == want, [fast.execute(p.plan).summary() for p in bad[:2]]


def test_a_campaign_with_nothing_to_inject_is_an_error_not_a_traceback(tmp_path, capsys):
    # syscall-serror.toml exposes no SDEI event: sdei applies nowhere in its window.
    status = main(["fuzz", str(ROOT / "syscall-serror.toml"), "--variant", "vectors", "--events", "sdei",
                   "--seed", "1", "--iterations", "10", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2 and "no event kind of sdei applies" in err and "Traceback" not in err


def test_may_change_declares_what_an_sdei_handler_may_change(tmp_path):
    path = tmp_path / "may.toml"
    path.write_text(DEMO.read_text().replace('events = ["sdei"]\n', 'events = ["sdei"]\nmay_change = ["x23"]\n'))
    target = Target(path, variant="faulty", events=["sdei"])
    fast = FastExecutor(target)
    broken = {v.invariant for p in sweep_points(target) for v in fast.execute(p.plan).violations}
    assert broken == {"sums"}  # x23 may change; the loop's sum it feeds is still checked
