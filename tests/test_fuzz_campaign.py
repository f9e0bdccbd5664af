"""`sandbox fuzz`: the same seed gives the same campaign, a campaign killed with SIGKILL
resumes with the same command and loses no finding, N worker processes give what one does."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox.cli import main
from sandbox.fuzz.campaign import Campaign, CampaignError
from sandbox.fuzz.target import Target
from sandbox.fuzz.workers import LocalPool, make_pool
from sandbox.scenario import Scenario

from fuzz_lib import same_seed_twice

DEMO = Path(__file__).resolve().parent.parent / "scenarios" / "fuzz" / "syscall-serror.toml"


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def _fuzz(out: Path, *extra: str) -> int:
    return main(["fuzz", str(DEMO), "--variant", "unmask-early", "--seed", "7", "--iterations", "192",
                 "--out", str(out), "--json", *extra])


def test_the_same_seed_gives_the_same_campaign(tmp_path, capsys):
    same_seed_twice(_fuzz, tmp_path, capsys)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(a[k] == b[k].replace(str(tmp_path / "b"), str(tmp_path / "a")) for k in a)


def test_another_seed_gives_another_campaign(tmp_path, capsys):
    _fuzz(tmp_path / "a")
    main(["fuzz", str(DEMO), "--variant", "unmask-early", "--seed", "8", "--iterations", "192",
          "--out", str(tmp_path / "c"), "--json"])
    a, c = _files(tmp_path / "a" / "unmask-early" / "corpus"), _files(tmp_path / "c" / "unmask-early" / "corpus")
    assert a != c


def test_every_finding_is_minimised_and_replays_under_sandbox_run(tmp_path, capsys):
    _fuzz(tmp_path)
    summary = json.loads(capsys.readouterr().out)
    for f in summary["findings"]:
        assert len(f["plan"]) == 1  # one injection is enough for this fault
        result = Scenario.load(f["file"]).run()
        assert result.passed, result.text()


def test_a_vectors_campaign_finds_nothing(tmp_path, capsys):
    status = main(["fuzz", str(DEMO), "--variant", "vectors", "--seed", "3", "--iterations", "128",
                   "--out", str(tmp_path), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert status == 0 and summary["findings"] == [] and summary["executions"] == 128


def test_out_holding_another_campaign_is_refused(tmp_path, capsys):
    _fuzz(tmp_path)
    capsys.readouterr()
    status = main(["fuzz", str(DEMO), "--variant", "unmask-early", "--seed", "9", "--iterations", "64",
                   "--out", str(tmp_path)])
    assert status == 2 and "holds another campaign" in capsys.readouterr().err


@pytest.mark.slow
def test_a_campaign_killed_with_sigkill_resumes_and_loses_no_finding(tmp_path):
    cmd = [sys.executable, "-m", "sandbox", "fuzz", str(DEMO), "--variant", "unmask-early", "--seed", "11",
           "--iterations", "1536", "--out", str(tmp_path / "killed"), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "killed" / "unmask-early" / "campaign.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if state.exists() and json.loads(state.read_text())["round"] >= 3:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = json.loads(state.read_text())
    assert 3 <= before["round"] < 24, "killed in the middle of the campaign"
    for f in before["findings"]:
        assert Path(f["file"]).exists()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    resumed = json.loads(done.stdout)
    assert resumed["executions"] == 1536 and resumed["executions_this_run"] < 1536
    assert {f["id"] for f in before["findings"]} <= {f["id"] for f in resumed["findings"]}
    whole = subprocess.run(cmd[:-3] + ["--out", str(tmp_path / "whole"), "--json"], capture_output=True, text=True,
                           timeout=300)
    strip = lambda fs: [{k: v for k, v in f.items() if k != "file"} for f in fs]  # noqa: E731
    assert strip(json.loads(whole.stdout)["findings"]) == strip(resumed["findings"])  # as if never killed


@pytest.mark.slow
def test_worker_processes_give_what_one_process_gives(tmp_path):
    target = Target(DEMO, variant="unmask-early")
    coverage = (target.program.base, target.program.end)
    local = Campaign(target, tmp_path / "one", 5, LocalPool(target.spec_key(), coverage)).run(iterations=128)
    pool = make_pool(target.spec_key(), workers=2, coverage=coverage)
    try:
        two = Campaign(target, tmp_path / "two", 5, pool).run(iterations=128)
    finally:
        pool.close()
    assert [f.plan for f in local.findings] == [f.plan for f in two.findings]
    assert local.corpus == two.corpus and local.coverage == two.coverage


def test_a_damaged_state_file_is_reported(tmp_path):
    target = Target(DEMO, variant="vectors")
    (tmp_path / "campaign.json").write_text("{not json")
    with pytest.raises(CampaignError, match="unreadable campaign state"):
        Campaign(target, tmp_path, 1, LocalPool(target.spec_key()))
