"""`--ray`: sweep points and fuzz batches run as Ray tasks on a local Ray instance started
here, and the merged results equal a local run with the same seed."""

from pathlib import Path

import pytest
import ray

from sandbox.fuzz.campaign import Campaign
from sandbox.fuzz.sweep import sweep
from sandbox.fuzz.target import Target
from sandbox.fuzz.workers import LocalPool, RayPool

DEMO = Path(__file__).resolve().parent.parent / "scenarios" / "fuzz" / "syscall-serror.toml"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_a_ray_sweep_equals_the_local_sweep(local_ray):
    target = Target(DEMO, variant="unmask-early")
    here = sweep(target)
    there = sweep(target, pool=RayPool(target.spec_key(), None))
    assert there.path == "fast"
    assert [r.outcome.comparable() for r in there.rows] == [r.outcome.comparable() for r in here.rows]
    assert len(there.violating) > 100


@pytest.mark.slow
def test_a_ray_campaign_equals_the_local_campaign_with_the_same_seed(local_ray, tmp_path):
    target = Target(DEMO, variant="unmask-early")
    coverage = (target.program.base, target.program.end)
    here = Campaign(target, tmp_path / "here", 21, LocalPool(target.spec_key(), coverage)).run(iterations=128)
    there = Campaign(target, tmp_path / "ray", 21, RayPool(target.spec_key(), None, coverage)).run(iterations=128)
    assert [f.plan for f in there.findings] == [f.plan for f in here.findings] and here.findings
    assert there.corpus == here.corpus and there.coverage == here.coverage
