"""Register access through the engine's C API directly, for campaigns.

The Unicorn 2.1.4 Python binding spends about 5 us on each `reg_read` / `reg_write` /
`cpr_read` (class selection, argument checks and decorators around a call that itself takes
well under a microsecond). A campaign performs tens of register accesses per execution, so
`install(uc)` replaces those methods on one `Uc` instance with thin `ctypes` calls into
`uc_reg_read` / `uc_reg_write` (loaded as sandbox.rawregs does, without releasing the GIL):
the same engine functions with the same arguments, so the values are the same. Registers
wider than 64 bits (Q/V) keep the binding's own method.
"""

from __future__ import annotations

import ctypes
from typing import Any, Iterable

from unicorn import arm64_const as A
from unicorn import Uc, UcError

from ..rawregs import _LIB

_CP_REG = A.UC_ARM64_REG_CP_REG
_WIDE = set(range(A.UC_ARM64_REG_Q0, A.UC_ARM64_REG_Q31 + 1)) | set(range(A.UC_ARM64_REG_V0, A.UC_ARM64_REG_V31 + 1))


class _CpReg(ctypes.Structure):
    # uc_arm64_cp_reg (unicorn/arm64.h): crn, crm, op0, op1, op2, val
    _fields_ = [("crn", ctypes.c_uint32), ("crm", ctypes.c_uint32), ("op0", ctypes.c_uint32),
                ("op1", ctypes.c_uint32), ("op2", ctypes.c_uint32), ("val", ctypes.c_uint64)]


def install(uc: Uc) -> None:
    """Give `uc` C-speed reg_read/reg_write/cpr_read/cpr_write/reg_*_batch."""
    handle = uc._uch
    c_read, c_write = _LIB.uc_reg_read, _LIB.uc_reg_write
    c_read_batch, c_write_batch = _LIB.uc_reg_read_batch, _LIB.uc_reg_write_batch
    slow_read, slow_write = uc.reg_read, uc.reg_write
    value = ctypes.c_uint64()
    pvalue = ctypes.byref(value)
    cp = _CpReg()
    pcp = ctypes.byref(cp)

    def check(status: int) -> None:
        if status:
            raise UcError(status)

    def reg_read(reg_id: int, aux: Any = None) -> int:
        if reg_id == _CP_REG or reg_id in _WIDE:
            return slow_read(reg_id, aux)
        check(c_read(handle, reg_id, pvalue))
        return value.value

    def reg_write(reg_id: int, v: Any) -> None:
        if reg_id == _CP_REG or reg_id in _WIDE:
            slow_write(reg_id, v)
            return
        value.value = v
        check(c_write(handle, reg_id, pvalue))

    def cpr_read(op0: int, op1: int, crn: int, crm: int, op2: int) -> int:
        cp.crn, cp.crm, cp.op0, cp.op1, cp.op2 = crn, crm, op0, op1, op2
        check(c_read(handle, _CP_REG, pcp))
        return cp.val

    def cpr_write(op0: int, op1: int, crn: int, crm: int, op2: int, v: int) -> None:
        cp.crn, cp.crm, cp.op0, cp.op1, cp.op2, cp.val = crn, crm, op0, op1, op2, v
        check(c_write(handle, _CP_REG, pcp))

    batches: dict[tuple[int, ...], tuple[Any, Any, Any, int] | None] = {}

    def _batch(ids: tuple[int, ...]) -> tuple[Any, Any, Any, int] | None:
        """The C arrays for one list of registers, made once; None if the list needs the
        binding (a CP or wide register)."""
        try:
            return batches[ids]
        except KeyError:
            pass
        b = None
        if not any(r == _CP_REG or r in _WIDE for r in ids):
            n = len(ids)
            vals = (ctypes.c_uint64 * n)()
            base = ctypes.addressof(vals)
            b = ((ctypes.c_int * n)(*ids), vals, (ctypes.c_void_p * n)(*range(base, base + 8 * n, 8)), n)
        batches[ids] = b
        return b

    def reg_read_batch(reg_ids: Iterable[int]) -> tuple[int, ...]:
        ids = reg_ids if reg_ids.__class__ is tuple else tuple(reg_ids)
        b = _batch(ids)  # type: ignore[arg-type]
        if b is None:
            return tuple(reg_read(r) for r in ids)
        c_ids, vals, ptrs, n = b
        check(c_read_batch(handle, c_ids, ptrs, n))
        return tuple(vals)

    def reg_write_batch(pairs: Iterable[tuple[int, int]]) -> None:
        pairs = list(pairs)
        b = _batch(tuple(r for r, _ in pairs))
        if b is None:
            for r, v in pairs:
                reg_write(r, v)
            return
        c_ids, vals, ptrs, n = b
        for i, (_, v) in enumerate(pairs):
            vals[i] = v
        check(c_write_batch(handle, c_ids, ptrs, n))

    uc.reg_read = reg_read  # type: ignore[method-assign]
    uc.reg_write = reg_write  # type: ignore[method-assign]
    uc.cpr_read = cpr_read  # type: ignore[method-assign]
    uc.cpr_write = cpr_write  # type: ignore[method-assign]
    uc.reg_read_batch = reg_read_batch  # type: ignore[method-assign]
    uc.reg_write_batch = reg_write_batch  # type: ignore[method-assign]
