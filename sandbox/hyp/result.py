"""What a hypercall (or an SDEI dispatch) does to the vCPU: the shim decides, the vCPU applies
(Vcpu._apply_call). Plain data, so a decision can be tested without running a guest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..arch.exception import ExceptionKind

if TYPE_CHECKING:
    from ..exits import Exit


@dataclass(frozen=True)
class GuestContext:
    """x0-x17, PC and PSTATE to load (an SDEI handler entry, or the context COMPLETE restores)."""

    regs: tuple[int, ...]
    pc: int
    pstate: int


@dataclass(frozen=True)
class ResumeEntry:
    """An exception entry through Vcpu.take_exception from the context (elr, from_pstate):
    at `target` like a synchronous exception (COMPLETE_AND_RESUME), or at the vector of
    `kind` when `target` is None."""

    kind: ExceptionKind
    elr: int
    from_pstate: int
    target: int | None


@dataclass(frozen=True)
class CallResult:
    """Applied in this order: `regs` (x0, x1, ...), `context`, `resume`, then `exit` stops the
    vCPU (the vCPU sets its pc: the PC after the call); `reschedule` tells Vm.run that the
    set of powered-on vCPUs changed."""

    regs: tuple[int, ...] = ()
    context: GuestContext | None = None
    resume: ResumeEntry | None = None
    exit: "Exit | None" = None
    reschedule: bool = False
