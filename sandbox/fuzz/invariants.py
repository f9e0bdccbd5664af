"""The invariants every fuzzed execution must keep, checked on the observer stream.

Built in (a registry: `register_invariant` adds more, a scenario adds end-state checks in
`[fuzz] invariants`):

    delivery        every pended SError is taken exactly once, deferred by an ESB, or still
                    pending at the end, and never taken while PSTATE.A masks it; every
                    injected external abort is taken at once; no IRQ/FIQ while PSTATE.I/F
                    masks it
    records         what the guest's vectors recorded (vector, ESR, FAR, ELR, SPSR) is what
                    the model delivered (firmware/vectors.S ring, when the firmware has one)
    context         when a handler returns, the interrupted context is back: ELR and SPSR of
                    every exception, and x0-x30 and SP for injected events and IRQ/FIQ (minus what
                    `[fuzz] may_change` lists); no illegal exception return
    sdei-delivery   SDEI instances dispatched once (or discarded, or pending), never while
    sdei-context    masked; COMPLETE restores the interrupted context (sdei_invariants.py)
    irq-delivery    interrupts the host pulsed acknowledged once or still pending
                    (irq_invariants.py)
    no-storm        no exception storm
    no-host-error   no host exception (sandbox callback, Unicorn error, refused host call)
    finishes        the run ends within the instruction budget

The checker is one observer: `Checker.attach(vm)` for each Vm the run uses (a snapshot
restore brings a new one), `finish(end)` when the run is over. It needs nothing but the
stream and the vCPU, so the same checker judges `sandbox run FILE.toml` of a reproducer, the
general execution path and the fast one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from unicorn import arm64_const as A

from ..arch import esr as E
from ..arch import pstate as ps
from ..arch.exception import ExceptionKind
from ..exits import Exit
from ..firmware import exception_records
from ..kvm import ExitReason, InternalErrorSuberror
from ..observe import KINDS, Event

if TYPE_CHECKING:
    from ..vm import Vm

GP_NAMES = tuple(f"x{i}" for i in range(31))
_X_IDS = [A.UC_ARM64_REG_X0 + i for i in range(29)] + [A.UC_ARM64_REG_X29, A.UC_ARM64_REG_X30]
# What an interrupted context is: x0-x30 and the SP of its mode. While a handler runs at
# EL1h, SP_EL0 is the banked copy (written back on the switch) and SP_EL1 is the live SP.
_SP0, _SPX = A.UC_ARM64_REG_SP_EL0, A.UC_ARM64_REG_SP


_CONTEXT_NAMES = GP_NAMES + ("sp",)
_FORKING: list[Any] = []  # Checker(_extra=_FORKING): fork() fills in the registered invariants
_ASYNC_INTERRUPTS = (ExceptionKind.IRQ, ExceptionKind.FIQ)
_INTERRUPT_MASK = {ExceptionKind.IRQ: ps.I, ExceptionKind.FIQ: ps.F}
HOST_FAILURES = {InternalErrorSuberror.HOST_ERROR, InternalErrorSuberror.EMULATION}


def context_of(vcpu: Any, spsr: int) -> tuple[int, ...]:
    """x0-x30 and the SP of the interrupted mode (`spsr`), taken while the handler runs at
    EL1h (Vcpu.gprs_and: in place where it can)."""
    return vcpu.gprs_and(_SPX if ps.el(spsr) == 1 and ps.sp_sel(spsr) else _SP0)


def raw_context_of(vcpu: Any, spsr: int) -> bytes:
    """context_of() as raw little-endian bytes (Vcpu.gprs_and_raw): what a handler's return
    compares against, decoded only when the two differ."""
    return vcpu.gprs_and_raw(_SPX if ps.el(spsr) == 1 and ps.sp_sel(spsr) else _SP0)


@dataclass(frozen=True)
class Violation:
    invariant: str
    message: str
    pc: int | None = None  # where it showed (the ERET, the entry, the exit)

    def signature(self) -> str:
        """What makes two violations the same finding: the invariant and where it showed."""
        where = f"{self.pc:#x}" if self.pc is not None else self.message
        return f"{self.invariant}@{where}"

    def text(self) -> str:
        return f"{self.invariant}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {"invariant": self.invariant, "message": self.message, "pc": self.pc}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Violation":
        return cls(d["invariant"], d["message"], d.get("pc"))


@dataclass
class RunEnd:
    """How a run ended, as the checker needs it."""

    exits: list[Exit]
    host_error: str | None = None
    failure: str | None = None


@dataclass(frozen=True)
class CheckConfig:
    may_change: frozenset[str] = frozenset()  # register names, "sp", "elr", "spsr"
    ring: int | None = None  # address of firmware/vectors.S's exc_ring, when present
    end_checks: tuple["EndCheck", ...] = ()
    table: int | None = None  # address of its vector table, exc_vectors


@dataclass(frozen=True)
class EndCheck:
    """A scenario's own invariant: a register or memory value at the end of every run."""

    name: str
    register: str | None
    address: int | None
    value: int
    width: int = 8

    def check(self, vm: "Vm") -> str | None:
        if self.register is not None:
            got = vm.vcpus[0].reg(self.register)
            return None if got == self.value else f"{self.register} is {got:#x}, not {self.value:#x}"
        assert self.address is not None
        got = int.from_bytes(vm.read_memory(self.address, self.width), "little")
        return None if got == self.value else f"memory at {self.address:#x} is {got:#x}, not {self.value:#x}"


