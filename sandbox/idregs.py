"""The ID registers a guest sees, chosen by the host like KVM's writable ID registers.

What Unicorn 2.1.4's "max" CPU reports (measured): MIDR_EL1 0x000f0510, MPIDR_EL1 0x80000000,
ID_AA64PFR0_EL1 0x100112222 (EL0-EL3 AArch64, FP, AdvSIMD, SVE; GIC = 0, RAS = 0),
ID_AA64PFR1_EL1 0x1 (BTI), ID_AA64ISAR0_EL1 0x1021111110212120 (RNDR = 1), ID_AA64ISAR1_EL1
0x11101211012, ID_AA64MMFR0_EL1 0x1124, ID_AA64MMFR1_EL1 0x211120, ID_AA64DFR0_EL1 0x10305506.
The host cannot change them inside Unicorn (they are constants; host writes are ignored).

How the override is applied: the AArch64 feature ID space (op0=3, op1=0, CRn=0, CRm=1..7,
"ID group 3") traps to EL2 with HCR_EL2.TID3, which Unicorn honours; each trapped MRS is
answered from this view (the value the host chose, else Unicorn's own). MIDR_EL1 needs no
trap: an EL1 read returns VPIDR_EL2, and MPIDR_EL1 returns VMPIDR_EL2 (Arm ARM D17.2.100,
D17.2.101). TID3 is set only while some group-3 register differs from Unicorn's, so a
vCPU shown exactly Unicorn's CPU pays nothing; otherwise each ID register read costs one
trap (bench/bench_timer.py measures it). Writes follow KVM's rules for writable ID
registers (arch/arm64/kvm/sys_regs.c set_id_reg): a feature field may be lowered, never
raised above what the sandbox can run (signed fields compared as signed), and the
registers are immutable once a vCPU has run (EBUSY).

The sandbox adds to Unicorn's CPU what it emulates itself: FEAT_RAS, shown as RASv1p1
(ID_AA64PFR0_EL1.RAS = 1, ID_AA64PFR1_EL1.RAS_frac = 1) when `Vm(ras=True)`. The RAS
field and `vm.ras` are one fact: writing the field switches the RAS emulation (DISR_EL1,
ERR* records, ESB deferral, SError syndromes through KVM_CAP_ARM_INJECT_SERROR_ESR) on or off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unicorn import UcError

from .arch.exception import CpuFeatures
from .arch.sysreg import HCR_RW, SYSREGS, SysReg
from .kvm import EBUSY, EINVAL, Cap, kvm_error

if TYPE_CHECKING:
    from .vcpu import Vcpu
    from .vm import Vm

HCR_TID3 = 1 << 18  # trap ID group 3 to EL2 (Arm ARM D17.2.48)
HCR_INTERRUPT_BITS = 0xD8  # FMO, IMO, VF, VI: owned by the interrupt gate
# Firmware's part (what TF-A and KVM do for a guest shown the feature): no EL3/EL2 traps for
# the features the guest is told it has.
HCR_APK, HCR_API = 1 << 40, 1 << 41  # pointer-authentication keys and instructions
SCR_APK, SCR_API = 1 << 16, 1 << 17
CPTR_EL3_EZ = 1 << 8  # SVE

PFR0 = SYSREGS["ID_AA64PFR0_EL1"]
PFR1 = SYSREGS["ID_AA64PFR1_EL1"]
MMFR1 = SYSREGS["ID_AA64MMFR1_EL1"]
ISAR0 = SYSREGS["ID_AA64ISAR0_EL1"]
ISAR1 = SYSREGS["ID_AA64ISAR1_EL1"]
MIDR = SYSREGS["MIDR_EL1"]
MPIDR = SYSREGS["MPIDR_EL1"]

# Field positions used by the sandbox itself (Arm ARM D17.2).
PFR0_GIC, PFR0_RAS, PFR0_SVE = 24, 28, 32
ISAR1_PAUTH = (4, 8, 24, 28)  # APA, API, GPA, GPI
PFR1_SSBS, PFR1_MTE, PFR1_RAS_FRAC = 4, 8, 12
MMFR1_PAN = 20
ISAR0_RNDR = 60

# Fields using the signed ID scheme (Arm ARM D19.1.3): 0xF means "not implemented".
SIGNED_FIELDS: dict[SysReg, set[int]] = {
    PFR0: {16, 20},  # FP, AdvSIMD
    SYSREGS["ID_AA64MMFR0_EL1"]: {24, 28},  # TGran64, TGran4
    SYSREGS["ID_AA64DFR0_EL1"]: {36},  # DoubleLock
}
# The AArch64 feature registers a host may write (KVM_SET_ONE_REG on them).
WRITABLE = {SYSREGS[n] for n in (
    "ID_AA64PFR0_EL1", "ID_AA64PFR1_EL1", "ID_AA64ZFR0_EL1", "ID_AA64DFR0_EL1", "ID_AA64DFR1_EL1",
    "ID_AA64AFR0_EL1", "ID_AA64AFR1_EL1", "ID_AA64ISAR0_EL1", "ID_AA64ISAR1_EL1", "ID_AA64ISAR2_EL1",
    "ID_AA64MMFR0_EL1", "ID_AA64MMFR1_EL1", "ID_AA64MMFR2_EL1")}


def is_group3(reg: SysReg) -> bool:
    """The encodings HCR_EL2.TID3 traps: op0=3, op1=0, CRn=0, CRm=1..7 (Arm ARM D17.2.48)."""
    return reg.op0 == 3 and reg.op1 == 0 and reg.crn == 0 and 1 <= reg.crm <= 7


def field(value: int, shift: int) -> int:
    return (value >> shift) & 0xF


def with_field(value: int, shift: int, f: int) -> int:
    return (value & ~(0xF << shift)) | ((f & 0xF) << shift)


def _field_value(value: int, shift: int, signed: bool) -> int:
    f = field(value, shift)
    return f - 16 if signed and f & 8 else f


class IdRegisters:
    """The Vm-wide guest view of the ID registers (KVM keeps them per VM too)."""

    def __init__(self, vm: "Vm"):
        self.vm = vm
        self._native: dict[SysReg, int] = {}
        self.view: dict[SysReg, int] = {}  # group-3 values that differ from Unicorn's
        self.midr: int | None = None  # None: Unicorn's MIDR
        self.traps = 0  # ID register reads answered through the trap (for benchmarks)

    # -- values --------------------------------------------------------------------------------

    def native(self, reg: SysReg, vcpu: "Vcpu") -> int:
        """What Unicorn's CPU model reports (a host read is not subject to TID3)."""
        if reg not in self._native:
            try:
                self._native[reg] = vcpu.uc.cpr_read(*reg)
            except UcError:
                self._native[reg] = 0  # an encoding Unicorn lacks: RAZ, as reserved ID space
        return self._native[reg]

    def _default(self, reg: SysReg, vcpu: "Vcpu") -> int:
        value = self.native(reg, vcpu)
        ras = 1 if self.vm.ras else 0
        if reg == PFR0:
            value = with_field(value, PFR0_RAS, ras)
        elif reg == PFR1:
            value = with_field(value, PFR1_RAS_FRAC, ras)  # FEAT_RASv1p1 with RAS = 1
        return value

    def _limit(self, reg: SysReg, vcpu: "Vcpu") -> int:
        """The most the sandbox can run: Unicorn's CPU plus the RAS emulation."""
        value = self.native(reg, vcpu)
        if reg == PFR0:
            value = with_field(value, PFR0_RAS, 1)
        elif reg == PFR1:
            value = with_field(value, PFR1_RAS_FRAC, 1)
        return value

    def read(self, reg: SysReg, vcpu: "Vcpu") -> int:
        """The guest's view of a group-3 register, MIDR_EL1 or MPIDR_EL1."""
        if reg == MIDR:
            return self.native(MIDR, vcpu) if self.midr is None else self.midr
        if reg == MPIDR:
            return vcpu.mpidr | (1 << 31)
        if reg in self.view:
            return self.view[reg]
        return self._default(reg, vcpu)

    @staticmethod
    def owns(reg: SysReg) -> bool:
        """Whether host reads and writes of `reg` go through this view."""
        return reg in (MIDR, MPIDR) or is_group3(reg)

    def trapped_read(self, reg: SysReg, vcpu: "Vcpu") -> int:
        self.traps += 1
        return self.read(reg, vcpu)

    # -- host writes (KVM_SET_ONE_REG) -------------------------------------------------------------

    def set(self, reg: SysReg, value: int, vcpu: "Vcpu") -> None:
        """Choose what the guest reads. OSError(EINVAL) for a value the sandbox cannot back,
        OSError(EBUSY) once a vCPU has run."""
        if any(v.last_exit is not None for v in self.vm.vcpus):
            raise kvm_error(EBUSY, "ID registers are immutable once a vCPU has run")
        value &= 0xFFFFFFFFFFFFFFFF
        if reg == MIDR:
            self.midr = value & 0xFFFFFFFF
        elif reg == MPIDR:
            # Aff3 [39:32], Aff2..Aff0 [23:0]; U, MT and RES1 are the sandbox's (uniprocessor
            # topology bits stay 0).
            vcpu.mpidr = value & 0xFF00FFFFFF
            vcpu.uc.cpr_write(*SYSREGS["VMPIDR_EL2"], vcpu.mpidr | (1 << 31))
            return
        elif reg in WRITABLE:
            self._check_fields(reg, value, vcpu)
            self.view[reg] = value
            if reg in (PFR0, PFR1):
                self._follow_ras(value if reg == PFR0 else self.read(PFR0, vcpu), vcpu)
            for r in (PFR0, PFR1, *list(self.view)):
                if self.view.get(r) == self._default(r, vcpu):
                    del self.view[r]
        else:
            raise kvm_error(EINVAL, f"{reg.generic_name()} is not a writable ID register")
        for v in self.vm.vcpus:
            self.apply(v)

    def _check_fields(self, reg: SysReg, value: int, vcpu: "Vcpu") -> None:
        limit = self._limit(reg, vcpu)
        signed = SIGNED_FIELDS.get(reg, set())
        for shift in range(0, 64, 4):
            is_signed = shift in signed
            new, most = _field_value(value, shift, is_signed), _field_value(limit, shift, is_signed)
            if new > most:
                raise kvm_error(EINVAL, f"{reg.generic_name().upper()}[{shift + 3}:{shift}] = {field(value, shift)} "
                                        f"exceeds what the sandbox implements ({field(limit, shift)})")
        if reg == PFR0 and field(value, PFR0_RAS) and field(self.read(PFR1, vcpu), PFR1_RAS_FRAC) > 1:
            raise kvm_error(EINVAL, "RAS_frac is only defined for RAS = 1")

    def _follow_ras(self, pfr0: int, vcpu: "Vcpu") -> None:
        """The RAS field decides the RAS emulation (one fact, see the module docstring)."""
        ras = field(pfr0, PFR0_RAS) != 0
        if ras == self.vm.ras:
            return
        self.vm.ras = ras
        for v in self.vm.vcpus:
            v.sysregs.ras = ras
        if ras:
            self.vm.caps[Cap.ARM_INJECT_SERROR_ESR] = 1
        else:
            self.vm.caps.pop(Cap.ARM_INJECT_SERROR_ESR, None)
        # PFR1.RAS_frac follows a change of RAS made through PFR0 alone.
        pfr1 = self.view.get(PFR1, self._default(PFR1, vcpu))
        if not ras:
            self.view[PFR1] = with_field(pfr1, PFR1_RAS_FRAC, 0)

    # -- applying the view to a vCPU -------------------------------------------------------------

    def apply(self, vcpu: "Vcpu") -> None:
        """Program the vCPU so the guest reads this view: HCR_EL2.TID3 when a group-3
        register differs from Unicorn's, VPIDR_EL2 for MIDR, and the features that change
        exception entry (PAN, SSBS, MTE) from the registers the guest is shown."""
        uc = vcpu.uc
        differs = any(self.read(r, vcpu) != self.native(r, vcpu) for r in (PFR0, PFR1, *self.view))
        isar1 = self.read(ISAR1, vcpu)
        pauth = any(field(isar1, shift) for shift in ISAR1_PAUTH)
        keep = uc.cpr_read(*SYSREGS["HCR_EL2"]) & HCR_INTERRUPT_BITS  # the interrupt lines' (sandbox.irq)
        hcr = HCR_RW | keep | (HCR_TID3 if differs else 0) | (HCR_APK | HCR_API if pauth else 0)
        uc.cpr_write(*SYSREGS["HCR_EL2"], hcr)
        scr = uc.cpr_read(*SYSREGS["SCR_EL3"]) & ~(SCR_APK | SCR_API)
        uc.cpr_write(*SYSREGS["SCR_EL3"], scr | (SCR_APK | SCR_API if pauth else 0))
        uc.cpr_write(*SYSREGS["VPIDR_EL2"], self.read(MIDR, vcpu))
        sve = field(self.read(PFR0, vcpu), PFR0_SVE) != 0
        uc.cpr_write(*SYSREGS["CPTR_EL3"], CPTR_EL3_EZ if sve else 0)
        pfr1 = self.read(PFR1, vcpu)
        vcpu.features = CpuFeatures(pan=field(self.read(MMFR1, vcpu), MMFR1_PAN) != 0,
                                    ssbs=field(pfr1, PFR1_SSBS) != 0, mte=field(pfr1, PFR1_MTE) != 0)

    def state(self) -> dict[str, object]:
        return {"view": {reg.generic_name(): f"{v:#x}" for reg, v in self.view.items()},
                "midr": None if self.midr is None else f"{self.midr:#x}"}

    def restore(self, state: dict[str, object]) -> None:
        from .arch.sysreg import SysReg as _S
        view = {}
        for name, value in dict(state.get("view", {})).items():  # type: ignore[arg-type]
            op0, op1, crn, crm, op2 = name[1:].replace("_c", "_").split("_")
            view[_S(int(op0), int(op1), int(crn), int(crm), int(op2))] = int(str(value), 16)
        self.view = view
        midr = state.get("midr")
        self.midr = None if midr is None else int(str(midr), 16)
        for v in self.vm.vcpus:
            self.apply(v)
