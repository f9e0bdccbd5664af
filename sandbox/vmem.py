"""Guest virtual addresses: translation through the vCPU's own MMU state.

Unicorn 2.1.4's `mem_read` takes guest-physical addresses, and its Python binding lacks
`uc_vmem_translate` (the C library exports it). With the guest MMU on, the PC a trap reports
is a virtual address (a Linux kernel runs at 0xffff8000...), so fetching the trapping
instruction needs the translation the guest's page tables give, done here by the engine's
own page-table walk (no TLB side effects the guest could observe).
"""

from __future__ import annotations

import ctypes

from unicorn import UC_PROT_EXEC, UC_PROT_READ, Uc
from unicorn.unicorn_py3.unicorn import uclib

_translate = uclib.uc_vmem_translate
_translate.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, ctypes.POINTER(ctypes.c_uint64)]
_translate.restype = ctypes.c_int


def _handle(uc: Uc) -> int:
    h = uc._uch
    return int(h.value if hasattr(h, "value") else ctypes.cast(h, ctypes.c_void_p).value)


def translate(uc: Uc, va: int, *, fetch: bool = False) -> int | None:
    """The guest-physical address the current translation regime maps `va` to (for an
    instruction fetch when `fetch`), or None when the guest's tables do not map it. With the
    MMU off the translation is the identity."""
    out = ctypes.c_uint64()
    err = _translate(_handle(uc), va & 0xFFFFFFFFFFFFFFFF, UC_PROT_EXEC if fetch else UC_PROT_READ,
                     ctypes.byref(out))
    return None if err else out.value
