"""Intercepting MRS/MSR of chosen system registers that Unicorn runs without trapping.

Some registers a guest kernel uses cannot be made to trap on an Armv8.0 CPU: EL1 reads
CNTVCT_EL0 and programs the CNTV_* timer without any EL2 trap control (CNTHCTL_EL2 gained
one only with FEAT_ECV, which Unicorn 2.1.4 lacks), and Unicorn discards CNTV_/CNTP_ writes
anyway (measured: CNTV_CTL_EL0 reads 0 after writing 1). The only way to see such an
access is UC_HOOK_INSN on MRS and MSR, which calls back for *every* MRS/MSR the guest
executes (a Linux kernel runs one every few hundred instructions, mostly `mrs x, sp_el0`).

So the callback is as thin as Python allows: a raw ctypes function (no binding wrapper:
the Unicorn binding's own wrapper costs ~4 us a call, this one ~0.3-0.5 us measured on a
tight loop, bench/bench_timer.py) that rejects by CRn first and only then builds the
encoding. A handler returns True when it performed the access (Unicorn then skips the
instruction) or False to let Unicorn execute it, access checks included.

Every MRS/MSR user of a vCPU must go through its one SysregIntercept (`vcpu.intercept`):
Unicorn 2.1.4 calls only the *first* UC_HOOK_INSN hook registered for MRS (and for MSR)
and silently ignores the others (measured with two hooks each). The hooks are installed
when the first handler arrives and removed, between runs, when the last one leaves.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Callable

from unicorn import UC_HOOK_INSN
from unicorn import arm64_const as A
from unicorn.unicorn_py3.unicorn import uclib

from .arch.sysreg import SysReg

if TYPE_CHECKING:
    from .vcpu import Vcpu


class _CpReg(ctypes.Structure):
    """uc_arm64_cp_reg (unicorn/arm64.h)."""

    _fields_ = [("crn", ctypes.c_uint32), ("crm", ctypes.c_uint32), ("op0", ctypes.c_uint32),
                ("op1", ctypes.c_uint32), ("op2", ctypes.c_uint32), ("val", ctypes.c_uint64)]


# The register argument arrives as a bare address (a Python int costs less to make than a
# ctypes pointer object); `_view` turns it into a _CpReg kept per address.
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p)
_XZR = {getattr(A, "UC_ARM64_REG_XZR", -1), getattr(A, "UC_ARM64_REG_WZR", -1)}

ReadHandler = Callable[[SysReg], "int | None"]  # value, or None: let Unicorn execute it
WriteHandler = Callable[[SysReg, int], bool]  # True: performed


class SysregIntercept:
    """The MRS/MSR interception of one vCPU: handlers per register encoding."""

    def __init__(self, vcpu: "Vcpu"):
        self.vcpu = vcpu
        self._reads: dict[SysReg, ReadHandler] = {}
        self._writes: dict[SysReg, WriteHandler] = {}
        self._crn: set[int] = set()
        self._installed = False
        self._callbacks: list[object] = []  # keep the ctypes thunks alive
        self._handles: list[int] = []
        self._value = ctypes.c_uint64()  # the binding's reg_write costs more than the rest
        self._views: dict[int, _CpReg] = {}  # the engine passes the same few addresses again and again
        self._pstate = ctypes.c_uint64()

    def pstate(self) -> int:
        """PSTATE, read the cheap way (for handlers that check the EL)."""
        uclib.uc_reg_read(self.vcpu.uc._uch, A.UC_ARM64_REG_PSTATE, ctypes.byref(self._pstate))
        return self._pstate.value

    def on(self, reg: SysReg, read: ReadHandler | None = None, write: WriteHandler | None = None) -> None:
        """Handle MRS (`read`) and/or MSR (`write`) of `reg` on this vCPU."""
        if (read is not None and reg in self._reads) or (write is not None and reg in self._writes):
            raise ValueError(f"{reg.generic_name()} already has a handler on vCPU {self.vcpu.index}")
        if read is not None:
            self._reads[reg] = read
        if write is not None:
            self._writes[reg] = write
        self._crn.add(reg.crn)
        self._install()

    def off(self, reg: SysReg, read: bool = True, write: bool = True) -> None:
        """Stop handling `reg` (the hooks go at the next `prune`, between runs)."""
        if read:
            self._reads.pop(reg, None)
        if write:
            self._writes.pop(reg, None)
        self._crn = {r.crn for r in (*self._reads, *self._writes)}

    def prune(self) -> None:
        """Remove the hooks once no handler is left (never from inside a hook)."""
        if self._installed and not (self._reads or self._writes):
            for handle in self._handles:
                uclib.uc_hook_del(self.vcpu.uc._uch, ctypes.c_size_t(handle))
            self._handles.clear()
            self._callbacks.clear()
            self._installed = False

    def _install(self) -> None:
        if self._installed:
            return
        uc = self.vcpu.uc
        for insn, fn in ((A.UC_ARM64_INS_MRS, self._on_mrs), (A.UC_ARM64_INS_MSR, self._on_msr)):
            thunk = _CALLBACK(fn)
            handle = ctypes.c_size_t()
            err = uclib.uc_hook_add(uc._uch, ctypes.byref(handle), UC_HOOK_INSN, ctypes.cast(thunk, ctypes.c_void_p),
                                    None, ctypes.c_uint64(1), ctypes.c_uint64(0), ctypes.c_int(insn))
            if err:
                raise OSError(f"uc_hook_add(UC_HOOK_INSN) failed with Unicorn error {err}")
            self._callbacks.append(thunk)
            self._handles.append(handle.value)
        # Unicorn decides at translation time whether an MRS/MSR calls the hook.
        uc.ctl_flush_tb()
        self._installed = True

    def _view(self, address: int) -> _CpReg:
        """A view of the engine's uc_arm64_cp_reg at `address` (its helper's stack frame: in
        practice one address for the whole run; the table is bounded all the same)."""
        if len(self._views) >= 64:
            self._views.clear()
        c = self._views[address] = _CpReg.from_address(address)
        return c

    def _on_mrs(self, _uc: int, reg: int, address: int, _ud: int) -> int:
        c = self._views.get(address) or self._view(address)
        if c.crn not in self._crn:
            return 0
        try:
            handler = self._reads.get(SysReg(c.op0, c.op1, c.crn, c.crm, c.op2))
            if handler is None:
                return 0
            value = handler(SysReg(c.op0, c.op1, c.crn, c.crm, c.op2))
            if value is None:
                return 0
            if reg not in _XZR:
                self._value.value = value & 0xFFFFFFFFFFFFFFFF
                uclib.uc_reg_write(self.vcpu.uc._uch, reg, ctypes.byref(self._value))
            return 1
        except Exception:
            self.vcpu._host_error("MRS intercept")
            return 1

    def _on_msr(self, _uc: int, reg: int, address: int, _ud: int) -> int:
        c = self._views.get(address) or self._view(address)
        if c.crn not in self._crn:
            return 0
        try:
            enc = SysReg(c.op0, c.op1, c.crn, c.crm, c.op2)
            handler = self._writes.get(enc)
            if handler is None:
                return 0
            return 1 if handler(enc, 0 if reg in _XZR else c.val) else 0
        except Exception:
            self.vcpu._host_error("MSR intercept")
            return 1
