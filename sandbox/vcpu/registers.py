"""Register access for the host: x0-x30, SP_EL0/SP_EL1, PC, PSTATE and system registers by
name, with the reset state of a KVM vCPU and the PSTATE write Unicorn needs (unicorn #2333)."""

from __future__ import annotations

import ctypes
import struct

from unicorn import arm64_const as A

from ..arch import pstate as ps
from ..arch.sysreg import HCR_RW, SCR_HCE, SCR_NS, SCR_RW, SYSREGS, SysReg
from ..kvm import EINVAL, kvm_error
from ..virtual_sites import REGIME_REGISTERS

X_IDS = [A.UC_ARM64_REG_X0 + i for i in range(29)] + [A.UC_ARM64_REG_X29, A.UC_ARM64_REG_X30]

# Registers Unicorn exposes with their own constants; everything else goes through CP_REG.
DIRECT = {
    "pc": A.UC_ARM64_REG_PC, "sp": A.UC_ARM64_REG_SP, "sp_el0": A.UC_ARM64_REG_SP_EL0,
    "sp_el1": A.UC_ARM64_REG_SP_EL1, "nzcv": A.UC_ARM64_REG_NZCV,
    "elr_el1": A.UC_ARM64_REG_ELR_EL1, "esr_el1": A.UC_ARM64_REG_ESR_EL1, "far_el1": A.UC_ARM64_REG_FAR_EL1,
    "vbar_el1": A.UC_ARM64_REG_VBAR_EL1, "ttbr0_el1": A.UC_ARM64_REG_TTBR0_EL1,
    "ttbr1_el1": A.UC_ARM64_REG_TTBR1_EL1, "mair_el1": A.UC_ARM64_REG_MAIR_EL1,
    "tpidr_el0": A.UC_ARM64_REG_TPIDR_EL0, "tpidrro_el0": A.UC_ARM64_REG_TPIDRRO_EL0,
    "tpidr_el1": A.UC_ARM64_REG_TPIDR_EL1, "par_el1": A.UC_ARM64_REG_PAR_EL1,
    "cpacr_el1": A.UC_ARM64_REG_CPACR_EL1,
}
for _i, _rid in enumerate(X_IDS):
    DIRECT[f"x{_i}"] = _rid
DIRECT["lr"] = A.UC_ARM64_REG_X30
DIRECT["fp"] = A.UC_ARM64_REG_X29

_REGIME_DIRECT = ("ttbr0_el1", "ttbr1_el1")  # the regime registers (sandbox.virtual_sites) in DIRECT

SCTLR_EL1 = SYSREGS["SCTLR_EL1"]
TPIDR_EL0 = SYSREGS["TPIDR_EL0"]


RESET_PSTATE = ps.DAIF | ps.EL1H  # 0x3c5: EL1h with D, A, I, F masked (KVM vCPU reset)


class RegisterAccess:
    """Mixin of Vcpu: the host's view of the registers."""

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
        uc.reg_write_batch([(rid, 0) for rid in X_IDS])
        self.set_pstate(RESET_PSTATE)
        self.sysregs.disr_el1 = 0
        self._storm_key, self._storm_count = None, 0

    def set_pstate(self, value: int, before: int | None = None) -> None:
        """Write PSTATE as an exception entry or return would: SP banked into SP_EL0/SP_EL1
        (QEMU aarch64_save_sp/restore_sp; Unicorn keeps only the live SP) and Unicorn's
        cached hflags rebuilt, which a PSTATE write alone does not do (unicorn #2333)."""
        self._pstate_writer.write(value, before)

    def pstate(self) -> int:
        return self.uc.reg_read(A.UC_ARM64_REG_PSTATE)

    def pc(self) -> int:
        """The PC, in place where sandbox.cpustate found it (outside generated code)."""
        x = self._xregs
        return self.uc.reg_read(A.UC_ARM64_REG_PC) if x is None else x[32]

    def sctlr_el1(self) -> int:
        """SCTLR_EL1, in place where sandbox.cpustate found it (outside generated code)."""
        v = self._sctlr_view
        return self.uc.cpr_read(*SCTLR_EL1) if v is None else v[0]

    def gprs_and_raw(self, reg_id: int) -> bytes:
        """gprs_and() as 32 little-endian u64s in one bytes object: one copy of the CPU's
        own storage, for a caller that mostly compares contexts (the fuzz invariants)."""
        x = self._xregs
        if x is None:
            return struct.pack("<32Q", *self.gprs_and(reg_id))
        return ctypes.string_at(ctypes.addressof(x), 31 * 8) + self.uc.reg_read(reg_id).to_bytes(8, "little")

    def gprs_and(self, reg_id: int) -> tuple[int, ...]:
        """x0-x30 and one more 64-bit register (an SP, say) in one go: x0-x30 from the CPU's
        own storage where sandbox.cpustate found it (valid in a hook and between runs, never
        inside generated code), else one batched read."""
        x = self._xregs
        if x is None:
            return tuple(self.uc.reg_read_batch(X_IDS + [reg_id]))
        return (*x[:31], self.uc.reg_read(reg_id))

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
        if key == "pc":
            return self.pc()
        rid = DIRECT.get(key)
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
        rid = DIRECT.get(key)
        if rid is not None:
            if key in _REGIME_DIRECT:
                self.virtual_sites.note_regime_write()
            self.uc.reg_write(rid, value)
            return
        if key == "pstate":
            self.set_pstate(value)
            return
        enc = self._sysreg(name)
        if enc in REGIME_REGISTERS:
            self.virtual_sites.note_regime_write()
        if self.vm.id_registers.owns(enc):  # KVM's writable ID registers
            self.vm.id_registers.set(enc, value, self)
            return
        if self.sysregs.handles(enc):
            self.sysregs.write(enc, value)
            return
        self.uc.cpr_write(*enc, value)

    def regs(self) -> dict[str, int]:
        """x0-x30, sp_el0, sp_el1, pc and pstate in one batched read."""
        ids = X_IDS + [A.UC_ARM64_REG_SP_EL0, A.UC_ARM64_REG_SP_EL1, A.UC_ARM64_REG_PC, A.UC_ARM64_REG_PSTATE,
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
            elif key in DIRECT:
                if key in _REGIME_DIRECT:
                    self.virtual_sites.note_regime_write()
                batch.append((DIRECT[key], value & 0xFFFFFFFFFFFFFFFF))
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
