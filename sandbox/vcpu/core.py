"""One vCPU = one Unicorn instance, and its run loop.

`Vcpu.run()` runs the guest until something needs the host and returns an `Exit`. Traps
are classified in `traps.py`; this module applies the decisions: exception entry (through
`arch.exception.take_exception`, the only place an entry is computed), hypercalls (the
`hyp` shim), emulated system registers, and exits. With nothing pending the only hooks are
the interrupt hook and the unmapped-memory hook, which fire only on traps, so the guest runs
at Unicorn's own speed.

The class is split by job: registers.py (host register access), injection.py (vCPU events),
memory.py (memory faults and MMIO), calls.py (hypercalls), run_loop.py (KVM_RUN); this module
holds construction, exception entry and the trap dispatch the hooks call.
"""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING, Any, Callable

from unicorn import (
    UC_ARCH_ARM64,
    UC_HOOK_MEM_FETCH_PROT,
    UC_HOOK_MEM_FETCH_UNMAPPED,
    UC_HOOK_MEM_READ_PROT,
    UC_HOOK_MEM_READ_UNMAPPED,
    UC_HOOK_MEM_WRITE_PROT,
    UC_HOOK_MEM_WRITE_UNMAPPED,
    UC_MODE_ARM,
    Uc,
)
from unicorn import arm64_const as A

from .. import cpustate, icount
from ..access_completion import AccessCompletion
from ..arch import pstate as ps
from ..arch.esr import EC, ec_of, syn_illegal_state
from ..arch.exception import CpuFeatures, ExceptionEntry, ExceptionKind, take_exception
from ..disasm import disassemble_one
from ..exits import Exit, InternalErrorExit
from ..guest_debug import GuestDebug
from ..kvm import EBUSY, ExitReason, InternalErrorSuberror, kvm_error
from ..rawhooks import RawHooks
from ..rawregs import CallRegisters, ContextRegisters, ExceptionRegisters, PstateWriter
from ..serror import SErrorGate
from ..virtual_sites import VirtualSites
from ..sysreg_intercept import SysregIntercept
from ..sysregs import EmulatedSysRegs
from ..traps import Trap, TrapKind, classify_interrupt, guest_exception

if TYPE_CHECKING:
    from ..irq import InterruptGate
    from ..timer import GenericTimer
    from ..vm import Vm

from .calls import HypercallPath
from .injection import EventInjection
from .memory import GuestMemoryAccess
from .registers import X_IDS, RegisterAccess
from .run_loop import RunLoop
from .stops import Stop


def _is_call(esr: int | None) -> bool:
    """SVC/HVC/SMC are deliberate calls: repeating one is the guest's choice, not a storm."""
    return esr is not None and ec_of(esr) in (EC.SVC64, EC.HVC64, EC.SMC64)