@dataclass
class _Frame:
    """An exception the guest is handling: the model's entry and the context it interrupted."""

    entry: Any  # sandbox.arch.exception.ExceptionEntry
    regs: bytes | None  # raw_context_of() at entry, for injected events
    injected: bool


@dataclass
class Checker:
    config: CheckConfig
    vm: "Vm | None" = None
    violations: list[Violation] = field(default_factory=list)
    entries: list[tuple[int, Any]] = field(default_factory=list)  # (vCPU, ExceptionEntry), in order
    _frames: dict[int, list[_Frame]] = field(default_factory=dict)
    _pending: dict[int, bool] = field(default_factory=dict)
    _abort_injected: dict[int, bool] = field(default_factory=dict)
    _extra: list[Any] = field(default_factory=list)  # the registered invariants' objects (None: not made yet)
    finished: bool = False
    records: dict[int, list[Any]] = field(default_factory=dict)  # the guest's records read at the end, per CPU
    _specs: list["InvariantSpec"] = field(default_factory=list)  # the registered ones with a factory
    _routes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # kind -> indices into _extra
    _unrouted: tuple[int, ...] = ()  # for a kind not in KINDS

    def __post_init__(self) -> None:
        if self._extra is not _FORKING:
            self._specs = [spec for spec in INVARIANTS.values() if spec.factory is not None]
            # One with `watches` is made at the first event it watches: a run without one
            # (every SError run for the SDEI and IRQ invariants) forks and finishes nothing.
            self._extra = [None if spec.watches is not None else spec.factory(self) for spec in self._specs]
            self._route()

    def _route(self) -> None:
        """Which registered invariant hears which event kind: those with `watches` only those,
        the others every event (every event goes through here; forks share the table: their
        invariants are the same, in the same order)."""
        self._routes = {kind: tuple(i for i, s in enumerate(self._specs) if s.watches is None or kind in s.watches)
                        for kind in KINDS}
        self._unrouted = tuple(i for i, s in enumerate(self._specs) if s.watches is None)

    def _made(self, i: int) -> Any:
        x = self._extra[i]
        if x is None:
            x = self._extra[i] = self._specs[i].factory(self)  # type: ignore[misc]
        return x

    def fork(self) -> "Checker":
        """A checker that has seen what this one has seen, for a run continuing from here
        (the fast path forks the one that watched the scenario up to its restore point)."""
        c = Checker(self.config, self.vm, list(self.violations), list(self.entries),
                    {k: list(v) for k, v in self._frames.items()}, dict(self._pending), dict(self._abort_injected),
                    _FORKING)
        # A registered invariant that keeps state across events forks it with `fork(checker)`.
        c._extra = [None if x is None else x.fork(c) if hasattr(x, "fork") else x for x in self._extra]
        c._specs, c._routes, c._unrouted = self._specs, self._routes, self._unrouted
        return c

    def attach(self, vm: "Vm") -> None:
        """Watch `vm`: the run's first, or one a snapshot restore brought (then every registered
        invariant is made, and one with `attach(vm)` starts again from the new Vm's state)."""
        again = self.vm is not None and self.vm is not vm
        self.vm = vm
        vm.observers.append(self)
        for i in range(len(self._extra)):
            extra = self._made(i) if again else self._extra[i]
            if extra is not None and hasattr(extra, "attach"):
                extra.attach(vm)

    def flag(self, invariant: str, message: str, pc: int | None = None) -> None:
        self.violations.append(Violation(invariant, message, pc))

    # -- the stream ------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        kind = event.kind
        if kind == "exception":
            self._on_entry(event)
        elif kind == "eret":
            self._on_eret(event)
        elif kind == "serror_pend":
            self._pending[event.vcpu] = True
        elif kind == "serror_defer":
            self._pending[event.vcpu] = False
        elif kind == "inject" and (event.data.get("dabt") or event.data.get("iabt")):
            self._abort_injected[event.vcpu] = True
        for i in self._routes.get(kind, self._unrouted):
            extra = self._extra[i]
            if extra is None:
                extra = self._made(i)
            extra.on_event(event)

    def _context(self, index: int, spsr: int) -> bytes:
        assert self.vm is not None
        return raw_context_of(self.vm.vcpus[index], spsr)

    def _on_entry(self, event: Event) -> None:
        e = event.data["entry"]
        cpu = event.vcpu
        self.entries.append((cpu, e))
        injected = e.kind in _ASYNC_INTERRUPTS  # an IRQ/FIQ handler gives x0-x30 and SP back too
        if e.kind is ExceptionKind.SERROR:
            injected = True
            if not self._pending.get(cpu):
                self.flag("delivery", f"SError taken at {e.elr:#x} with none pending", e.elr)
            elif _masked_serror(e.spsr):
                self.flag("delivery", f"SError taken while PSTATE.A masks it: SPSR {e.spsr:#x}", e.elr)
            self._pending[cpu] = False
        elif injected and e.spsr & _INTERRUPT_MASK[e.kind] and ps.el(e.spsr) <= 1:
            # Arm ARM D1.16.1: a virtual IRQ (FIQ) is masked by PSTATE.I (F) at EL0/EL1.
            self.flag("delivery", f"{e.kind.name} taken while PSTATE masks it: SPSR {e.spsr:#x}", e.elr)
        if self._abort_injected.pop(cpu, False):
            injected = True
            esr = e.esr or 0
            if e.kind is not ExceptionKind.SYNC or (esr & E.FSC_MASK) != E.FSC.SEA:
                self.flag("delivery", f"injected external abort not taken: entered +{e.vector_offset:#x} "
                                      f"ESR {esr:#010x} instead", e.elr)
        if e.esr is not None and E.ec_of(e.esr) == E.EC.ILLEGAL_STATE:
            self.flag("context", f"illegal exception return to {e.elr:#x}: SPSR {e.spsr:#x}", e.elr)
            if self._frames.get(cpu):
                self._frames[cpu].pop()  # the illegal ERET was that handler's return
        self._frames.setdefault(cpu, []).append(_Frame(e, self._context(cpu, e.spsr) if injected else None, injected))

    def _on_eret(self, event: Event) -> None:
        frames = self._frames.get(event.vcpu)
        if not frames:
            return  # an ERET that enters a context (enter_el0), not a return
        frame = frames.pop()
        e, may = frame.entry, self.config.may_change
        spsr, elr = event.data["spsr"], event.data["elr"]
        returns = _return_addresses(e)
        if "spsr" not in may and (spsr & ps.SPSR_VALID) != e.spsr:
            self.flag("context", f"{_handler(e)} returns with SPSR {spsr:#x}, interrupted PSTATE was {e.spsr:#x}",
                      event.pc)
        if "elr" not in may and elr not in returns:
            want = " or ".join(f"{a:#x}" for a in returns)
            self.flag("context", f"{_handler(e)} returns to {elr:#x}, not {want}", event.pc)
        if frame.regs is None:
            return
        raw = self._context(event.vcpu, e.spsr)
        if raw == frame.regs:
            return
        now, was = struct.unpack("<32Q", raw), struct.unpack("<32Q", frame.regs)
        changed = [(n, i) for i, n in enumerate(_CONTEXT_NAMES) if n not in may and now[i] != was[i]]
        if changed:
            diffs = ", ".join(f"{n} {was[i]:#x}->{now[i]:#x}" for n, i in changed)
            self.flag("context", f"{_handler(e)} returns with registers changed: {diffs}", event.pc)

    # -- the end ---------------------------------------------------------------------------

    def finish(self, end: RunEnd) -> list[Violation]:
        """Check what can only be checked at the end; once (later calls return the same)."""
        assert self.vm is not None
        if self.finished:
            return self.violations
        self.finished = True
        last = end.exits[-1] if end.exits else None
        broken = False
        if last is not None and last.reason is ExitReason.INTERNAL_ERROR and last.internal is not None:
            sub = last.internal.suberror
            if sub is InternalErrorSuberror.EXCEPTION_STORM:
                self.flag("no-storm", last.internal.message.split(";")[0], last.pc)
                broken = True
            elif sub in HOST_FAILURES:
                self.flag("no-host-error", f"{sub.name}: {last.internal.message.strip().splitlines()[-1]}", last.pc)
                broken = True
        if end.host_error or end.failure:
            self.flag("no-host-error", end.host_error or end.failure or "")
            broken = True
        if last is not None and last.reason in (ExitReason.INSTRUCTION_BUDGET, ExitReason.TIME_BUDGET):
            self.flag("finishes", f"the run did not end within its budget ({last.reason.name} at {last.pc:#x})",
                      last.pc)
            broken = True
        for cpu, pending in sorted(self._pending.items()):
            if pending and self.vm.vcpus[cpu].serror.pending_iss is None:
                self.flag("delivery", f"a pended SError on vCPU {cpu} was neither taken nor deferred, "
                                      "and is no longer pending")
        if not broken and self.config.ring is not None:
            self._check_records()
        for check in self.config.end_checks:
            problem = check.check(self.vm)
            if problem is not None:
                self.flag(check.name, problem)
        for extra in self._extra:
            if extra is None:
                continue  # made at its first event: there was none
            for v in extra.finish(end):
                self.violations.append(v)
        return self.violations

    def _through_table(self, e: Any) -> bool:
        table = self.config.table
        return table is None or table <= e.pc < table + VECTOR_TABLE_SIZE

    def _check_records(self) -> None:
        assert self.vm is not None and self.config.ring is not None
        for v in self.vm.vcpus:
            cpu = v.mpidr & 0xFF
            # An IRQ/FIQ taken through another table (gic.S's irq_vectors) is not in the ring.
            model = [e for i, e in self.entries if self.vm.vcpus[i].mpidr & 0xFF == cpu
                     and (e.kind not in _ASYNC_INTERRUPTS or self._through_table(e))]
            records = self.records[cpu] = exception_records(self.vm, self.config.ring, cpu)
            model = model[len(model) - len(records):] if len(records) < len(model) else model
            if len(records) == len(model) and all(map(_record_matches, records, model)):
                continue  # the usual case: one record per delivery, in order
            unmatched = list(records)
            missing = []
            for e in model:
                match = next((r for r in unmatched if _record_matches(r, e)), None)
                if match is None:
                    missing.append(e)
                else:
                    unmatched.remove(match)
            if missing:
                e = missing[0]
                more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
                self.flag("records", f"the guest recorded no exception matching the delivered +{e.vector_offset:#05x} "
                                     f"ESR {e.esr or 0:#010x} ELR {e.elr:#x} SPSR {e.spsr:#x}{more}", e.elr)
            if unmatched:
                r = unmatched[0]
                more = f" (and {len(unmatched) - 1} more)" if len(unmatched) > 1 else ""
                self.flag("records", f"the guest recorded +{r.vector:#05x} ESR {r.esr:#010x} ELR {r.elr:#x} "
                                     f"SPSR {r.spsr:#x}, which the model did not deliver{more}", r.elr)


