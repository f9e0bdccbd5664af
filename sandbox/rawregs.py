"""Register batches for the hypercall path, read and written through Unicorn's C API directly.

The Python binding picks a value type per register and builds ctypes objects on every call
(several microseconds each); a hypercall needs a handful of registers and must cost about
as much as an empty interrupt hook. These batches are built once per vCPU: fixed id lists,
preallocated value arrays, and the library loaded with `ctypes.PyDLL` so a call does not
release and retake the GIL (Unicorn's register accessors are short and never call back).

`CallRegisters.read()` takes x0-x6, PC and SCTLR_EL1 in one call and fetches the HVC/SMC
instruction word for its immediate: from the guest-RAM buffer when SCTLR_EL1.M is 0 (the
PC is then a physical address), through the MMU (`uc_vmem_read`) otherwise.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

from unicorn import UC_PROT_EXEC, UC_PROT_READ, UcError
from unicorn import arm64_const as A
from unicorn.unicorn_py3.unicorn import uclib

from .arch.sysreg import SYSREGS

if TYPE_CHECKING:
    from unicorn import Uc

    from .memory import MemoryMap

_LIB = ctypes.PyDLL(uclib._name)
_READ_BATCH = _LIB.uc_reg_read_batch
_WRITE_BATCH = _LIB.uc_reg_write_batch
_WRITE = _LIB.uc_reg_write
_VMEM_READ = _LIB.uc_vmem_read
_VMEM_READ.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
_VMEM_TRANSLATE = _LIB.uc_vmem_translate
_VMEM_TRANSLATE.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, ctypes.POINTER(ctypes.c_uint64)]

X_IDS = [A.UC_ARM64_REG_X0 + i for i in range(29)] + [A.UC_ARM64_REG_X29, A.UC_ARM64_REG_X30]
SDEI_SAVED_GPREGS = 18  # x0-x17 (TF-A sdei_dispatch_context_t, SDEI_SAVED_GPREGS)


class _CpReg(ctypes.Structure):
    """uc_arm64_cp_reg (unicorn/arm64.h): the aux data of UC_ARM64_REG_CP_REG."""

    _fields_ = [("crn", ctypes.c_uint32), ("crm", ctypes.c_uint32), ("op0", ctypes.c_uint32),
                ("op1", ctypes.c_uint32), ("op2", ctypes.c_uint32), ("val", ctypes.c_uint64)]


def _handle(uc: "Uc") -> ctypes.c_void_p:
    h = uc._uch
    return ctypes.c_void_p(h.value if hasattr(h, "value") else ctypes.cast(h, ctypes.c_void_p).value)


class _Batch:
    """A fixed list of 64-bit registers (plus optional CP registers) read or written at once."""

    def __init__(self, uc: "Uc", ids: list[int], cp: list[_CpReg] = ()):  # type: ignore[assignment]
        self.handle = _handle(uc)
        n = len(ids)
        self.count = n + len(cp)
        self.ids = (ctypes.c_int * self.count)(*ids, *([A.UC_ARM64_REG_CP_REG] * len(cp)))
        self.values = (ctypes.c_uint64 * n)()
        base = ctypes.addressof(self.values)
        self.cp = list(cp)
        self.ptrs = (ctypes.c_void_p * self.count)(*[base + 8 * i for i in range(n)],
                                                   *[ctypes.addressof(c) for c in self.cp])

    def read(self) -> "ctypes.Array[ctypes.c_uint64]":
        if _READ_BATCH(self.handle, self.ids, self.ptrs, self.count):
            raise UcError(1)
        return self.values

    def write(self, values: "list[int] | tuple[int, ...]") -> None:
        self.values[:len(values)] = [v & 0xFFFFFFFFFFFFFFFF for v in values]
        if _WRITE_BATCH(self.handle, self.ids, self.ptrs, len(values)):
            raise UcError(1)


# Slots of CallRegisters.values (x0..x6 first, so slot n is xn).
PC_SLOT = 7


class CallRegisters:
    """The registers of one SMCCC call: x0-x6 and PC in one batch, and the immediate."""

    def __init__(self, uc: "Uc", memory: "MemoryMap"):
        self._sctlr = _CpReg(*_cp_fields("SCTLR_EL1"))
        self._batch = _Batch(uc, [A.UC_ARM64_REG_X0 + i for i in range(7)] + [A.UC_ARM64_REG_PC], [self._sctlr])
        self._memory = memory
        self._x0 = ctypes.c_uint64()
        self._x0_ref = ctypes.byref(self._x0)
        self._word = ctypes.c_uint32()
        self._ram: tuple[int, int, memoryview] | None = None  # (base, end, 32-bit view) of the last hit

    def read(self) -> "ctypes.Array[ctypes.c_uint64]":
        """x0..x6 in slots 0..6, the PC (past the HVC/SMC) in slot PC_SLOT."""
        return self._batch.read()

    def immediate(self, pc: int) -> int:
        """imm16 of the HVC/SMC before `pc` (Arm ARM C6.2.103/C6.2.254: bits [20:5])."""
        at = pc - 4
        if not self._sctlr.val & 1:
            ram = self._ram
            if ram is None or not ram[0] <= at < ram[1]:
                region = self._memory.ram_at(at)
                if region is not None:
                    ram = self._ram = (region.base, region.end, memoryview(region.buffer).cast("I"))
            if ram is not None and ram[0] <= at < ram[1]:
                return (ram[2][(at - ram[0]) >> 2] >> 5) & 0xFFFF
        if _VMEM_READ(self._batch.handle, at, UC_PROT_EXEC, ctypes.byref(self._word), 4):
            return 0xFFFF  # not readable: treat as a non-SMCCC immediate (answered NOT_SUPPORTED)
        return (self._word.value >> 5) & 0xFFFF

    def write_x0(self, value: int) -> None:
        self._x0.value = value & 0xFFFFFFFFFFFFFFFF
        _WRITE(self._batch.handle, A.UC_ARM64_REG_X0, self._x0_ref)


class ContextRegisters:
    """The SDEI context of a vCPU: x0-x17, PC and PSTATE (TF-A's saved dispatch context)."""

    def __init__(self, uc: "Uc"):
        self._batch = _Batch(uc, X_IDS[:SDEI_SAVED_GPREGS] + [A.UC_ARM64_REG_PC, A.UC_ARM64_REG_PSTATE])
        self._gprs = _Batch(uc, X_IDS[:SDEI_SAVED_GPREGS] + [A.UC_ARM64_REG_PC])

    def read(self) -> tuple[tuple[int, ...], int, int]:
        """((x0..x17), pc, pstate)."""
        v = self._batch.read()
        return tuple(v[:SDEI_SAVED_GPREGS]), v[SDEI_SAVED_GPREGS], v[SDEI_SAVED_GPREGS + 1]

    def write_gprs_and_pc(self, regs: "tuple[int, ...] | list[int]", pc: int) -> None:
        """x0..x17 and PC (PSTATE is written by the vCPU, which banks SP with it)."""
        self._gprs.write([*regs, pc])


def translate(uc: "Uc", va: int, execute: bool = True) -> int | None:
    """The physical address of `va` in the current translation regime (SCTLR_EL1.M=0:
    itself), or None when the MMU has no mapping for that access (uc_vmem_translate)."""
    pa = ctypes.c_uint64()
    prot = UC_PROT_EXEC if execute else UC_PROT_READ
    if _VMEM_TRANSLATE(_handle(uc), va & 0xFFFFFFFFFFFFFFFF, prot, ctypes.byref(pa)):
        return None
    return pa.value


def _cp_fields(name: str) -> tuple[int, int, int, int, int, int]:
    enc = SYSREGS[name]
    return (enc.crn, enc.crm, enc.op0, enc.op1, enc.op2, 0)
