"""One vCPU = one Unicorn instance, and its run loop.

`Vcpu.run()` runs the guest until something needs the host and returns an `Exit`. Traps
are classified in `traps.py`; this module applies the decisions: exception entry (through
`arch.exception.take_exception`, the only place an entry is computed), hypercalls (the
`hyp` shim), emulated system registers, and exits. With nothing pending the only hooks are
the interrupt hook and the unmapped-memory hook, which fire only on traps, so the guest runs
at Unicorn's own speed.
"""

from __future__ import annotations

import dataclasses
import os
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from unicorn import (UC_ARCH_ARM64, UC_HOOK_CODE, UC_HOOK_INTR, UC_HOOK_MEM_FETCH_PROT, UC_HOOK_MEM_FETCH_UNMAPPED,
                     UC_HOOK_MEM_READ_PROT, UC_HOOK_MEM_READ_UNMAPPED, UC_HOOK_MEM_WRITE_PROT,
                     UC_HOOK_MEM_WRITE_UNMAPPED, UC_MEM_FETCH_PROT, UC_MEM_FETCH_UNMAPPED, UC_MEM_WRITE_PROT,
                     UC_MEM_WRITE_UNMAPPED, UC_MODE_ARM, UC_PROT_ALL, UC_PROT_NONE, Uc, UcError)
from unicorn import arm64_const as A

from . import icount
from .arch import pstate as ps
from .arch import esr as E
from .arch.decode import effective_address
from .arch.esr import EC, ec_of, syn_illegal_state
from .arch.exception import CpuFeatures, ExceptionEntry, ExceptionKind, take_exception
from .arch.sysreg import HCR_RW, SCR_HCE, SCR_NS, SCR_RW, SYSREGS, SysReg
from .disasm import disassemble_one
from .exits import ARM_SEA_FLAG_GPA_VALID, Exit, InternalErrorExit, MmioExit, NisvExit, SeaExit
from .hyp.result import CallResult
from .kvm import EBUSY, EINVAL, ENOSYS, Cap, ExitReason, InternalErrorSuberror, kvm_error
from .mmio import data_abort_iss, loaded_value, nisv_iss
from .mmio_replay import AccessReplay, locate_access
from .rawregs import CallRegisters, ContextRegisters, PstateWriter
from .events import VcpuEvents
from .guest_debug import GuestDebug
from .events import validate as validate_events
from .serror import SErrorGate, default_vserror_iss
from .sysreg_intercept import SysregIntercept
from .sysregs import EmulatedSysRegs
from .traps import Access, Trap, TrapKind, classify_fault, classify_interrupt, guest_exception
from .vmem import translate as vmem_translate

if TYPE_CHECKING:
    from .irq import InterruptGate
    from .timer import GenericTimer
    from .vm import Vm

_X_IDS = [A.UC_ARM64_REG_X0 + i for i in range(29)] + [A.UC_ARM64_REG_X29, A.UC_ARM64_REG_X30]

# Registers Unicorn exposes with their own constants; everything else goes through CP_REG.
_DIRECT = {
    "pc": A.UC_ARM64_REG_PC, "sp": A.UC_ARM64_REG_SP, "sp_el0": A.UC_ARM64_REG_SP_EL0,
    "sp_el1": A.UC_ARM64_REG_SP_EL1, "nzcv": A.UC_ARM64_REG_NZCV,
    "elr_el1": A.UC_ARM64_REG_ELR_EL1, "esr_el1": A.UC_ARM64_REG_ESR_EL1, "far_el1": A.UC_ARM64_REG_FAR_EL1,
    "vbar_el1": A.UC_ARM64_REG_VBAR_EL1, "ttbr0_el1": A.UC_ARM64_REG_TTBR0_EL1,
    "ttbr1_el1": A.UC_ARM64_REG_TTBR1_EL1, "mair_el1": A.UC_ARM64_REG_MAIR_EL1,
    "tpidr_el0": A.UC_ARM64_REG_TPIDR_EL0, "tpidrro_el0": A.UC_ARM64_REG_TPIDRRO_EL0,
    "tpidr_el1": A.UC_ARM64_REG_TPIDR_EL1, "par_el1": A.UC_ARM64_REG_PAR_EL1,
    "cpacr_el1": A.UC_ARM64_REG_CPACR_EL1,
}
for _i, _rid in enumerate(_X_IDS):
    _DIRECT[f"x{_i}"] = _rid
_DIRECT["lr"] = A.UC_ARM64_REG_X30
_DIRECT["fp"] = A.UC_ARM64_REG_X29

_SPSR_EL1 = SYSREGS["SPSR_EL1"]
_SCTLR_EL1 = SYSREGS["SCTLR_EL1"]
_TPIDR_EL0 = SYSREGS["TPIDR_EL0"]

def _is_call(esr: int | None) -> bool:
    """SVC/HVC/SMC are deliberate calls: repeating one is the guest's choice, not a storm."""
    return esr is not None and ec_of(esr) in (EC.SVC64, EC.HVC64, EC.SMC64)


RESET_PSTATE = ps.DAIF | ps.EL1H  # 0x3c5: EL1h with D, A, I, F masked (KVM vCPU reset)
DEFAULT_TIME_BUDGET = 10.0  # seconds


class _RunFailure(OSError):
    """run() fails the way KVM_RUN does (an errno), not with an exit."""

    def __init__(self, code: int, what: str):
        super().__init__(code, f"{os.strerror(code)}: {what}")


@dataclass
class _Stop:
    """Why the hooks stopped Unicorn; handled by the run loop after emu_start returns."""

    exit: Exit | None = None
    trap: Trap | None = None
    then: Callable[[], None] | None = None  # work a hook left for the run loop


