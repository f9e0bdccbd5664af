"""Guest memory as one vCPU touches it: RAM and device mapping, translation of virtual
addresses, accesses to nothing (KVM_EXIT_MMIO / NISV or an external abort), poisoned pages
(KVM_EXIT_ARM_SEA or an injected SEA), device accesses and RAM watches, completing the
access instruction a device or watch stopped."""

from __future__ import annotations

from typing import Any, Callable

from unicorn import (
    UC_HOOK_MEM_WRITE,
    UC_MEM_FETCH_PROT,
    UC_MEM_FETCH_UNMAPPED,
    UC_MEM_WRITE_PROT,
    UC_MEM_WRITE_UNMAPPED,
    UC_PROT_ALL,
    UC_PROT_NONE,
    Uc,
    UcError,
)
from unicorn import arm64_const as A

from ..access_completion import MAX_COMPLETING_STEPS, guarded_access, locate_access
from ..arch import esr as E
from ..arch import pstate as ps
from ..arch.decode import decode_load_store, effective_address
from ..arch.exception import ExceptionKind
from ..exits import ARM_SEA_FLAG_GPA_VALID, Exit, MmioExit, NisvExit, SeaExit
from ..kvm import ENOSYS, Cap, ExitReason
from ..mmio import data_abort_iss, loaded_value, nisv_iss
from ..traps import Access, Trap, classify_fault, guest_exception
from ..vmem import translate as vmem_translate
from .registers import SCTLR_EL1, X_IDS
from .stops import RunFailure, Stop


