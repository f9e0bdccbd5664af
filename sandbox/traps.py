"""Trap classification: what a Unicorn stop means, decided in one place as pure functions.

Unicorn reports QEMU exception numbers (`UC_HOOK_INTR`) and unmapped-memory faults, never a
syndrome. `classify_interrupt` and `classify_fault` turn those into a `Trap`;
`guest_exception` says which architectural exception the guest takes for a trap that the
sandbox reflects into the guest. The vCPU layer only applies the result (Firecracker's
"handle_kvm_exit is a function you can feed made-up exits" habit).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto

from .arch import decode
from .arch import esr as E
from .arch import pstate as ps
from .arch.decode import LoadStore, SysRegAccess


class Excp:
    """QEMU exception numbers Unicorn passes to UC_HOOK_INTR (QEMU target/arm/cpu.h)."""

    UDEF = 1
    SWI = 2
    PREFETCH_ABORT = 3
    DATA_ABORT = 4
    IRQ = 5
    FIQ = 6
    BKPT = 7
    HVC = 11
    SMC = 13


class TrapKind(Enum):
    SVC = auto()
    HVC = auto()
    SMC = auto()
    BRK = auto()
    HLT = auto()
    UNDEFINED = auto()
    SYSREG = auto()  # MRS/MSR of a register Unicorn does not implement
    PC_ALIGNMENT = auto()
    ILLEGAL_STATE = auto()
    ALIGNMENT_FAULT = auto()  # data access alignment fault (exclusives, atomics)
    DATA_ABORT = auto()  # access to a guest-physical address with nothing behind it
    INSTRUCTION_ABORT = auto()  # instruction fetch from such an address
    UNHANDLED = auto()  # something the model cannot represent


class Access(Enum):
    READ = auto()
    WRITE = auto()
    FETCH = auto()


@dataclass(frozen=True)
class Trap:
    kind: TrapKind
    pc: int  # address of the instruction that trapped
    insn: int = 0
    imm: int = 0
    sysreg: SysRegAccess | None = None
    loadstore: LoadStore | None = None
    address: int | None = None  # faulting address for aborts
    access: Access | None = None
    size: int = 0
    detail: str = ""
    protected: bool = False  # the address is RAM the sandbox protected (poisoned page)


def classify_interrupt(intno: int, pc: int, pstate: int, fetch: "callable[[int], int | None]") -> Trap:
    """Classify a UC_HOOK_INTR call. `pc` is the PC Unicorn reports (past the instruction for
    SVC/HVC/SMC, unicorn #980; at the instruction otherwise); `fetch(addr)` returns the
    instruction word or None."""
    if intno in (Excp.SWI, Excp.HVC, Excp.SMC):
        at = pc - 4
        insn = fetch(at) or 0
        kind = {Excp.SWI: TrapKind.SVC, Excp.HVC: TrapKind.HVC, Excp.SMC: TrapKind.SMC}[intno]
        return Trap(kind, at, insn, decode.imm16(insn))
    if intno == Excp.BKPT:
        insn = fetch(pc) or 0
        return Trap(TrapKind.BRK, pc, insn, decode.imm16(insn))
    if intno == Excp.UDEF:
        if pc & 3:
            # Unicorn raises UDEF with the PC-alignment syndrome at the misaligned PC.
            return Trap(TrapKind.PC_ALIGNMENT, pc)
        if pstate & ps.IL:
            # PSTATE.IL=1 (an illegal exception return): any instruction takes the Illegal
            # Execution State exception (Arm ARM D1.4.4).
            return Trap(TrapKind.ILLEGAL_STATE, pc, fetch(pc) or 0)
        insn = fetch(pc)
        if insn is None:
            return Trap(TrapKind.UNHANDLED, pc, detail="UNDEFINED at an address that cannot be read")
        access = decode.decode_sysreg_access(insn)
        if access is not None:
            return Trap(TrapKind.SYSREG, pc, insn, sysreg=access)
        if decode.is_hlt(insn):
            return Trap(TrapKind.HLT, pc, insn, decode.imm16(insn))
        return Trap(TrapKind.UNDEFINED, pc, insn)
    if intno == Excp.DATA_ABORT:
        insn = fetch(pc)
        ls = decode.decode_load_store(insn) if insn is not None else None
        if ls is not None and (ls.exclusive or ls.atomic or ls.acquire_release or ls.pair):
            # QEMU raises an alignment fault for a misaligned exclusive/atomic/ordered
            # access even with SCTLR_EL1.A=0 (Arm ARM B2.5.2).
            return Trap(TrapKind.ALIGNMENT_FAULT, pc, insn or 0, loadstore=ls,
                        access=Access.READ if ls.is_load else Access.WRITE)
        return Trap(TrapKind.UNHANDLED, pc, insn or 0, detail="data abort Unicorn raised for a reason the sandbox cannot derive (MMU fault?)")
    if intno == Excp.PREFETCH_ABORT:
        return Trap(TrapKind.UNHANDLED, pc, detail="prefetch abort Unicorn raised (MMU fault?)")
    return Trap(TrapKind.UNHANDLED, pc, detail=f"Unicorn exception number {intno}")


def classify_fault(access: Access, address: int, size: int, pc: int, protected: bool = False) -> Trap:
    """Classify a UC_HOOK_MEM_*_UNMAPPED call (an access to an address with nothing behind
    it: no RAM, no device) or a UC_HOOK_MEM_*_PROT call (`protected`: RAM on a page the
    sandbox protected because it holds poison)."""
    kind = TrapKind.INSTRUCTION_ABORT if access is Access.FETCH else TrapKind.DATA_ABORT
    return Trap(kind, address if access is Access.FETCH else pc, address=address, access=access, size=size,
                protected=protected)


@dataclass(frozen=True)
class GuestException:
    """The synchronous exception the guest takes for a trap (input to take_exception)."""

    esr: int
    preferred_return: int
    far: int | None = None


def guest_exception(trap: Trap, pstate: int, far: int | None = None) -> GuestException:
    """Which synchronous exception to enter for `trap` taken at `pstate`. Preferred return
    addresses per Arm ARM D1.10.1: the next instruction for SVC; the instruction itself for
    BRK, UNDEFINED, aborts and alignment faults."""
    same_el = ps.el(pstate) != 0
    k = trap.kind
    if k is TrapKind.SVC:
        return GuestException(E.syn_svc(trap.imm), trap.pc + 4)
    if k is TrapKind.BRK:
        return GuestException(E.syn_brk(trap.imm), trap.pc)
    if k in (TrapKind.UNDEFINED, TrapKind.SYSREG, TrapKind.HLT, TrapKind.HVC, TrapKind.SMC):
        # HVC/SMC reach here only when the conduit is disabled; HLT when semihosting is off.
        return GuestException(E.syn_uncategorized(), trap.pc)
    if k is TrapKind.ILLEGAL_STATE:
        return GuestException(E.syn_illegal_state(), trap.pc)
    if k is TrapKind.PC_ALIGNMENT:
        return GuestException(E.syn_pc_alignment(), trap.pc, far=trap.pc)
    if k is TrapKind.ALIGNMENT_FAULT:
        write = trap.access is Access.WRITE
        return GuestException(E.syn_data_abort(same_el, E.FSC.ALIGNMENT, wnr=write), trap.pc, far=far)
    if k is TrapKind.DATA_ABORT:
        # QEMU virt: an access to nothing is a synchronous external abort, FSC 0x10, no
        # instruction syndrome (checked on QEMU 7.2: ldr -> 0x96000010, str -> 0x96000050).
        write = trap.access is Access.WRITE
        return GuestException(E.syn_data_abort(same_el, E.FSC.SEA, wnr=write), trap.pc, far=far)
    if k is TrapKind.INSTRUCTION_ABORT:
        return GuestException(E.syn_instruction_abort(same_el, E.FSC.SEA), trap.pc, far=far)
    raise ValueError(f"{k.name} is not reflected into the guest")
