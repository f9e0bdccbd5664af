"""`sandbox sweep` on the demonstration scenario: the faulty vector table is found, the
reproducer it prints replays the violation under `sandbox run`, the correct table is clean."""

from pathlib import Path

import pytest

from sandbox.cli import main
from sandbox.fuzz.sweep import sweep, sweep_points
from sandbox.fuzz.target import Target, TargetError
from sandbox.scenario import Scenario

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "scenarios" / "fuzz" / "syscall-serror.toml"
SEA = ROOT / "scenarios" / "fuzz" / "sea-el0-loads.toml"


def test_sweep_finds_the_early_unmask_and_prints_a_reproducer_that_replays(tmp_path, capsys):
    status = main(["sweep", str(DEMO), "--variant", "unmask-early", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 1
    files = sorted((tmp_path / "unmask-early").glob("*.toml"))
    assert files, out
    minimal = files[0]
    assert "minimal reproducer" in out and str(minimal) in out
    assert "context" in out and "msr daifclr, #4" in out  # the first violating boundary is the unmask
    text = minimal.read_text()
    assert "instructions = " in text and "set_events" in text and 'expect_violations' in text
    assert main(["run", str(minimal)]) == 0  # the reproduction passes: the violation is there
    replay = capsys.readouterr().out
    assert "PASS" in replay and "context: handler of +0x400" in replay


def test_the_reproducer_fails_when_the_fault_is_fixed(tmp_path, capsys):
    main(["sweep", str(DEMO), "--variant", "unmask-early", "--out", str(tmp_path)])
    capsys.readouterr()
    minimal = sorted((tmp_path / "unmask-early").glob("*.toml"))[0]
    fixed = minimal.with_name("fixed.toml")
    fixed.write_text(minimal.read_text().replace("UNMASK_EARLY = 1", "UNMASK_EARLY = 0"))
    result = Scenario.load(fixed).run()
    assert not result.passed  # with vectors.S nothing is violated: the reproduction fails
    assert "fuzz.expect_violations" in result.text()


def test_the_same_sweep_over_the_correct_vectors_finds_nothing(tmp_path, capsys):
    status = main(["sweep", str(DEMO), "--variant", "vectors", "--out", str(tmp_path), "--json"])
    assert status == 0
    import json
    summary = json.loads(capsys.readouterr().out)
    assert summary["violating"] == 0 and summary["points"] > 150
    assert not list(tmp_path.glob("**/*.toml"))


def test_sweep_covers_the_handler_with_both_masking_states():
    target = Target(DEMO, variant="vectors")
    points = sweep_points(target)
    masking = {p.masking() for p in points}
    assert {"EL0 unmasked", "EL1h masked"} <= masking
    assert len({p.boundary.count for p in points}) == len(points)  # one point per boundary for one kind


def test_unique_keeps_one_point_per_pc_and_pstate():
    target = Target(DEMO, variant="vectors")
    every, unique = sweep_points(target), sweep_points(target, unique=True)
    assert len(unique) < len(every)
    assert len({(p.boundary.pc, p.boundary.pstate) for p in unique}) == len(unique)


def test_sea_at_every_el0_access_is_taken_with_the_context_intact():
    target = Target(SEA)
    result = sweep(target)
    assert result.rows and all(r.point.kind == "sea" for r in result.rows)
    assert not result.violating, [r.outcome.summary() for r in result.violating]
    row = next(r for r in result.rows if r.disassembly.startswith("ldr x2"))
    sea = row.outcome.recorded[0]
    assert sea[0] == 0x400 and sea[1] == 0x92000010 and sea[2] == row.point.boundary.pc  # DABT_LOW, FSC 0x10
    assert row.outcome.exits == ["ARM_SEA", "SYSTEM_EVENT"]


def test_bad_window_and_unknown_event_kind_are_reported(tmp_path, capsys):
    assert main(["sweep", str(DEMO), "--events", "nmi"]) == 2
    assert "unknown event kind 'nmi'" in capsys.readouterr().err
    with pytest.raises(TargetError, match="missing symbol 'nowhere'"):
        Target(DEMO, start="nowhere")
    bad = tmp_path / "bad.toml"
    bad.write_text(DEMO.read_text().replace('events = ["serror"]', 'events = ["serror"]\nmay_change = ["x99"]'))
    assert main(["sweep", str(bad)]) == 2
    assert "bad.toml:" in capsys.readouterr().err


def test_an_sea_point_written_as_a_scenario_replays_the_exit_and_the_injection(tmp_path):
    from sandbox.fuzz.reproducer import write_reproducer

    target = Target(SEA)
    row = next(r for r in sweep(target).rows if r.disassembly.startswith("str x2"))
    path = write_reproducer(target, row.point.plan, row.outcome, tmp_path / "sea.toml", how="sweep")
    text = path.read_text()
    assert 'exit = "ARM_SEA"' in text and "ARM_SEA_TO_USER" in text and "unpoison" in text
    result = Scenario.load(path).run()
    assert result.passed, result.text()  # same exits, same records (ESR, ELR, SPSR, ISR), no violation
    assert result.variants[0].observed["exits"] == ["ARM_SEA", "SYSTEM_EVENT"]