VECTOR_TABLE_SIZE = 0x800  # 16 entries of 0x80 bytes (Arm ARM D1.10.2)


def _handler(e: Any) -> str:
    return f"handler of +{e.vector_offset:#05x} (ESR {e.esr or 0:#010x}) entered from {e.elr:#x}"


def _masked_serror(spsr: int) -> bool:
    return bool(spsr & ps.A) and ps.el(spsr) <= 1


def _return_addresses(e: Any) -> tuple[int, ...]:
    """Where a handler may return: an asynchronous exception and a call (ELR is already past
    the SVC/HVC/SMC) to ELR; another synchronous exception to ELR (retry) or ELR + 4 (skip)."""
    if e.kind is not ExceptionKind.SYNC or (e.esr is not None and E.ec_of(e.esr) in (E.EC.SVC64, E.EC.HVC64,
                                                                                      E.EC.SMC64)):
        return (e.elr,)
    return (e.elr, e.elr + 4)


def _record_matches(r: Any, e: Any) -> bool:
    if (r.vector, r.elr, r.spsr) != (e.vector_offset, e.elr, e.spsr):
        return False
    if e.esr is not None and r.esr != e.esr:
        return False
    return e.far is None or r.far == e.far


# -- the registry ----------------------------------------------------------------------------

