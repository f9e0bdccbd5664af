"""AArch64 exception entry to EL1 as a pure function (Arm ARM J1 AArch64.TakeException).

`take_exception` computes everything an exception entry changes: the vector address, ESR,
ELR, FAR, SPSR and the new PSTATE. The vCPU layer applies the result to Unicorn; every
path that enters a guest vector (SVC, BRK, UNDEFINED, aborts, injected SErrors and SEAs,
SDEI COMPLETE_AND_RESUME) goes through this one function.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from . import pstate as ps


class ExceptionKind(IntEnum):
    """Offset of the exception type inside a vector group (Arm ARM D1.10.2, table D1-7)."""

    SYNC = 0x000
    IRQ = 0x080
    FIQ = 0x100
    SERROR = 0x180


class VectorGroup(IntEnum):
    """Base offset of the vector group (Arm ARM D1.10.2)."""

    CURRENT_SP0 = 0x000
    CURRENT_SPX = 0x200
    LOWER_AARCH64 = 0x400
    LOWER_AARCH32 = 0x600


# SCTLR_EL1 bits consulted on entry (Arm ARM D17.2.118).
SCTLR_SPAN = 1 << 23
SCTLR_IESB = 1 << 21
SCTLR_DSSBS = 1 << 44


@dataclass(frozen=True)
class CpuFeatures:
    """Features that change what exception entry writes (from the ID registers)."""

    pan: bool = True  # FEAT_PAN: Unicorn's 'max' CPU has it
    ssbs: bool = False
    mte: bool = False


def vector_group(from_pstate: int, target_el: int = 1) -> VectorGroup:
    """Which group of the target's vector table an exception from `from_pstate` uses."""
    from_el = ps.el(from_pstate)
    if from_el < target_el:
        return VectorGroup.LOWER_AARCH32 if from_pstate & ps.NRW else VectorGroup.LOWER_AARCH64
    return VectorGroup.CURRENT_SPX if ps.sp_sel(from_pstate) else VectorGroup.CURRENT_SP0


def vector_offset(from_pstate: int, kind: ExceptionKind, target_el: int = 1) -> int:
    return int(vector_group(from_pstate, target_el)) + int(kind)


class ExceptionEntry(NamedTuple):
    """What AArch64.TakeException writes for an exception taken to EL1. (A named tuple:
    immutable and cheap to build, one per exception entry.)"""

    kind: ExceptionKind
    vector_offset: int
    pc: int  # VBAR_EL1 + vector_offset
    esr: int | None  # None: ESR_EL1 is not written (IRQ/FIQ)
    elr: int  # the preferred return address
    spsr: int  # the interrupted PSTATE
    pstate: int  # PSTATE on entry
    far: int | None = None  # None: FAR_EL1 is not written (UNKNOWN for this exception)


def entry_pstate(from_pstate: int, sctlr_el1: int, features: CpuFeatures = CpuFeatures()) -> int:
    """PSTATE on entry to EL1h (AArch64.TakeException): NZCV and DIT kept; D, A, I, F set;
    SS, IL, UAO and BTYPE cleared; PAN set when SCTLR_EL1.SPAN == 0, else kept; SSBS from
    SCTLR_EL1.DSSBS; TCO set with MTE."""
    keep = ps.NZCV | ps.DIT
    if features.pan:
        keep |= ps.PAN
    new = (from_pstate & keep) | ps.DAIF | ps.EL1H
    if features.pan and not sctlr_el1 & SCTLR_SPAN:
        new |= ps.PAN
    if features.ssbs and sctlr_el1 & SCTLR_DSSBS:
        new |= ps.SSBS
    if features.mte:
        new |= ps.TCO
    return new


def take_exception(
    *,
    kind: ExceptionKind,
    from_pstate: int,
    preferred_return: int,
    vbar: int,
    sctlr_el1: int,
    esr: int | None = None,
    far: int | None = None,
    features: CpuFeatures = CpuFeatures(),
) -> ExceptionEntry:
    """Exception entry to EL1 using AArch64 (the sandbox models no EL2/EL3 guest code).

    `preferred_return` is the Arm ARM's preferred exception return address for this
    exception (the next instruction for SVC/HVC/SMC and asynchronous exceptions taken after an
    instruction, the instruction itself for UNDEFINED, BRK and aborts)."""
    offset = vector_offset(from_pstate, kind)
    return ExceptionEntry(
        kind=kind,
        vector_offset=offset,
        # VBAR_EL1[10:0] are RES0 (Arm ARM D17.2.147): the table is 2 KiB aligned.
        pc=(vbar & ~0x7FF) + offset,
        esr=esr,
        elr=preferred_return,
        spsr=from_pstate & ps.SPSR_VALID,
        pstate=entry_pstate(from_pstate, sctlr_el1, features),
        far=far,
    )