class Vcpu:
    def __init__(self, vm: "Vm", index: int, mpidr: int):
        self.vm = vm
        self.index = index
        self.mpidr = mpidr
        self.features = CpuFeatures()
        self.sysregs = EmulatedSysRegs(ras=vm.ras, id_view=lambda reg: vm.id_registers.trapped_read(reg, self))
        self._running = False
        self._stop: _Stop | None = None
        self._storm_key: tuple[int, int, int] | None = None
        self._storm_count = 0
        self._eret_hooks: dict[int, int] = {}
        self._in_emulation = False
        self._counting = False  # whether the last emu_start counted instructions
        self.intercept = SysregIntercept(self)  # the one MRS/MSR hook of this vCPU (sandbox.sysreg_intercept)
        self.serror = SErrorGate(self)
        self.irq: InterruptGate | None = None  # IRQ/FIQ lines, once the Vm has a GIC
        self.timer: GenericTimer | None = None  # deterministic time (sandbox.timer), when attached
        self._mmio_pending: tuple[Exit, Any] | None = None
        self._mmio_replay = AccessReplay()
        self._abort_site: tuple[int, int] | None = None  # (pc, far) of the last abortable exit
        self.instructions = 0  # retired instructions, counted while a run counts them
        self.guest_debug = GuestDebug(self)  # KVM_SET_GUEST_DEBUG state (sandbox.guest_debug)
        self.replaying_access = False  # see _pause_after_access
        self._run_counts = False  # whether the current (or last) run counts instructions
        self.last_exit: Exit | None = None
        self.sdei_check = False  # the SDEI dispatcher may have an event to deliver here (hyp/sdei*)
        self._hypercall_pending: Exit | None = None  # a KVM_EXIT_HYPERCALL awaiting its x0-x3
        self.uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
        self.uc.ctl_set_cpu_model(A.UC_CPU_ARM64_MAX)
        self._call_regs = CallRegisters(self.uc, vm.memory)
        self._context_regs = ContextRegisters(self.uc)
        self._pstate_writer = PstateWriter(self.uc)
        # `until` is never used: the loop stops through hooks, budgets and exits only.
        self.uc.ctl_exits_enabled(True)
        self.uc.ctl_set_exits([])
        for region in vm.memory.ram:
            self._map_ram(region)
        for region in vm.memory.mmio:
            self._map_mmio(region)
        self.uc.hook_add(UC_HOOK_INTR, self._on_interrupt)
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

    # -- memory ------------------------------------------------------------------------

    def _map_ram(self, region: Any) -> None:
        self.uc.mem_map_ptr(region.base, region.size, UC_PROT_ALL, region.host_address)

    def _map_mmio(self, region: Any) -> None:
        dev = region.device
        if hasattr(dev, "for_vcpu"):  # banked registers (GIC): this vCPU's own view
            dev = dev.for_vcpu(self)

        replay = self._mmio_replay

        def rd(uc: Uc, offset: int, size: int, _ud: object) -> int:
            if replay.pending:
                again = replay.replay("r", region.base + offset, size)
                if again is not None:
                    return again
            stop = self._stop
            try:
                value = dev.read(offset, size) & ((1 << (8 * size)) - 1)
            except Exception:
                self._host_error(f"device {region.name!r} read at +{offset:#x}")
                return 0
            if self._stop is not stop and self._stop is not None and self._stop.exit is None:
                replay.start()  # the device stopped the vCPU: see sandbox/mmio_replay.py
            replay.record("r", region.base + offset, size, value)
            return value

        def wr(uc: Uc, offset: int, size: int, value: int, _ud: object) -> None:
            if replay.pending and replay.replay("w", region.base + offset, size) is not None:
                return
            stop = self._stop
            try:
                dev.write(offset, size, value)
            except Exception:
                self._host_error(f"device {region.name!r} write at +{offset:#x}")
                return
            if self._stop is not stop and self._stop is not None and self._stop.exit is None:
                replay.start()
            replay.record("w", region.base + offset, size, value)

        self.uc.mmio_map(region.base, region.size, rd, None, wr, None)

    def watch_eret(self, address: int) -> None:
        """Check the ERET at `address` before it executes (see `_on_eret`)."""
        if address not in self._eret_hooks:
            self._eret_hooks[address] = self.uc.hook_add(UC_HOOK_CODE, self._on_eret, None, address, address)
            self.uc.ctl_remove_cache(address, address + 4)  # hooks are compiled into translations

    def read_memory(self, address: int, size: int) -> bytes:
        return self.vm.memory.read(address, size)

    def write_memory(self, address: int, data: bytes) -> None:
        self.vm.memory.write(address, data)

    def translate(self, va: int, *, fetch: bool = False) -> int | None:
        """The guest-physical address virtual address `va` maps to in the current translation
        regime (for an instruction fetch when `fetch`), or None where the guest's tables do
        not map it; the address itself with the MMU off (sandbox.vmem: the engine's walk)."""
        return vmem_translate(self.uc, va, fetch=fetch)

    def _fetch(self, address: int) -> int | None:
        """The instruction word at virtual address `address` (through the guest's MMU)."""
        physical = self.translate(address, fetch=True)
        if physical is None:
            return None
        try:
            return int.from_bytes(self.uc.mem_read(physical, 4), "little")
        except UcError:
            return None

    # -- registers -----------------------------------------------------------------------

    def reset(self) -> None:
        """Architectural reset as a KVM vCPU after KVM_ARM_VCPU_INIT: EL1h, DAIF masked,
        general-purpose registers zero; SCR_EL3.{NS,HCE,RW} and HCR_EL2.RW set so that HVC
        and SMC reach the shim and ERET to EL1/EL0 is legal on Unicorn."""
        uc = self.uc
        uc.cpr_write(*SYSREGS["SCR_EL3"], SCR_NS | SCR_HCE | SCR_RW)
        uc.cpr_write(*SYSREGS["HCR_EL2"], HCR_RW)
        # MPIDR_EL1 reads VMPIDR_EL2 at EL1 when EL2 is implemented (Arm ARM D17.2.101).
        uc.cpr_write(*SYSREGS["VMPIDR_EL2"], self.mpidr | (1 << 31))
        self.vm.id_registers.apply(self)  # the ID registers the host chose (sandbox.idregs)
        uc.reg_write_batch([(rid, 0) for rid in _X_IDS])
        self.set_pstate(RESET_PSTATE)
        self.sysregs.disr_el1 = 0
        self._storm_key, self._storm_count = None, 0

    def set_pstate(self, value: int) -> None:
        """Write PSTATE as an exception entry or return would: SP banked into SP_EL0/SP_EL1
        (QEMU aarch64_save_sp/restore_sp; Unicorn keeps only the live SP) and Unicorn's
        cached hflags rebuilt, which a PSTATE write alone does not do (unicorn #2333)."""
        self._pstate_writer.write(value)

    def pstate(self) -> int:
        return self.uc.reg_read(A.UC_ARM64_REG_PSTATE)

    def _live_sp_bank(self) -> str:
        """Which SP_ELx the current SP is. Unicorn keeps the current stack pointer apart
        from its banked copy (QEMU's sp_el[] is only written back on an EL/SPSel change), so
        the banked register of the current mode must be read and written as SP."""
        pstate = self.pstate()
        return "sp_el1" if ps.el(pstate) == 1 and ps.sp_sel(pstate) else "sp_el0"

    def reg(self, name: str) -> int:
        """Read a register by name: x0-x30, sp, sp_el0, sp_el1, pc, pstate, nzcv, or a
        system register (e.g. 'VBAR_EL1', 'DISR_EL1')."""
        key = name.lower()
        if key in ("sp_el0", "sp_el1") and key == self._live_sp_bank():
            key = "sp"
        rid = _DIRECT.get(key)
        if rid is not None:
            return self.uc.reg_read(rid)
        if key == "pstate":
            return self.pstate()
        enc = self._sysreg(name)
        if self.vm.id_registers.owns(enc):
            return self.vm.id_registers.read(enc, self)
        if self.sysregs.handles(enc):
            return self.sysregs.read(enc)
        return self.uc.cpr_read(*enc)

    def set_reg(self, name: str, value: int) -> None:
        self._refuse_while_running("set a register")
        key = name.lower()
        value &= 0xFFFFFFFFFFFFFFFF
        if key in ("sp_el0", "sp_el1") and key == self._live_sp_bank():
            key = "sp"
        rid = _DIRECT.get(key)
        if rid is not None:
            self.uc.reg_write(rid, value)
            return
        if key == "pstate":
            self.set_pstate(value)
            return
        enc = self._sysreg(name)
        if self.vm.id_registers.owns(enc):  # KVM's writable ID registers
            self.vm.id_registers.set(enc, value, self)
            return
        if self.sysregs.handles(enc):
            self.sysregs.write(enc, value)
            return
        self.uc.cpr_write(*enc, value)

    def regs(self) -> dict[str, int]:
        """x0-x30, sp_el0, sp_el1, pc and pstate in one batched read."""
        ids = _X_IDS + [A.UC_ARM64_REG_SP_EL0, A.UC_ARM64_REG_SP_EL1, A.UC_ARM64_REG_PC, A.UC_ARM64_REG_PSTATE,
                        A.UC_ARM64_REG_SP]
        names = [f"x{i}" for i in range(31)] + ["sp_el0", "sp_el1", "pc", "pstate", "sp"]
        out = dict(zip(names, self.uc.reg_read_batch(ids)))
        live = out.pop("sp")
        out["sp_el1" if ps.el(out["pstate"]) == 1 and ps.sp_sel(out["pstate"]) else "sp_el0"] = live
        return out

    def set_regs(self, values: dict[str, int]) -> None:
        """Write several registers; PSTATE first, so SP_EL0/SP_EL1 land in the right bank."""
        self._refuse_while_running("set registers")
        values = dict(values)
        pstate = values.pop("pstate", values.pop("PSTATE", None))
        if pstate is not None:
            self.set_pstate(pstate)
        batch = []
        for name, value in values.items():
            key = name.lower()
            if key in ("sp_el0", "sp_el1"):
                self.set_reg(key, value)
            elif key in _DIRECT:
                batch.append((_DIRECT[key], value & 0xFFFFFFFFFFFFFFFF))
            else:
                self.set_reg(name, value)
        if batch:
            self.uc.reg_write_batch(batch)

    @staticmethod
    def _sysreg(name: str) -> SysReg:
        enc = SYSREGS.get(name.upper())
        if enc is None:
            raise kvm_error(EINVAL, f"unknown register {name!r}")
        return enc

    def _refuse_while_running(self, what: str) -> None:
        if self._running:
            raise kvm_error(EBUSY, f"cannot {what} while the vCPU is running")

    def set_guest_debug(self, control: int) -> None:
        """KVM_SET_GUEST_DEBUG: KVM_GUESTDBG_* bits (sandbox.guest_debug)."""
        self._refuse_while_running("set guest debug")
        self.guest_debug.set(control)

    # -- KVM_GET/SET_VCPU_EVENTS ------------------------------------------------------------

    def get_events(self) -> VcpuEvents:
        """KVM_GET_VCPU_EVENTS: the pending SError and, with KVM_CAP_ARM_SET_SERROR_ESR, its
        ESR (has_esr always 1 then). A pending external abort is never reported: it is taken
        when it is set (api.rst)."""
        self._refuse_while_running("get vCPU events")
        ev = VcpuEvents()
        iss = self.serror.pending_iss
        ev.serror_pending = int(iss is not None)
        if self.vm.check_extension(Cap.ARM_INJECT_SERROR_ESR):
            ev.serror_has_esr = 1
            ev.serror_esr = iss or 0
        return ev

    def set_events(self, events: VcpuEvents | bytes) -> None:
        """KVM_SET_VCPU_EVENTS. Raises OSError(EINVAL) for what KVM rejects, OSError(EBUSY)
        while the vCPU runs. An SError cannot be cancelled: serror_pending=0 leaves a pending
        one pending. A pended SError is taken at once if PSTATE.A is already clear."""
        self._refuse_while_running("set vCPU events")
        with_iabt = bool(self.vm.check_extension(Cap.ARM_INJECT_EXT_IABT))
        ev = VcpuEvents.unpack(bytes(events), with_iabt) if isinstance(events, (bytes, bytearray)) else events
        req = validate_events(ev, has_ras_esr=bool(self.vm.check_extension(Cap.ARM_INJECT_SERROR_ESR)),
                              with_iabt=with_iabt, has_dabt=bool(self.vm.check_extension(Cap.ARM_INJECT_EXT_DABT)),
                              has_iabt=with_iabt)
        serror_iss = req.serror_iss
        if serror_iss is not None and not ev.serror_has_esr:
            serror_iss = default_vserror_iss(self.vm)  # KVM's own syndrome (quirk vserror-without-vsesr)
        if self.vm.observers and (req.dabt or req.iabt or serror_iss is not None):
            self.vm.notify("inject", self, self.uc.reg_read(A.UC_ARM64_REG_PC), events=ev,
                           serror_iss=serror_iss, dabt=req.dabt, iabt=req.iabt, abt_iss=req.abt_iss)
        if (req.dabt or req.iabt) and self._abort_site is None:
            # api.rst calls it a programming error; the sandbox refuses rather than inject
            # at a stale address.
            raise kvm_error(EINVAL, "an external abort can only follow a KVM_EXIT_MMIO, "
                                    "KVM_EXIT_ARM_NISV or KVM_EXIT_ARM_SEA exit")
        if req.dabt or req.iabt:
            assert self._abort_site is not None
            pc, far = self._abort_site
            self._abort_site = None
            # The aborted access does not retire (Linux e735a5da6442): no MMIO completion,
            # ELR = the faulting instruction. ESR = EC by EL | IL | FSC 0x10, ORed with the
            # user's ISS bits (seed 003; inject_abt64 starts from the user ISS).
            if self._mmio_pending is not None and self.vm.has_quirk("retire-aborted-mmio"):
                # The bug e735a5da6442 fixed: the MMIO still completes (Rt written, PC + 4)
                # and the abort is taken at the next instruction.
                self._complete_mmio()
                pc = self.uc.reg_read(A.UC_ARM64_REG_PC)
            self._mmio_pending = None
            same_el = ps.el(self.pstate()) != 0
            esr = (E.syn_data_abort(same_el, E.FSC.SEA) if req.dabt
                   else E.syn_instruction_abort(same_el, E.FSC.SEA)) | req.abt_iss
            self.take_exception(ExceptionKind.SYNC, esr, pc, far=far)
        if serror_iss is not None:
            self.serror.pend(serror_iss)
            self.serror.deliver_if_unmasked()

    # -- exception entry ------------------------------------------------------------------

    def take_exception(self, kind: ExceptionKind, esr: int | None, preferred_return: int,
                       far: int | None = None, from_pstate: int | None = None,
                       target: int | None = None) -> ExceptionEntry:
        """Enter the guest's EL1 vector for an exception (AArch64.TakeException) and write
        ESR/FAR/ELR/SPSR/PSTATE/PC. Every exception the guest takes comes through here.
        `target` replaces the vector address for an entry "as if a synchronous exception
        were taken" at a given address (SDEI COMPLETE_AND_RESUME, DEN0054C 5.2.2); such a
        deliberate resume is never counted as an exception storm."""
        uc = self.uc
        if from_pstate is None:
            from_pstate = self.pstate()
        entry = take_exception(
            kind=kind, from_pstate=from_pstate, preferred_return=preferred_return,
            vbar=uc.reg_read(A.UC_ARM64_REG_VBAR_EL1), sctlr_el1=uc.cpr_read(*_SCTLR_EL1),
            esr=esr, far=far, features=self.features)
        if target is not None:
            entry = dataclasses.replace(entry, pc=target)
        elif self._storm(entry):
            return entry
        if entry.esr is not None:
            uc.reg_write(A.UC_ARM64_REG_ESR_EL1, entry.esr)
        if entry.far is not None:
            uc.reg_write(A.UC_ARM64_REG_FAR_EL1, entry.far)
        uc.reg_write(A.UC_ARM64_REG_ELR_EL1, entry.elr)
        uc.cpr_write(*_SPSR_EL1, entry.spsr)
        self.set_pstate(entry.pstate)  # hflags rebuild (unicorn #2333) and the SP_EL1 bank
        if uc.reg_read(A.UC_ARM64_REG_PC) != entry.pc:
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

    # -- hooks ------------------------------------------------------------------------------

    def _stop_with(self, exit_: Exit | None = None, trap: Trap | None = None) -> None:
        self._stop = _Stop(exit_, trap)
        self.uc.emu_stop()

    def _pause_then(self, action: Callable[[], None]) -> None:
        """Stop Unicorn and run `action` from the run loop (for what a hook cannot do)."""
        self._stop = _Stop(then=action)
        self.uc.emu_stop()

    def _pause_after_access(self, action: Callable[[], None], then_steps: int = 0) -> None:
        """From a memory or MMIO callback: run `action` from the run loop once the access
        being made has completed. Stopping Unicorn inside a memory callback abandons the
        instruction and executes it again on resume (measured on 2.1.4), so the loop executes
        it once more as a single step with `replaying_access` set (callbacks then see the
        same access a second time and must not repeat their side effects), then `then_steps`
        more instructions, then `action`."""
        def step_then_act() -> None:
            for count, replaying in ((1, True), (then_steps, False)):
                if not count or self._stop is not None:
                    continue
                self.replaying_access = replaying
                self._in_emulation = True
                try:
                    self._emu_start(self.uc.reg_read(A.UC_ARM64_REG_PC), count=count)
                except UcError:
                    pass
                finally:
                    self._in_emulation = False
                    self.replaying_access = False
                if not replaying and self._run_counts:  # the replay was counted when it started
                    self.instructions += min(count, icount.started_instructions(self.uc) or 0)
            action()
        self._pause_then(step_then_act)

    def instruction_count(self) -> int | None:
        """Instructions retired so far, also from inside a run (for observers); None when
        the current or last run does not count instructions."""
        if not self._run_counts:
            return None
        if self._in_emulation and self._counting:
            started = icount.started_instructions(self.uc)
            return None if started is None else self.instructions + started
        return self.instructions

    def _request_pause(self) -> None:
        """Stop Unicorn after the current hook and resume at once from the run loop."""
        if self._stop is None:
            self._stop = _Stop()
        self.uc.emu_stop()

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
            pstate = self.pstate()
            if ps.el(pstate) != 1:
                return  # ERET at EL0 is UNDEFINED: Unicorn raises that itself
            spsr = uc.cpr_read(*_SPSR_EL1)
            elr = uc.reg_read(A.UC_ARM64_REG_ELR_EL1)
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

    def _on_unmapped(self, uc: Uc, access: int, address: int, size: int, value: int, _ud: object) -> bool:
        try:
            kind = (Access.FETCH if access == UC_MEM_FETCH_UNMAPPED else
                    Access.WRITE if access == UC_MEM_WRITE_UNMAPPED else Access.READ)
            pc = uc.reg_read(A.UC_ARM64_REG_PC)
            trap = classify_fault(kind, address, size, pc)
            self._stop = _Stop(None, trap)
        except Exception:
            self._host_error("memory fault")
        return False  # Unicorn stops with UC_ERR_*_UNMAPPED; the run loop takes it from there

    def _on_protected(self, uc: Uc, access: int, address: int, size: int, value: int, _ud: object) -> bool:
        try:
            kind = (Access.FETCH if access == UC_MEM_FETCH_PROT else
                    Access.WRITE if access == UC_MEM_WRITE_PROT else Access.READ)
            self._stop = _Stop(None, classify_fault(kind, address, size, uc.reg_read(A.UC_ARM64_REG_PC), True))
        except Exception:
            self._host_error("memory protection fault")
        return False

    # -- poisoned memory -------------------------------------------------------------------

    def apply_poison(self, pages_before: set[int], pages_after: set[int]) -> None:
        """Protect the pages that hold poison (every access then traps) and release the rest."""
        for page in pages_before - pages_after:
            self.uc.mem_protect(page, 0x1000, UC_PROT_ALL)
        for page in pages_after - pages_before:
            self.uc.mem_protect(page, 0x1000, UC_PROT_NONE)
        self._flush_tlb()  # a cached translation would bypass the new protection

    def _poisoned_access(self, trap: Trap) -> Exit | None:
        """A trapped access to a protected page: step it if it misses the poisoned bytes;
        otherwise the guest consumed poison: KVM_EXIT_ARM_SEA with KVM_CAP_ARM_SEA_TO_USER,
        else an injected synchronous external abort (FSC 0x10, FAR = the VA)."""
        address = trap.address or 0
        if not self.vm.poisoned.overlaps(address, trap.size):
            self._step_through_protection(address & ~0xFFF)
            return None
        pstate = self.pstate()
        va = self._fault_va(trap)
        fetch = trap.access is Access.FETCH
        write = trap.access is Access.WRITE
        self._abort_site = (trap.pc, va)
        if Cap.ARM_SEA_TO_USER in self.vm.enabled_caps:
            # esr as KVM reports it: the EL2 view (lower-EL EC), EC | IL | FnV | EA | CM |
            # WnR | FSC, never ISV/SAS/SSE/SRT/SF/AR (Linux mmu.c kvm_handle_guest_sea).
            esr = (E.syn_instruction_abort(False, E.FSC.SEA) if fetch
                   else E.syn_data_abort(False, E.FSC.SEA, wnr=write))
            return Exit(ExitReason.ARM_SEA, trap.pc, arm_sea=SeaExit(ARM_SEA_FLAG_GPA_VALID, esr, va, address & ~0xFFF))
        same_el = ps.el(pstate) != 0
        esr = (E.syn_instruction_abort(same_el, E.FSC.SEA) if fetch
               else E.syn_data_abort(same_el, E.FSC.SEA, wnr=write))
        self._stop = None
        self.take_exception(ExceptionKind.SYNC, esr, trap.pc, far=va, from_pstate=pstate)
        stopped = self._stop
        return stopped.exit if stopped is not None else None

    def _flush_tlb(self) -> None:
        """UC_CTL_TLB_FLUSH (the 2.1.4 Python binding has no wrapper for it)."""
        from unicorn.unicorn_const import UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH
        self.uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)

    def _emu_start(self, pc: int, *, timeout: int = 0, count: int = 0) -> None:
        """uc.emu_start with a correct instruction count. Unicorn counts with a code hook
        it adds on the first counted run, and a code hook only reaches translations made
        after it exists: blocks translated by an uncounted run would run uncounted (a budget
        of 10 overshot by millions). So the first counted run after an uncounted one drops
        the translation cache; Unicorn itself flushes when counting stops."""
        if count and not self._counting:
            self.uc.ctl_flush_tb()
        self._counting = count > 0
        self.uc.emu_start(pc, 0, timeout=timeout, count=count)

    def _step_through_protection(self, page: int) -> None:
        """Run one instruction with its page briefly unprotected (a clean byte of a page
        that also holds poison)."""
        self.uc.mem_protect(page, 0x1000, UC_PROT_ALL)
        try:
            self._in_emulation = True
            self._emu_start(self.uc.reg_read(A.UC_ARM64_REG_PC), count=1)
        except UcError:
            pass
        finally:
            self._in_emulation = False
            if page in self.vm.poisoned.pages():
                self.uc.mem_protect(page, 0x1000, UC_PROT_NONE)
                self._flush_tlb()  # drop the translation the step just cached

    def _fault_va(self, trap: Trap) -> int:
        """The faulting virtual address for FAR: Unicorn's memory hooks report the physical
        address; with the MMU on the VA is recomputed from the instruction's operands."""
        address = trap.address or 0
        if trap.access is Access.FETCH:
            return trap.pc
        if not self.uc.cpr_read(*_SCTLR_EL1) & 1:  # SCTLR_EL1.M = 0: VA == PA
            return address
        insn = self._fetch(trap.pc)
        if insn is None:
            return address
        va = effective_address(insn, trap.pc, lambda n: self.uc.reg_read(_X_IDS[n]),
                               self.uc.reg_read(A.UC_ARM64_REG_SP))
        return address if va is None else va

    # -- trap dispatch ------------------------------------------------------------------------

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
                self.uc.reg_write(_X_IDS[acc.rt], self.sysregs.read(acc.reg))
        else:
            self.sysregs.write(acc.reg, 0 if acc.rt == 31 else self.uc.reg_read(_X_IDS[acc.rt]))
        self.uc.reg_write(A.UC_ARM64_REG_PC, trap.pc + 4)

    def _unhandled(self, trap: Trap) -> None:
        insn = self._fetch(trap.pc)
        text = disassemble_one(insn, trap.pc) if insn is not None else "(not readable)"
        self._stop_with(Exit(ExitReason.INTERNAL_ERROR, trap.pc, internal=InternalErrorExit(
            InternalErrorSuberror.UNHANDLED_TRAP, f"{trap.detail} at {trap.pc:#x}: {text}")))

    def _hypercall(self, conduit: int) -> None:
        """An HVC/SMC: the shim decides what it does (hyp.dispatch), the vCPU applies it.
        The common answer is a bare x0; anything else is a CallResult."""
        calls = self._call_regs
        x = calls.x  # x0-x30 and (slot 32) PC of this CPU, read in place (sandbox/cpustate.py)
        if x is None:
            regs, pc = calls.read()
        else:
            regs, pc = x, x[32]
        result = self.vm.hypervisor.call(self, conduit, regs, pc, calls.immediate(pc))
        if result.__class__ is not int:
            self._apply_call(result)  # type: ignore[arg-type]
        elif x is not None:
            x[0] = result
        else:
            calls.write_x0(result)  # type: ignore[arg-type]
        if self.sdei_check:
            self._deliver_sdei()

    def _apply_call(self, result: CallResult) -> None:
        """Apply what the shim decided: return registers, a context switch (SDEI dispatch
        or COMPLETE), an exception-like entry (COMPLETE_AND_RESUME), an exit."""
        if result.regs:
            self.uc.reg_write_batch(list(zip(_X_IDS, result.regs)))
        if result.context is not None:
            self.switch_context(result.context)
        if result.resume is not None:
            r = result.resume
            self.take_exception(r.kind, None, r.elr, from_pstate=r.from_pstate, target=r.target)
        if result.exit is not None:
            result.exit.pc = self.uc.reg_read(A.UC_ARM64_REG_PC)  # past the call (or where it resumed)
            if result.exit.reason is ExitReason.HYPERCALL:
                self._hypercall_pending = result.exit
            self._stop_with(result.exit)
        if result.reschedule:
            self.vm.scheduler.power_changed(self)

    def switch_context(self, context: Any) -> None:
        """Load x0-x17, PC and PSTATE (a hyp.result.GuestContext): the documented sibling
        of take_exception for SDEI. A handler entry's PSTATE is computed by
        arch.exception.entry_pstate (hyp/sdei_delivery.py), the rule every exception entry
        follows; COMPLETE restores a saved context bit for bit. ELR/SPSR are not touched."""
        self._context_regs.write_gprs_and_pc(context.regs, context.pc)
        self.set_pstate(context.pstate)

    def _deliver_sdei(self) -> None:
        """Dispatch the SDEI event the shim says is due on this vCPU, if any."""
        sdei = self.vm.hypervisor.sdei
        choice = sdei.next_dispatch(self)
        if choice is not None:
            regs, pc, pstate, sctlr = self._context_regs.read()
            self._apply_call(sdei.dispatch(self, choice, regs, pc, pstate, sctlr))

    def _complete_hypercall(self) -> None:
        """KVM_EXIT_HYPERCALL: the host's values in exit.hypercall.ret become x0-x3."""
        pending, self._hypercall_pending = self._hypercall_pending, None
        if pending is not None and pending.hypercall is not None:
            self.uc.reg_write_batch(list(zip(_X_IDS, [int(v) for v in pending.hypercall.ret[:4]])))

    def _fault(self, trap: Trap) -> Exit | None:
        """An access to a guest-physical address with no RAM and no device."""
        if self.vm.unbacked_policy == "exit" and trap.access is not Access.FETCH:
            return self._mmio_exit(trap)
        pstate = self.pstate()
        exc = guest_exception(trap, pstate, far=self._fault_va(trap))
        self._stop = None
        self.take_exception(ExceptionKind.SYNC, exc.esr, exc.preferred_return, exc.far, pstate)
        stopped = self._stop
        return stopped.exit if stopped is not None else None

    def _mmio_exit(self, trap: Trap) -> Exit:
        """KVM_EXIT_MMIO for an access with a valid instruction syndrome; otherwise
        KVM_EXIT_ARM_NISV with KVM_CAP_ARM_NISV_TO_USER, or KVM_RUN's ENOSYS without it
        (Linux arch/arm64/kvm/mmio.c io_mem_abort)."""
        ls = self._loadstore_at(trap.pc)
        address = trap.address or 0
        self._abort_site = (trap.pc, self._fault_va(trap))
        if ls is None or not ls.syndrome_valid:
            iss = E.iss_of(E.syn_data_abort(True, E.FSC.SEA, wnr=trap.access is Access.WRITE))
            if Cap.ARM_NISV_TO_USER not in self.vm.enabled_caps:
                raise _RunFailure(ENOSYS, f"data abort at {trap.pc:#x} on {address:#x} has no valid "
                                          "instruction syndrome (enable KVM_CAP_ARM_NISV_TO_USER)")
            return Exit(ExitReason.ARM_NISV, trap.pc, arm_nisv=NisvExit(nisv_iss(iss), address))
        data = bytearray(8)
        if not ls.is_load and ls.rt != 31:
            data[:] = self.uc.reg_read(_X_IDS[ls.rt]).to_bytes(8, "little")
        exit_ = Exit(ExitReason.MMIO, trap.pc, mmio=MmioExit(address, data, ls.size, not ls.is_load,
                                                             esr_iss=data_abort_iss(ls)))
        self._mmio_pending = (exit_, ls)
        return exit_

    def _complete_mmio(self) -> None:
        """Retire the instruction of the last KVM_EXIT_MMIO: a read loads `mmio.data` into Rt
        (sign/zero-extended per SSE/SF, nothing for XZR); both advance PC."""
        pending, self._mmio_pending = self._mmio_pending, None
        if pending is None:
            return
        exit_, ls = pending
        if ls.is_load and ls.rt != 31:
            self.uc.reg_write(_X_IDS[ls.rt], loaded_value(bytes(exit_.mmio.data), ls))
        self.uc.reg_write(A.UC_ARM64_REG_PC, exit_.pc + 4)

    def _loadstore_at(self, pc: int) -> Any:
        from .arch.decode import decode_load_store
        insn = self._fetch(pc)
        return decode_load_store(insn) if insn is not None else None

    # -- the run loop -------------------------------------------------------------------------

    def run(self, *, max_instructions: int | None = None, timeout: float | None = DEFAULT_TIME_BUDGET) -> Exit:
        """Run until the guest needs the host. `max_instructions` (exact, costs Unicorn's
        per-instruction counter) and `timeout` (seconds of wall time) bound the run."""
        exit_ = self._run_guarded(max_instructions, timeout)
        self.last_exit = exit_
        if self.vm.observers:
            self.vm.notify("exit", self, exit_.pc, exit=exit_)
        return exit_

    def _run_guarded(self, max_instructions: int | None, timeout: float | None) -> Exit:
        """One run without the observer report (Vm.run reports once for all vCPUs)."""
        if self._running:
            raise kvm_error(EBUSY, "the vCPU is already running")
        if max_instructions is not None and max_instructions < 0:
            raise kvm_error(EINVAL, "max_instructions must be >= 0")
        if not self.vm.hypervisor.power.start(self):
            # PSCI: powered off (KVM_MP_STATE_STOPPED) until another vCPU's CPU_ON.
            return Exit(ExitReason.POWERED_OFF, self.uc.reg_read(A.UC_ARM64_REG_PC), vcpu=self.index)
        self._running = True
        self._run_counts = max_instructions is not None
        try:
            self._complete_mmio()
            self._complete_hypercall()
            self._abort_site = None
            self._storm_key, self._storm_count = None, 0  # a storm is counted within one run
            stepping = self.guest_debug.stepping
            exit_ = self._run(self.guest_debug.step_budget(max_instructions) if stepping else max_instructions, timeout)
            if stepping:
                exit_ = self.guest_debug.step_exit(exit_)
        except _RunFailure:
            raise
        except Exception:
            exit_ = Exit(ExitReason.INTERNAL_ERROR, self.uc.reg_read(A.UC_ARM64_REG_PC),
                         internal=InternalErrorExit(InternalErrorSuberror.HOST_ERROR, traceback.format_exc(limit=8)))
        finally:
            self._running = False
        exit_.vcpu = self.index
        return exit_

    def _run(self, max_instructions: int | None, timeout: float | None) -> Exit:
        uc = self.uc
        deadline = None if timeout is None else time.monotonic() + timeout
        remaining = max_instructions
        retired = 0
        while True:
            if remaining == 0:
                return Exit(ExitReason.INSTRUCTION_BUDGET, uc.reg_read(A.UC_ARM64_REG_PC), instructions=retired)
            micros = 0
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return Exit(ExitReason.TIME_BUDGET, uc.reg_read(A.UC_ARM64_REG_PC),
                                instructions=retired if remaining is not None else None)
                micros = max(1, int(left * 1e6))
            self._stop = None
            if self.timer is not None:
                self.timer.update()  # a compare value reached: the timer's PPI goes high
            if self.sdei_check:
                self._deliver_sdei()  # SDEI events are not masked by PSTATE (DEN0054C: from EL2/EL3)
            if self.serror.pending and self.serror.deliver_if_unmasked() and self._stop is not None:
                return self._stop.exit  # type: ignore[return-value]
            self.serror.settle()
            if self.irq is not None:
                self.irq.settle()  # the vector hooks follow the IRQ/FIQ lines (sandbox.irq)
            count = remaining or 0
            if self.timer is not None:  # always counted: stop where the next timer fires
                count = self.timer.instructions_until_event(count)
            elif self.irq is not None and not count:
                count = icount.UNBOUNDED  # counted: interrupts stop it at exact boundaries
            pc = uc.reg_read(A.UC_ARM64_REG_PC)
            error: UcError | None = None
            self._in_emulation = True
            try:
                self._emu_start(pc, timeout=micros, count=count)
            except UcError as e:
                error = e
            finally:
                self._in_emulation = False
            stop = self._stop
            limit_reached = False
            if count:
                started = icount.started_instructions(uc)
                if started is not None:
                    limit = icount.run_limit(uc) or count  # a hook may have lowered it
                    done = min(started, limit)
                    # An instruction that faulted (abort, UNDEFINED...) was started but did
                    # not retire; SVC/HVC/SMC complete before their trap.
                    # An instruction breakpoint (KVM_EXIT_DEBUG) stops before its instruction.
                    if (stop is not None and (stop.trap is not None or (
                            stop.exit is not None and stop.exit.reason is ExitReason.DEBUG))
                            and done and started <= limit):
                        done -= 1
                    limit_reached = started > limit
                    retired += done
                    if remaining is not None:
                        remaining -= done
                    self.instructions += done
            if stop is not None and stop.exit is None and stop.trap is None:
                if self._mmio_replay.recording:  # a device stopped us mid-instruction: finish it
                    # the count above took that instruction as done; it retires in the step
                    done = self._complete_stopped_access() - (1 if remaining is not None else 0)
                    retired += done
                    self.instructions += done
                    if remaining is not None:
                        remaining -= done
                if stop.then is not None:  # a hook left work for the loop (_pause_then)
                    self._stop = None
                    stop.then()
                    if self._stop is not None and self._stop.exit is not None:
                        return self._stop.exit
                continue  # a pause requested by a hook (see _request_pause)
            if stop is not None and stop.exit is not None:
                stop.exit.instructions = retired if max_instructions is not None else None
                return stop.exit
            if stop is not None and stop.trap is not None:
                trap = stop.trap
                if trap.access is not Access.FETCH:
                    # The PC a memory hook sees can be the start of the translation block;
                    # after the fault Unicorn has restored the exact PC of the access.
                    trap = dataclasses.replace(trap, pc=uc.reg_read(A.UC_ARM64_REG_PC))
                exit_ = self._poisoned_access(trap) if trap.protected else self._fault(trap)
                if exit_ is not None:
                    exit_.instructions = retired if max_instructions is not None else None
                    return exit_
                continue
            if error is not None:
                return Exit(ExitReason.INTERNAL_ERROR, uc.reg_read(A.UC_ARM64_REG_PC), internal=InternalErrorExit(
                    InternalErrorSuberror.EMULATION, f"Unicorn: {error}"))
            if remaining == 0 or limit_reached:
                continue  # a budget or a timer event: the top of the loop handles it
            if deadline is not None and time.monotonic() >= deadline:
                continue
            # Unicorn returned on its own: WFI halts the CPU (QEMU EXCP_HLT).
            pc = uc.reg_read(A.UC_ARM64_REG_PC)
            if self._fetch(pc - 4) == 0xD503207F:
                if self._wakeup_pending():
                    continue
                return Exit(ExitReason.IDLE, pc, instructions=retired if max_instructions is not None else None)
            # WFE / YIELD and other voluntary stops: carry on.

    def _complete_stopped_access(self) -> int:
        """Run the instruction whose device access stopped the vCPU once more, its device
        accesses replayed (sandbox/mmio_replay.py); 1 if it retired."""
        replay = self._mmio_replay
        replay.recording = False
        pc = self.uc.reg_read(A.UC_ARM64_REG_PC)
        first = replay.first
        if first is not None:
            at = locate_access(pc, first, self._fetch, lambda n: self.uc.reg_read(_X_IDS[n]),
                               self.uc.reg_read(A.UC_ARM64_REG_SP), lambda va: self.translate(va))
            if at is not None and at != pc:
                pc = at  # the block's earlier instructions have run (sandbox/mmio_replay.py)
                self.uc.reg_write(A.UC_ARM64_REG_PC, pc)
        self._in_emulation = True
        try:
            self._emu_start(pc, count=1)
        except UcError:
            pass
        finally:
            self._in_emulation = False
            replay.clear()
        return int(self.uc.reg_read(A.UC_ARM64_REG_PC) != pc)

    def _wakeup_pending(self) -> bool:
        """Whether a WFI would wake now: a pending SError wakes it even while PSTATE.A masks
        it (WFI wake-up events ignore PSTATE masking, Arm ARM D1.16.2), and so does an
        asserted IRQ/FIQ or an SDEI event due on this vCPU (an interrupt routed to EL2/EL3 is
        a wake-up event too); with a timer armed, time passes until it fires."""
        if self.serror.pending or (self.irq is not None and self.irq.pending):
            return True
        if self.sdei_check and self.vm.hypervisor.sdei.next_dispatch(self) is not None:
            return True
        while self.timer is not None and self.timer.skip_idle():
            if self.irq is not None and self.irq.pending:
                return True
        return False