class GuestMemoryAccess:
    """Mixin of Vcpu: memory faults and MMIO."""

    def _map_ram(self, region: Any) -> None:
        self.uc.mem_map_ptr(region.base, region.size, UC_PROT_ALL, region.host_address)

    def _map_mmio(self, region: Any) -> None:
        dev = region.device
        if hasattr(dev, "for_vcpu"):  # banked registers (GIC): this vCPU's own view
            dev = dev.for_vcpu(self)
        base = region.base

        def read(offset: int, size: int) -> int:
            try:
                return dev.read(offset, size) & ((1 << (8 * size)) - 1)
            except Exception:
                self._host_error(f"device {region.name!r} read at +{offset:#x}")
                return 0

        def write(offset: int, size: int, value: int) -> int:
            try:
                dev.write(offset, size, value)
            except Exception:
                self._host_error(f"device {region.name!r} write at +{offset:#x}")
            return value

        # Through guarded_access: a device that stops the vCPU sees its access once
        # (sandbox/access_completion.py).
        def rd(uc: Uc, offset: int, size: int, _ud: object) -> int:
            return guarded_access(self, "r", base + offset, size, read, offset, size)

        def wr(uc: Uc, offset: int, size: int, value: int, _ud: object) -> None:
            guarded_access(self, "w", base + offset, size, write, offset, size, value)

        self.uc.mmio_map(region.base, region.size, rd, None, wr, None)

    def watch_writes(self, begin: int, end: int, callback: Callable[[int, int, int], None]) -> int:
        """Call `callback(address, size, value)` for every guest write to guest RAM in
        [begin, end] (physical, inclusive), e.g. a register the host emulates in RAM. The
        callback may stop the vCPU with `pause_then` like a device (it then sees the write
        once). Returns a handle for `unwatch`; add and remove watches between runs."""
        def call(address: int, size: int, value: int) -> int:
            try:
                callback(address, size, value)
            except Exception:
                self._host_error(f"write watch at {address:#x}")
            return value

        def hook(uc: Uc, _access: int, address: int, size: int, value: int, _ud: object) -> None:
            guarded_access(self, "w", address, size, call, address, size, value)

        return self.uc.hook_add(UC_HOOK_MEM_WRITE, hook, None, begin, end)

    def unwatch(self, handle: int) -> None:
        self.uc.hook_del(handle)

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

    def _on_unmapped(self, uc: Uc, access: int, address: int, size: int, value: int, _ud: object) -> bool:
        try:
            kind = (Access.FETCH if access == UC_MEM_FETCH_UNMAPPED else
                    Access.WRITE if access == UC_MEM_WRITE_UNMAPPED else Access.READ)
            pc = uc.reg_read(A.UC_ARM64_REG_PC)
            trap = classify_fault(kind, address, size, pc)
            self._stop = Stop.replacing(self._stop, trap=trap)
        except Exception:
            self._host_error("memory fault")
        return False  # Unicorn stops with UC_ERR_*_UNMAPPED; the run loop takes it from there

    def _on_protected(self, uc: Uc, access: int, address: int, size: int, value: int, _ud: object) -> bool:
        try:
            kind = (Access.FETCH if access == UC_MEM_FETCH_PROT else
                    Access.WRITE if access == UC_MEM_WRITE_PROT else Access.READ)
            trap = classify_fault(kind, address, size, uc.reg_read(A.UC_ARM64_REG_PC), True)
            self._stop = Stop.replacing(self._stop, trap=trap)
        except Exception:
            self._host_error("memory protection fault")
        return False

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
        if not self.uc.cpr_read(*SCTLR_EL1) & 1:  # SCTLR_EL1.M = 0: VA == PA
            return address
        insn = self._fetch(trap.pc)
        if insn is None:
            return address
        va = effective_address(insn, trap.pc, lambda n: self.uc.reg_read(X_IDS[n]),
                               self.uc.reg_read(A.UC_ARM64_REG_SP))
        return address if va is None else va

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
                raise RunFailure(ENOSYS, f"data abort at {trap.pc:#x} on {address:#x} has no valid "
                                          "instruction syndrome (enable KVM_CAP_ARM_NISV_TO_USER)")
            return Exit(ExitReason.ARM_NISV, trap.pc, arm_nisv=NisvExit(nisv_iss(iss), address))
        data = bytearray(8)
        if not ls.is_load and ls.rt != 31:
            data[:] = self.uc.reg_read(X_IDS[ls.rt]).to_bytes(8, "little")
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
            self.uc.reg_write(X_IDS[ls.rt], loaded_value(bytes(exit_.mmio.data), ls))
        self.uc.reg_write(A.UC_ARM64_REG_PC, exit_.pc + 4)

    def _loadstore_at(self, pc: int) -> Any:
        insn = self._fetch(pc)
        return decode_load_store(insn) if insn is not None else None

    def _complete_stopped_access(self) -> int:
        """Run the instruction whose access stopped the vCPU once more, its recorded accesses
        replayed (sandbox/access_completion.py); 1 if it retired. An access of the step that
        stops the vCPU again makes the step run again, everything before it replayed."""
        access = self._access
        pc = self.uc.reg_read(A.UC_ARM64_REG_PC)
        if access.log:
            at = locate_access(pc, access.log[0], self._fetch, lambda n: self.uc.reg_read(X_IDS[n]),
                               self.uc.reg_read(A.UC_ARM64_REG_SP), lambda va: self.translate(va))
            if at is not None and at != pc:
                pc = at  # the block's earlier instructions have run (sandbox/access_completion.py)
                self.uc.reg_write(A.UC_ARM64_REG_PC, pc)
        self.replaying_access = True
        self._in_emulation = True
        try:
            for _ in range(MAX_COMPLETING_STEPS):
                pauses = self._pause_requests
                access.rewind()
                try:
                    self._emu_start(pc, count=1)
                except UcError:
                    pass
                stop = self._stop
                if (self.uc.reg_read(A.UC_ARM64_REG_PC) != pc or pauses == self._pause_requests
                        or stop is None or stop.exit is not None or stop.trap is not None):
                    break
        finally:
            self._in_emulation = False
            self.replaying_access = False
            access.clear()
        return int(self.uc.reg_read(A.UC_ARM64_REG_PC) != pc)
