"""The `[fuzz]` table of a scenario file: what to sweep and fuzz, and what must hold.

    [fuzz]
    from = "el0_task"             # the window starts at the first execution of this address
    to = "el0_done"               #   (after the scenario's own steps) and ends here
    events = ["serror", "sea"]    # event kinds (sandbox.fuzz.events; default: all)
    may_change = ["x0"]           # what a handler may change in the interrupted context
                                  #   (x0-x30, "sp", "elr", "spsr")
    max_instructions = 100000     # budget of one execution (default: 2 x the baseline + 10000)
    coverage = ["exc_vectors", "exc_end"]   # code whose basic blocks steer `sandbox fuzz`
    expect_violations = ["context"]         # a reproducer: the run must break exactly these
    [[fuzz.invariants]]           # the scenario's own, checked at the end of every run
    name = "spins-done"
    memory = { address = "spins", u64 = 100 }     # or register = "x19", value = 5

With the table present, `sandbox run FILE.toml` checks the invariants (sandbox.fuzz.invariants)
on the run and fails on a violation, or, with `expect_violations`, passes only when exactly
those invariants are violated: that is how a written reproducer shows its finding.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..scenario.actions import known_register, parse_memory_value
from ..scenario.expect import Mismatch
from ..scenario.fields import Node, Ref
from ..scenario.sections import SectionSpec, register_section
from .events import EVENT_KINDS
from .invariants import GP_NAMES, INVARIANTS, CheckConfig, Checker, EndCheck, RunEnd

if TYPE_CHECKING:
    from ..scenario.runner import ScenarioRun
    from ..vm import Vm

MAY_CHANGE = set(GP_NAMES) | {"sp", "elr", "spsr"}


@dataclass(frozen=True)
class EndCheckSpec:
    name: str
    register: str | None
    address: Ref | None
    value: int
    width: int


@dataclass(frozen=True)
class FuzzConfig:
    start: Ref | None = None
    end: Ref | None = None
    events: tuple[str, ...] = ()
    may_change: frozenset[str] = frozenset()
    max_instructions: int | None = None
    coverage: tuple[Ref, Ref] | None = None
    expect_violations: tuple[str, ...] | None = None
    checks: tuple[EndCheckSpec, ...] = field(default=())

    def check_config(self, run: "ScenarioRun") -> CheckConfig:
        """The checker's configuration with every address resolved for this run's firmware."""
        checks = tuple(EndCheck(c.name, c.register, None if c.address is None else run.resolve(c.address),
                                c.value, c.width) for c in self.checks)
        symbols = run.program.symbols
        return CheckConfig(self.may_change, symbols.get("exc_ring"), checks, symbols.get("exc_vectors"))


def parse_fuzz(n: Node) -> FuzzConfig:
    start = n.address("from", None)
    end = n.address("to", None)
    events = tuple(n.str_list("events", list(EVENT_KINDS), choices=list(EVENT_KINDS)))
    may = n.str_list("may_change", [])
    for i, name in enumerate(may):
        if name.lower() not in MAY_CHANGE:
            raise n.doc.error(n.path + ("may_change", i), f"{name!r} is not one of x0-x30, sp, elr, spsr")
    budget = n.int("max_instructions", None, minimum=1)
    coverage = None
    if n.has("coverage"):
        raw = n.raw("coverage")
        if not isinstance(raw, list) or len(raw) != 2:
            raise n.error("coverage", "coverage takes [start, end]: two addresses")
        coverage = tuple(_ref(n, ("coverage", i), v) for i, v in enumerate(raw))
    checks = tuple(_end_check(t) for t in n.tables("invariants"))
    names = list(INVARIANTS) + [c.name for c in checks]
    expect = n.str_list("expect_violations", None, choices=names)
    n.finish()
    return FuzzConfig(start, end, events, frozenset(m.lower() for m in may), budget,
                      coverage, None if expect is None else tuple(expect), checks)  # type: ignore[arg-type]


def _ref(n: Node, path: tuple[Any, ...], value: Any) -> Ref:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise n.doc.error(n.path + path, "expected an address (an integer, a symbol or \"symbol+offset\")")
    ref = Ref(value, n.path + path)
    n.doc.refs.append(ref)
    return ref


def _end_check(t: Node) -> EndCheckSpec:
    name = t.str("name")
    if name in INVARIANTS:
        raise t.error("name", f"{name!r} is a built-in invariant")
    if t.has("register"):
        reg = t.str("register")
        if not known_register(reg):
            raise t.error("register", f"unknown register {reg!r}")
        spec = EndCheckSpec(name, reg, None, t.int("value", minimum=0), 8)
    else:
        mem = t.table("memory", required=True)
        assert mem is not None
        ref = mem.address("address")
        data, value, width = parse_memory_value(mem)
        mem.finish()
        if data is not None:
            raise mem.error("bytes", "an invariant compares u8/u16/u32/u64 values")
        spec = EndCheckSpec(name, None, ref, value, width)  # type: ignore[arg-type]
    t.finish()
    return spec


# -- `sandbox run`: the checker on an ordinary scenario run ------------------------------------

_CHECKERS: "weakref.WeakKeyDictionary[ScenarioRun, Checker]" = weakref.WeakKeyDictionary()


def checker_of(run: "ScenarioRun") -> Checker | None:
    return _CHECKERS.get(run)


def _observe(run: "ScenarioRun", config: FuzzConfig, vm: "Vm") -> None:
    checker = _CHECKERS.get(run)
    if checker is None:
        checker = _CHECKERS[run] = Checker(config.check_config(run))
    checker.attach(vm)


def _judge(run: "ScenarioRun", config: FuzzConfig, observed: dict[str, Any]) -> list[Mismatch]:
    checker = _CHECKERS.get(run)
    if checker is None:
        return []
    violations = checker.finish(RunEnd(run.exits, run.host_error, run.failure))
    observed["violations"] = [v.text() for v in violations]
    if config.expect_violations is None:
        return [Mismatch("fuzz invariant", "kept", v.text()) for v in violations]
    got = sorted({v.invariant for v in violations})
    want = sorted(set(config.expect_violations))
    return [] if got == want else [Mismatch("fuzz.expect_violations", want, got)]


register_section(SectionSpec("fuzz", "sweep/fuzz window, event kinds and invariants (sandbox.fuzz)",
                             parse_fuzz, _observe, _judge))