@dataclass(frozen=True)
class InvariantSpec:
    """An invariant. The built-in ones are checked by `Checker` itself (factory None);
    another part of the sandbox adds one with a factory: `factory(checker)` returns an
    object with `on_event(event)` and `finish(end) -> list[Violation]` (see Checker.flag),
    and `fork(checker)` if it keeps state (the fast path forks checkers at its restore point),
    `attach(vm)` if that state must follow a new Vm (a snapshot restore). With `watches` (event
    kinds) it hears only those, and is made at the first one."""

    name: str
    summary: str
    factory: Callable[[Checker], Any] | None = None
    watches: frozenset[str] | None = None


INVARIANTS: dict[str, InvariantSpec] = {}


def register_invariant(spec: InvariantSpec) -> None:
    if spec.name in INVARIANTS:
        raise ValueError(f"invariant {spec.name!r} is already registered")
    INVARIANTS[spec.name] = spec


for _spec in (
    InvariantSpec("delivery", "every pended event is delivered exactly once (or still pending), never while masked"),
    InvariantSpec("records", "the guest's vectors record what the model delivered (vector, ESR, FAR, ELR, SPSR)"),
    InvariantSpec("context", "a returning handler restores the interrupted context (x0-x30, SP, PSTATE, ELR)"),
    InvariantSpec("no-storm", "no exception storm"),
    InvariantSpec("no-host-error", "no host exception"),
    InvariantSpec("finishes", "the run ends within its instruction budget"),
):
    register_invariant(_spec)


from . import irq_invariants, sdei_invariants  # noqa: E402,F401  (register irq-delivery, sdei-*; import this module)
