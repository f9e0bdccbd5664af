"""Property tests of the invariants over random injections: a correct vector table keeps
every one of them whatever is injected when; a handler that clobbers a register, or that
never returns, is caught wherever the event lands."""

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox.fuzz.fastpath import FastExecutor
from sandbox.fuzz.invariants import INVARIANTS
from sandbox.fuzz.plan import Injection, Plan
from sandbox.fuzz.target import Target, TargetError

ROOT = Path(__file__).resolve().parent.parent / "scenarios" / "fuzz"
VECTORS = Target(ROOT / "syscall-serror.toml", variant="vectors")
SEA = Target(ROOT / "sea-el0-loads.toml")
FAST = {"vectors": FastExecutor(VECTORS), "sea": FastExecutor(SEA)}

CLOBBER = """format_version = 1
purpose = "an SError handler that uses x9 without saving it"
[firmware]
source = '''
_start:
    ldr x1, =vectors
    msr vbar_el1, x1
    isb
    msr daifclr, #4
    mov x9, #0x99
    mov x10, #0
loop:
    add x10, x10, #1
    cmp x10, #20
    b.ne loop
done:
    ldr x0, =0x84000008
    hvc #0
.balign 2048
vectors:
.rept 7
    .balign 0x80
    b .
.endr
    .balign 0x80               // +0x380: SError, current EL with SP_ELx
    mov x9, #0xdead            // BUG: x9 belongs to the interrupted code
    eret
'''
[fuzz]
from = "loop"
to = "done"
events = ["serror"]
{extra}
"""


def _target(tmp_path, extra=""):
    path = tmp_path / "clobber.toml"
    path.write_text(CLOBBER.replace("{extra}", extra))
    return Target(path)


serror_params = st.one_of(st.just({}), st.builds(lambda i: {"iss": i}, st.integers(0, (1 << 25) - 1)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_vectors_keeps_every_invariant_under_random_nested_serrors(data):
    fx = FAST["vectors"]
    n = data.draw(st.integers(1, 4))
    ats = data.draw(st.lists(st.integers(fx.start, VECTORS.baseline.end + 5), min_size=n, max_size=n))
    plan = Plan.of(*(Injection.make(a, "serror", data.draw(serror_params)) for a in ats))
    outcome = fx.execute(plan)
    assert outcome.ok, (plan.describe(), outcome.summary())
    serrors = [d for d in outcome.delivered if d[0] & 0x180 == 0x180]
    assert 1 <= len(serrors) <= n or outcome.exits[-1] == "SYSTEM_EVENT"  # taken, merged, or still pending


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_vectors_keeps_every_invariant_under_random_seas(data):
    boundaries = [b for b in SEA.boundaries() if SEA.kinds[0].applies(b)]
    b = data.draw(st.sampled_from(boundaries))
    iss = data.draw(st.sampled_from([{}, {"iss": 0x800}, {"iss": 0x1800}]))
    outcome = FAST["sea"].execute(Plan.of(Injection.make(b.count, "sea", {**iss, "address": b.address})))
    assert outcome.ok, outcome.summary()
    assert outcome.recorded[0][1] == 0x92000010 | iss.get("iss", 0)  # what the guest saw is what was injected


def test_a_handler_that_clobbers_a_register_breaks_context_wherever_the_serror_lands(tmp_path):
    target = _target(tmp_path)
    fx = FastExecutor(target)
    for b in target.boundaries():
        outcome = fx.execute(Plan.of(Injection.make(b.count, "serror")))
        assert [v.invariant for v in outcome.violations] == ["context"], outcome.summary()
        assert "x9 0x99->0xdead" in outcome.violations[0].message


def test_may_change_declares_what_a_handler_may_clobber(tmp_path):
    target = _target(tmp_path, 'may_change = ["x9"]')
    fx = FastExecutor(target)
    b = target.boundaries()[3]
    assert fx.execute(Plan.of(Injection.make(b.count, "serror"))).ok


def test_a_scenario_invariant_is_checked_at_the_end_of_every_run(tmp_path):
    target = _target(tmp_path, 'may_change = ["x9"]\n[[fuzz.invariants]]\nname = "x9-kept"\nregister = "x9"\nvalue = 0x99')
    fx = FastExecutor(target)
    b = target.boundaries()[3]
    outcome = fx.execute(Plan.of(Injection.make(b.count, "serror")))
    assert [v.invariant for v in outcome.violations] == ["x9-kept"]


def test_a_pended_serror_that_never_returns_breaks_finishes(tmp_path):
    path = tmp_path / "spin.toml"
    text = CLOBBER.replace("mov x9, #0xdead            // BUG: x9 belongs to the interrupted code\n    eret",
                           "b .                        // never returns")
    path.write_text(text.replace("{extra}", "max_instructions = 2000"))
    target = Target(path)
    outcome = FastExecutor(target).execute(Plan.of(Injection.make(target.boundaries()[0].count, "serror")))
    assert [v.invariant for v in outcome.violations] == ["finishes"]


def test_a_baseline_that_breaks_an_invariant_is_refused(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text(CLOBBER.replace("{extra}", "max_instructions = 3000").replace("hvc #0", "svc #0"))  # into `b .`
    with pytest.raises(TargetError, match="with nothing injected"):
        Target(path).baseline


def test_every_builtin_invariant_is_registered_with_a_summary():
    assert {"delivery", "records", "context", "no-storm", "no-host-error", "finishes"} <= set(INVARIANTS)
    assert all(spec.summary for spec in INVARIANTS.values())
