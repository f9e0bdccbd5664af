"""Every scenario file in scenarios/ runs and passes; the RAS reproductions assert both the
buggy and the fixed behaviour, and their quirk is what makes the difference."""

from pathlib import Path

import pytest

from sandbox.scenario import Scenario

ROOT = Path(__file__).resolve().parent.parent / "scenarios"
ALL = sorted(ROOT.rglob("*.toml"))
RAS = sorted((ROOT / "ras").glob("*.toml"))


def test_there_are_scenarios_and_ras_reproductions():
    assert len(ALL) >= 19 and len(RAS) >= 11


@pytest.mark.parametrize("path", ALL, ids=lambda p: str(p.relative_to(ROOT)))
def test_scenario_passes(path):
    result = Scenario.load(path).run()
    assert result.passed, result.text()


@pytest.mark.parametrize("path", RAS, ids=lambda p: p.name)
def test_ras_reproduction_names_its_source_and_asserts_buggy_and_fixed(path):
    sc = Scenario.load(path)
    src = sc.spec.source
    assert src is not None and src.project and src.reference and src.title and src.what
    assert path.read_text().startswith("#"), "the header comment tells the story"
    variants = sc.spec.variants
    assert len(variants) == 2
    a, b = variants
    assert a.quirks != b.quirks or a.defines != b.defines  # a quirk or different guest code
    assert a.expect != b.expect  # the two behaviours differ in what is asserted


@pytest.mark.parametrize("path", [p for p in RAS if any(v.quirks for v in Scenario.load(p).spec.variants)],
                         ids=lambda p: p.name)
def test_the_buggy_variant_fails_without_its_quirk(path):
    sc = Scenario.load(path)
    buggy = next(v for v in sc.spec.variants if v.quirks)
    buggy.quirks = ()
    result = sc.run([buggy.name])
    assert not result.passed, "the quirk must be what produces the buggy observable"