class Vcpu(RegisterAccess, EventInjection, GuestMemoryAccess, HypercallPath, RunLoop):
    def __init__(self, vm: "Vm", index: int, mpidr: int):
        self.vm = vm
        self.index = index
        self.mpidr = mpidr
        self.features = CpuFeatures()
        self.sysregs = EmulatedSysRegs(ras=vm.ras, id_view=lambda reg: vm.id_registers.trapped_read(reg, self))
        self._running = False
        self._stop: Stop | None = None
        self._storm_key: tuple[int, int, int] | None = None
        self._storm_count = 0
        self._eret_hooks: dict[int, int] = {}
        self._in_emulation = False
        self._counting = False  # whether the last emu_start counted instructions
        self.intercept = SysregIntercept(self)  # the one MRS/MSR hook of this vCPU (sandbox.sysreg_intercept)
        self.serror = SErrorGate(self)
        self.virtual_sites = VirtualSites(self)  # ERET/gate hooks at virtual aliases (MMU on)
        self.irq: InterruptGate | None = None  # IRQ/FIQ lines, once the Vm has a GIC
        self.timer: GenericTimer | None = None  # deterministic time (sandbox.timer), when attached
        self._mmio_pending: tuple[Exit, Any] | None = None
        self._access = AccessCompletion()  # accesses that stopped the vCPU (sandbox/access_completion.py)
        self._pause_requests = 0  # pause_then / _request_pause calls, so callbacks see their own
        self._delayed: list[list[Any]] = []  # [instructions left, action] (pause_then after_instructions)
        self._abort_site: tuple[int, int] | None = None  # (pc, far) of the last abortable exit
        self.instructions = 0  # retired instructions, counted while a run counts them
        self.guest_debug = GuestDebug(self)  # KVM_SET_GUEST_DEBUG state (sandbox.guest_debug)
        self.replaying_access = False  # the completing step of sandbox/access_completion.py runs
        self._run_counts = False  # whether the current (or last) run counts instructions
        self.last_exit: Exit | None = None
        self.sdei_check = False  # the SDEI dispatcher may have an event to deliver here (hyp/sdei*)
        self._hypercall_pending: Exit | None = None  # a KVM_EXIT_HYPERCALL awaiting its x0-x3
        self.uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
        self.uc.ctl_set_cpu_model(A.UC_CPU_ARM64_MAX)
        views = cpustate.views(self.uc)  # x0-x30, PC (slot 32) and SCTLR_EL1 in place, or None
        self._call_regs = CallRegisters(self.uc, vm.memory, views)
        self._xregs = None if views is None else views.xregs
        self._sctlr_view = None if views is None else views.sctlr
        # The engine's instruction counter and limit, read in place by the run loop (sandbox.icount).
        self._icounter, self._ilimit = icount.counter(self.uc), icount.limit_view(self.uc)
        self._context_regs = ContextRegisters(self.uc, views)
        self._pstate_writer = PstateWriter(self.uc)
        self._exception_regs = ExceptionRegisters(self.uc)
        # `until` is never used: the loop stops through hooks, budgets and exits only.
        self.uc.ctl_exits_enabled(True)
        self.uc.ctl_set_exits([])
        for region in vm.memory.ram:
            self._map_ram(region)
        for region in vm.memory.mmio:
            self._map_mmio(region)
        self.raw_hooks = RawHooks(self.uc)  # the hooks that fire on every entry and return (sandbox.rawhooks)
        self.raw_hooks.interrupt(self._on_interrupt)
        self.uc.hook_add(UC_HOOK_MEM_READ_UNMAPPED | UC_HOOK_MEM_WRITE_UNMAPPED | UC_HOOK_MEM_FETCH_UNMAPPED,
                         self._on_unmapped)
        self.uc.hook_add(UC_HOOK_MEM_READ_PROT | UC_HOOK_MEM_WRITE_PROT | UC_HOOK_MEM_FETCH_PROT,
                         self._on_protected)
        self.reset()
        for address in vm.eret_sites:
            self.watch_eret(address)
        for address in vm.gate_sites:
            self.serror.watch(address)
        self.apply_poison(set(), vm.poisoned.pages())

    def watch_eret(self, address: int) -> None:
        """Check the ERET at `address` before it executes (see `_on_eret`)."""
        if address not in self._eret_hooks:
            self._eret_hooks[address] = self.raw_hooks.code(self._on_eret, address, address)
            self.uc.ctl_remove_cache(address, address + 4)  # hooks are compiled into translations

    def _refuse_while_running(self, what: str) -> None:
        if self._running:
            raise kvm_error(EBUSY, f"cannot {what} while the vCPU is running")

    def set_guest_debug(self, control: int) -> None:
        """KVM_SET_GUEST_DEBUG: KVM_GUESTDBG_* bits (sandbox.guest_debug)."""
        self._refuse_while_running("set guest debug")
        self.guest_debug.set(control)

    def take_exception(self, kind: ExceptionKind, esr: int | None, preferred_return: int,
                       far: int | None = None, from_pstate: int | None = None,
                       target: int | None = None) -> ExceptionEntry:
        """Enter the guest's EL1 vector for an exception (AArch64.TakeException) and write
        ESR/FAR/ELR/SPSR/PSTATE/PC. Every exception the guest takes comes through here.
        `target` replaces the vector address for an entry "as if a synchronous exception
        were taken" at a given address (SDEI COMPLETE_AND_RESUME, DEN0054C 5.2.2); such a
        deliberate resume is never counted as an exception storm."""
        uc = self.uc
        pstate, _, _, vbar = self._exception_regs.read()
        if from_pstate is None:
            from_pstate = pstate
        entry = take_exception(
            kind=kind, from_pstate=from_pstate, preferred_return=preferred_return,
            vbar=vbar, sctlr_el1=self.sctlr_el1(), esr=esr, far=far, features=self.features)
        if target is not None:
            entry = entry._replace(pc=target)
        elif self._storm(entry):
            return entry
        self._exception_regs.write_entry(entry.esr, entry.far, entry.elr, entry.spsr)
        self.set_pstate(entry.pstate, pstate)  # hflags rebuild (unicorn #2333) and the SP_EL1 bank
        if self.pc() != entry.pc:
            # (Already there when Unicorn made the entry itself, sandbox.irq: a PC write
            # from a code hook would restart the instruction and count it twice.)
            uc.reg_write(A.UC_ARM64_REG_PC, entry.pc)
        if self.vm.observers:
            self.vm.notify("exception", self, entry.elr, entry=entry)
        if self.guest_debug.control:
            stop = self.guest_debug.exception_exit(entry)
            if stop is not None:
                self._stop_with(stop)
        return entry

    def _storm(self, entry: ExceptionEntry) -> bool:
        """An exception storm: the same vector with the same syndrome entered again and again,
        each time at the instruction the handler returned to (ELR unchanged or +4: the
        interrupted code made no progress). Stops the run instead of entering."""
        key = (entry.vector_offset, entry.esr or 0)
        prev = self._storm_key
        if (prev is not None and prev[:2] == key and entry.elr in (prev[2], prev[2] + 4)
                and not _is_call(entry.esr)):
            self._storm_count += 1
        else:
            self._storm_count = 1
        self._storm_key = (key[0], key[1], entry.elr)
        if self._storm_count < self.vm.storm_threshold:
            return False
        insn = self._fetch(entry.elr)
        text = disassemble_one(insn, entry.elr) if insn is not None else "(not readable)"
        message = (f"exception storm: vector +{entry.vector_offset:#05x} entered {self._storm_count} times "
                   f"in a row with ESR {entry.esr or 0:#010x} without progress; "
                   f"faulting instruction {entry.elr:#x}: {text}")
        self._stop_with(Exit(ExitReason.INTERNAL_ERROR, entry.elr, internal=InternalErrorExit(
            InternalErrorSuberror.EXCEPTION_STORM, message,
            {"vector": entry.vector_offset, "esr": entry.esr, "elr": entry.elr, "insn": text})))
        self._storm_key, self._storm_count = None, 0
        return True

    def _stop_with(self, exit_: Exit | None = None, trap: Trap | None = None) -> None:
        self._stop = Stop.replacing(self._stop, exit_, trap)
        self.uc.emu_stop()

    def pause_then(self, action: Callable[[], None] | None = None, *, after_instructions: int = 0) -> None:
        """From a hook or a device callback: stop the vCPU and run `action` from the run loop,
        for what a hook cannot do itself (enter an exception, pend an SError, add hooks).
        Called from a memory access (a device, a watch), the access instruction completes
        first, exactly once, without the device seeing it again (sandbox/access_completion.py).
        With `after_instructions`, the action waits until that many more instructions have
        retired; they count toward the run's instruction budget. Several requests made
        before the run loop gets control run in the order they were made. Outside a run
        (from another action, or between runs) nothing needs stopping: the action runs at
        once, or waits for its instructions in the next runs."""
        if not self._in_emulation:
            if action is not None and after_instructions > 0:
                self._delayed.append([after_instructions, action])
            elif action is not None:
                action()
            return
        if self._stop is None:
            self._stop = Stop()
        if action is not None:
            self._stop.actions.append((action, max(0, after_instructions)))
        self._pause_requests += 1
        self.uc.emu_stop()

    def instruction_count(self) -> int | None:
        """Instructions retired so far, also from inside a run (for observers); None when
        the current or last run does not count instructions."""
        if not self._run_counts:
            return None
        if self._in_emulation and self._counting:
            return None if self._icounter is None else self.instructions + self._icounter.value
        return self.instructions

    def _request_pause(self) -> None:
        """Stop Unicorn after the current hook and resume at once from the run loop (a bare
        `pause_then()`: an exit or trap already waiting is kept)."""
        self.pause_then()

    def _host_error(self, what: str) -> None:
        self._stop_with(Exit(ExitReason.INTERNAL_ERROR, self.uc.reg_read(A.UC_ARM64_REG_PC),
                             internal=InternalErrorExit(InternalErrorSuberror.HOST_ERROR,
                                                        f"{what}: {traceback.format_exc(limit=6)}")))

    def _on_interrupt(self, uc: Uc, intno: int, _ud: object) -> None:
        try:
            if intno == 11 or intno == 13:  # EXCP_HVC / EXCP_SMC: the hot path, kept short
                self._hypercall(intno == 13)  # the conduit: 0 HVC, 1 SMC (hyp.smccc.Conduit)
                return
            pc = uc.reg_read(A.UC_ARM64_REG_PC)
            trap = classify_interrupt(intno, pc, self.pstate(), self._fetch)
            self._dispatch(trap)
        except Exception:
            self._host_error("trap dispatch")

    def _on_eret(self, uc: Uc, address: int, size: int, _ud: object) -> None:
        """An ERET is about to execute. Unicorn marks an illegal exception return with
        PSTATE.IL but never raises the Illegal Execution State exception that follows
        (its cached hflags are not rebuilt, unicorn #2333), so the sandbox does: an ERET
        from EL1 whose SPSR_EL1 names EL2/EL3 or a reserved mode is an illegal return
        (Arm ARM D1.11.4): PSTATE takes SPSR's flags and masks, keeps EL and SP, gets IL=1,
        and the instruction at ELR takes the Illegal Execution State exception (EC 0x0E)."""
        try:
            pstate, elr, spsr, _ = self._exception_regs.read()
            if ps.el(pstate) != 1:
                return  # ERET at EL0 is UNDEFINED: Unicorn raises that itself
            if spsr & ps.NRW or (spsr & ps.M_MASK) in (ps.EL0T, ps.EL1T, ps.EL1H):
                if self.vm.observers:
                    self.vm.notify("eret", self, address, spsr=spsr, elr=elr)
                self.serror.on_eret(spsr, elr)
                return
            keep = ps.NZCV | ps.DAIF | ps.PAN | ps.DIT | ps.SSBS | ps.TCO
            illegal = (spsr & keep) | ps.IL | (pstate & ps.M_MASK)
            self.take_exception(ExceptionKind.SYNC, syn_illegal_state(), elr, from_pstate=illegal)
        except Exception:
            self._host_error("ERET check")

    def _dispatch(self, trap: Trap) -> None:
        """Apply the decision for a trap raised inside the interrupt hook."""
        k = trap.kind
        if k is TrapKind.SYSREG and trap.sysreg is not None and self.sysregs.handles(trap.sysreg.reg):
            self._emulate_sysreg(trap)
            return
        if k is TrapKind.UNHANDLED:
            self._unhandled(trap)
            return
        if k is TrapKind.BRK and self.guest_debug.uses_sw_bp:
            self._stop_with(self.guest_debug.breakpoint_exit(trap), trap)  # trap: the BRK did not retire
            return
        if k is TrapKind.HLT and self.vm.semihosting is not None and self.vm.semihosting.claims(trap.imm, self.pstate()):
            exit_ = self.vm.semihosting.call(self, trap.pc)
            if exit_ is not None:
                self._stop_with(exit_)
            return
        far = None
        if k is TrapKind.ALIGNMENT_FAULT and trap.loadstore is not None:
            far = self.reg(f"x{trap.loadstore.rn}") if trap.loadstore.rn != 31 else self.uc.reg_read(A.UC_ARM64_REG_SP)
        pstate = self.pstate()
        exc = guest_exception(trap, pstate, far)
        self.take_exception(ExceptionKind.SYNC, exc.esr, exc.preferred_return, exc.far, pstate)

    def _emulate_sysreg(self, trap: Trap) -> None:
        acc = trap.sysreg
        assert acc is not None
        if acc.is_read:
            if acc.rt != 31:
                self.uc.reg_write(X_IDS[acc.rt], self.sysregs.read(acc.reg))
        else:
            self.sysregs.write(acc.reg, 0 if acc.rt == 31 else self.uc.reg_read(X_IDS[acc.rt]))
        self.uc.reg_write(A.UC_ARM64_REG_PC, trap.pc + 4)

    def _unhandled(self, trap: Trap) -> None:
        insn = self._fetch(trap.pc)
        text = disassemble_one(insn, trap.pc) if insn is not None else "(not readable)"
        self._stop_with(Exit(ExitReason.INTERNAL_ERROR, trap.pc, internal=InternalErrorExit(
            InternalErrorSuberror.UNHANDLED_TRAP, f"{trap.detail} at {trap.pc:#x}: {text}")))
