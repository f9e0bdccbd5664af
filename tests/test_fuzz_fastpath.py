"""The fast execution path agrees with the general one (a fresh ScenarioRun per execution)
for the same injections, and its restore point brings RAM and devices back exactly and flushes
the TLB only when the translation regime may have changed."""

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox import Vm
from sandbox.fuzz.fastpath import FastExecutor, agree
from sandbox.fuzz.general import run_general
from sandbox.fuzz.plan import Injection, Plan
from sandbox.fuzz.restore_point import RestorePoint
from sandbox.fuzz.sweep import sweep_points
from sandbox.fuzz.target import Target

from conftest import boot

ROOT = Path(__file__).resolve().parent.parent / "scenarios" / "fuzz"
VECTORS = Target(ROOT / "syscall-serror.toml", variant="vectors")
FAULTY = Target(ROOT / "syscall-serror.toml", variant="unmask-early")
SEA = Target(ROOT / "sea-el0-loads.toml")
FAST = {id(t): FastExecutor(t, verifying=True) for t in (VECTORS, FAULTY, SEA)}


def _both(target, plan):
    fast = FAST[id(target)].execute(plan)
    return fast, run_general(target, plan)


def test_fast_and_general_agree_at_sampled_sweep_points_of_each_table():
    for target in (VECTORS, FAULTY, SEA):
        points = sweep_points(target)
        for p in points[::9]:
            fast, general = _both(target, p.plan)
            assert not agree(fast, general), (p.boundary, agree(fast, general))


def test_fast_path_sees_the_violation_the_general_path_sees():
    p = next(p for p in sweep_points(FAULTY) if p.boundary.insn == 0xD50344FF)  # msr daifclr, #4
    fast, general = _both(FAULTY, p.plan)
    assert {v.invariant for v in fast.violations} >= {"context"} and not agree(fast, general)


def test_restore_point_brings_every_ram_byte_back():
    fx = FAST[id(FAULTY)]
    for p in sweep_points(FAULTY)[::25]:
        fx.execute(p.plan)  # these runs write stacks, the ring, and loop on until their budget
    fx.point.restore()
    assert fx.point.verify()


def test_a_pending_serror_read_through_isr_el1_agrees():
    # An SError pended inside the system call stays pending (vectors.S runs masked): the
    # handler's `mrs x3, isr_el1` must read A = 1 on both paths.
    p = next(p for p in sweep_points(VECTORS) if p.masking() == "EL1h masked")
    fast, general = _both(VECTORS, p.plan)
    assert not agree(fast, general)
    isr = [r[4] for r in fast.recorded]
    assert any(v & 0x100 for v in isr)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fast_equals_general_for_random_nested_serrors(data):
    start, end = FAST[id(VECTORS)].start, VECTORS.baseline.end
    ats = data.draw(st.lists(st.integers(start, end), min_size=1, max_size=3))
    isss = data.draw(st.lists(st.one_of(st.none(), st.integers(0, (1 << 25) - 1)), min_size=len(ats),
                              max_size=len(ats)))
    plan = Plan.of(*(Injection.make(a, "serror", {} if i is None else {"iss": i}) for a, i in zip(ats, isss)))
    target = data.draw(st.sampled_from([VECTORS, FAULTY]))
    fast, general = _both(target, plan)
    assert not agree(fast, general), agree(fast, general)


def test_restore_flushes_the_tlb_only_after_a_translation_regime_write():
    # MMU off at the point and no regime register written since: the TLB can only hold flat
    # translations, restoring needs no flush. A guest MSR or a host write to one must flush.
    src = """
guest_main:
    mrs x1, tcr_el1
    msr tcr_el1, x1
    svc #0xffff
"""
    r = boot(src, vm=Vm(), max_instructions=11)  # stops before the MSR
    vcpu = r.vcpu
    flushes = []
    flush = vcpu._flush_tlb
    vcpu._flush_tlb = lambda: (flushes.append(1), flush())
    point = RestorePoint(r.vm)
    point.restore()
    assert flushes == []
    vcpu.run(max_instructions=2)  # the guest's `msr tcr_el1`
    assert vcpu.virtual_sites.regime_writes == 1
    point.restore()
    assert flushes == [1]
    point.restore()  # clean again from the last flush
    assert flushes == [1]
    vcpu.set_reg("TTBR0_EL1", 0)  # a host write counts too
    point.restore()
    assert flushes == [1, 1]


def test_restore_brings_back_a_device_the_run_changed():
    src = """
guest_main:
    ldr x1, =0x09000000
    mov w2, #0x41
    strb w2, [x1]
    svc #0xffff
"""
    r = boot(src, vm=Vm(), max_instructions=10)  # _start done: nothing printed yet
    point = RestorePoint(r.vm)
    r.vcpu.run(max_instructions=4)  # the guest's store to the PL011's data register
    assert bytes(r.vm.uart.output) == b"A"
    point.restore()
    assert bytes(r.vm.uart.output) == b""
