"""Register batches for the hypercall path, read and written through Unicorn's C API directly.

The Python binding picks a value type per register and builds ctypes objects on every call
(several microseconds each); a hypercall needs a handful of registers and must cost about
as much as an empty interrupt hook. These batches are built once per vCPU: fixed id lists,
preallocated value arrays, and the library loaded with `ctypes.PyDLL` so a call does not
release and retake the GIL (Unicorn's register accessors are short and never call back).

`CallRegisters` reads x0-x6 and PC (through sandbox.cpustate's direct views when there are
any, else one batch call) and fetches the HVC/SMC instruction word for its immediate: from
the guest-RAM buffer when SCTLR_EL1.M is 0 (the PC is then a physical address), through the
MMU (`uc_vmem_read`) otherwise.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Any

from unicorn import UC_PROT_EXEC, UcError
from unicorn import arm64_const as A
from unicorn.unicorn_py3.unicorn import uclib

from . import cpustate
from .arch.sysreg import SYSREGS

if TYPE_CHECKING:
    from unicorn import Uc

    from .memory import MemoryMap

_LIB = ctypes.PyDLL(uclib._name)
_READ_BATCH = _LIB.uc_reg_read_batch
_WRITE_BATCH = _LIB.uc_reg_write_batch
_WRITE = _LIB.uc_reg_write
_READ = _LIB.uc_reg_read
_EMU_START = _LIB.uc_emu_start
_EMU_START.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_size_t]
_VMEM_READ = _LIB.uc_vmem_read
_VMEM_READ.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]

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


class CallRegisters:
    """The registers of one SMCCC call: x0-x6 and the PC, and the instruction's immediate.
    Through sandbox.cpustate's views when it found them (no API call at all), else with one
    batch read of x0-x6, PC and SCTLR_EL1."""

    def __init__(self, uc: "Uc", memory: "MemoryMap", views: "cpustate.CpuViews | None"):
        self._memory = memory
        self._ram: tuple[int, int, memoryview] | None = None  # (base, end, 32-bit view) of the last hit
        self._word = ctypes.c_uint32()
        self._handle = _handle(uc)
        v = views  # cpustate.views(uc), looked up once by the vCPU (it reads /proc/self/maps)
        self.x: Any = None  # x0-x30, PC at 32: the CPU's own storage (None: no views, use read())
        if v is not None:
            self.x = self._xregs = v.xregs
            self._sctlr: Any = v.sctlr
            self._batch = None
        else:
            sctlr = _CpReg(*_cp_fields("SCTLR_EL1"))
            self._batch = _Batch(uc, [A.UC_ARM64_REG_X0 + i for i in range(7)] + [A.UC_ARM64_REG_PC], [sctlr])
            self._cp = sctlr
            self._x0 = ctypes.c_uint64()
            self._x0_ref = ctypes.byref(self._x0)

    def read(self) -> tuple[Any, int]:
        """(x0..x6 indexable from 0, the PC past the HVC/SMC)."""
        if self._batch is None:
            x = self._xregs
            return x, x[32]
        v = self._batch.read()
        return v, v[7]

    def _sctlr_el1(self) -> int:
        return self._sctlr[0] if self._batch is None else self._cp.val

    def immediate(self, pc: int) -> int:
        """imm16 of the HVC/SMC before `pc` (Arm ARM C6.2.103/C6.2.254: bits [20:5])."""
        at = pc - 4
        ram = self._ram
        if ram is not None and ram[0] <= at < ram[1] and not (self._sctlr[0] if self._batch is None
                                                              else self._cp.val) & 1:
            return (ram[2][(at - ram[0]) >> 2] >> 5) & 0xFFFF  # MMU off: the PC is a physical address
        if not self._sctlr_el1() & 1:
            if ram is None or not ram[0] <= at < ram[1]:
                region = self._memory.ram_at(at)
                if region is not None:
                    ram = self._ram = (region.base, region.end, memoryview(region.buffer).cast("I"))
            if ram is not None and ram[0] <= at < ram[1]:
                return (ram[2][(at - ram[0]) >> 2] >> 5) & 0xFFFF
        if _VMEM_READ(self._handle, at, UC_PROT_EXEC, ctypes.byref(self._word), 4):
            return 0xFFFF  # not readable: treat as a non-SMCCC immediate (answered NOT_SUPPORTED)
        return (self._word.value >> 5) & 0xFFFF

    def write_x0(self, value: int) -> None:
        if self._batch is None:
            self._xregs[0] = value & 0xFFFFFFFFFFFFFFFF
        else:
            self._x0.value = value & 0xFFFFFFFFFFFFFFFF
            _WRITE(self._handle, A.UC_ARM64_REG_X0, self._x0_ref)


class _Reg:
    """One 64-bit register through the raw API."""

    def __init__(self, handle: ctypes.c_void_p, rid: int):
        self.handle, self.rid = handle, rid
        self.value = ctypes.c_uint64()
        self.ref = ctypes.byref(self.value)

    def get(self) -> int:
        _READ(self.handle, self.rid, self.ref)
        return self.value.value

    def set(self, v: int) -> None:
        self.value.value = v & 0xFFFFFFFFFFFFFFFF
        _WRITE(self.handle, self.rid, self.ref)


# PSTATE fields QEMU caches in its hflags (EL and SPSel, PAN, UAO, SS, IL, BTYPE, TCO, nRW):
# changing any of them needs the rebuild; NZCV and DAIF are read live.
_HFLAGS_BITS = 0x1F | (1 << 22) | (1 << 23) | (1 << 21) | (1 << 20) | (3 << 10) | (1 << 25)


class PstateWriter:
    """PSTATE writes as an exception entry or return makes them: the stack pointer is banked
    (QEMU aarch64_save_sp/restore_sp: Unicorn keeps only the live SP and would otherwise carry
    it into the new mode), and a system-register write follows so that Unicorn rebuilds its
    cached hflags and notices a new EL (unicorn #2333)."""

    def __init__(self, uc: "Uc"):
        h = _handle(uc)
        self.pstate = _Reg(h, A.UC_ARM64_REG_PSTATE)
        self.sp = _Reg(h, A.UC_ARM64_REG_SP)
        self.banks = (_Reg(h, A.UC_ARM64_REG_SP_EL0), _Reg(h, A.UC_ARM64_REG_SP_EL1))
        self.handle = h
        self._tpidr = _CpReg(*_cp_fields("TPIDR_EL0"))
        self._tpidr_ref = ctypes.byref(self._tpidr)

    @staticmethod
    def _bank(pstate: int) -> int:
        return 1 if (pstate >> 2) & 3 == 1 and pstate & 1 else 0  # SP_EL1 only at EL1h

    def write(self, value: int, before: int | None = None) -> None:
        """PSTATE = `value`; `before` is the current PSTATE when the caller has just read it."""
        if before is None:
            before = self.pstate.get()
        old = self._bank(before)
        new = self._bank(value)
        if old != new:
            self.banks[old].set(self.sp.get())
        self.pstate.set(value)
        if (before ^ value) & _HFLAGS_BITS:
            _READ(self.handle, A.UC_ARM64_REG_CP_REG, self._tpidr_ref)
            _WRITE(self.handle, A.UC_ARM64_REG_CP_REG, self._tpidr_ref)
        if old != new:
            self.sp.set(self.banks[new].get())


class ExceptionRegisters:
    """What exception entry and return touch, one API call each way: the ERET check reads
    PSTATE, ELR_EL1, SPSR_EL1 and VBAR_EL1 together; an entry writes ESR_EL1, FAR_EL1
    (when the exception defines it), ELR_EL1 and SPSR_EL1 together."""

    def __init__(self, uc: "Uc"):
        self._spsr_in = _CpReg(*_cp_fields("SPSR_EL1"))
        self._in = _Batch(uc, [A.UC_ARM64_REG_PSTATE, A.UC_ARM64_REG_ELR_EL1, A.UC_ARM64_REG_VBAR_EL1],
                          [self._spsr_in])
        self._outs: dict[tuple[bool, bool], tuple[_Batch, _CpReg]] = {}
        for esr in (False, True):
            for far in (False, True):
                spsr = _CpReg(*_cp_fields("SPSR_EL1"))
                ids = ([A.UC_ARM64_REG_ESR_EL1] if esr else []) + ([A.UC_ARM64_REG_FAR_EL1] if far else [])
                self._outs[esr, far] = (_Batch(uc, ids + [A.UC_ARM64_REG_ELR_EL1], [spsr]), spsr)

    def read(self) -> tuple[int, int, int, int]:
        """(PSTATE, ELR_EL1, SPSR_EL1, VBAR_EL1)."""
        v = self._in.read()
        return v[0], v[1], self._spsr_in.val, v[2]

    def write_entry(self, esr: int | None, far: int | None, elr: int, spsr: int) -> None:
        """ESR_EL1 (unless None), FAR_EL1 (unless None), ELR_EL1 and SPSR_EL1."""
        batch, cp = self._outs[esr is not None, far is not None]
        values = batch.values
        i = 0
        if esr is not None:
            values[0] = esr
            i = 1
        if far is not None:
            values[i] = far & 0xFFFFFFFFFFFFFFFF
            i += 1
        values[i] = elr & 0xFFFFFFFFFFFFFFFF
        cp.val = spsr
        if _WRITE_BATCH(batch.handle, batch.ids, batch.ptrs, batch.count):
            raise UcError(1)


class ContextRegisters:
    """The SDEI context of a vCPU: x0-x17, PC and PSTATE (TF-A's saved dispatch context),
    and SCTLR_EL1 (which the handler's PSTATE depends on)."""

    def __init__(self, uc: "Uc", views: "cpustate.CpuViews | None"):
        v = views
        h = _handle(uc)
        self._x = None if v is None else v.xregs
        self._sctlr_view = None if v is None else v.sctlr
        self._sctlr = _CpReg(*_cp_fields("SCTLR_EL1"))
        self._batch = _Batch(uc, X_IDS[:SDEI_SAVED_GPREGS] + [A.UC_ARM64_REG_PC, A.UC_ARM64_REG_PSTATE],
                             [self._sctlr])
        self._gprs = _Batch(uc, X_IDS[:SDEI_SAVED_GPREGS])
        self._pc = _Reg(h, A.UC_ARM64_REG_PC)
        self._pstate = _Reg(h, A.UC_ARM64_REG_PSTATE)

    def read(self) -> tuple[tuple[int, ...], int, int, int]:
        """((x0..x17), pc, pstate, SCTLR_EL1)."""
        x = self._x
        if x is not None:
            return tuple(x[:SDEI_SAVED_GPREGS]), x[32], self._pstate.get(), self._sctlr_view[0]  # type: ignore[index]
        v = self._batch.read()
        return tuple(v[:SDEI_SAVED_GPREGS]), v[SDEI_SAVED_GPREGS], v[SDEI_SAVED_GPREGS + 1], self._sctlr.val

    def write_gprs_and_pc(self, regs: "tuple[int, ...] | list[int]", pc: int) -> None:
        """x0..x17 and PC (PSTATE is written by the vCPU, which banks SP with it)."""
        x = self._x
        if x is not None:
            # In place, PC included: an API write of the PC from a hook would make Unicorn skip
            # its PC restore at the next exit request (see sandbox/access_completion.py).
            x[:SDEI_SAVED_GPREGS] = [r & 0xFFFFFFFFFFFFFFFF for r in regs]
            x[32] = pc & 0xFFFFFFFFFFFFFFFF
        else:
            self._gprs.write(list(regs))
            self._pc.set(pc)


def emu_start(uc: "Uc", begin: int, timeout: int, count: int) -> None:
    """uc.emu_start(begin, 0, timeout, count) without releasing the GIL: every hook callback
    of the run would take it back (PyGILState_Ensure) and the run would give it up again,
    once per trap, ERET and MRS. Exceptions the binding's own hook wrappers record are
    raised as the binding's emu_start raises them. (Unicorn's timeout is a C thread that
    needs no GIL; Python threads wait until the run returns.)"""
    uc._hook_exception = None
    status = _EMU_START(uc._uch, begin, 0, timeout, count)
    if status:
        raise UcError(status)
    if uc._hook_exception is not None:
        raise uc._hook_exception


def _cp_fields(name: str) -> tuple[int, int, int, int, int, int]:
    enc = SYSREGS[name]
    return (enc.crn, enc.crm, enc.op0, enc.op1, enc.op2, 0)
