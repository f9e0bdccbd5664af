"""Code and interrupt hooks registered through Unicorn's C API with bare ctypes thunks.

The 2.1.4 Python binding routes every callback through its own wrapper (a decorator that
finds the `Uc` object from the engine handle, converts the arguments and stores any
exception for `emu_start` to raise), which costs about as much again as a hook that does
real work. The sandbox's permanent hooks (the interrupt hook, the ERET check, the SError
gate's sites) fire on every exception entry and return, so they are registered here:
`uc_hook_add` with a `CFUNCTYPE` thunk that calls the handler as the binding would,
`handler(uc, ...)`, with the sandbox's `Uc` object. The handlers catch their own
exceptions (a thunk has nowhere to raise to) and stop the run with an INTERNAL_ERROR exit.
"""

from __future__ import annotations

import ctypes
from typing import Any, Callable

from unicorn import UC_HOOK_CODE, UC_HOOK_INTR, Uc
from unicorn.unicorn_py3.unicorn import uclib

# uc_cb_hookcode_t(uc, address, size, user_data), uc_cb_hookintr_t(uc, intno, user_data)
_CODE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_void_p)
_INTR = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p)


class RawHooks:
    """The raw hooks of one Unicorn instance (their thunks are kept alive here)."""

    def __init__(self, uc: Uc):
        self.uc = uc
        self._thunks: dict[int, Any] = {}

    def _add(self, kind: int, thunk: Any, begin: int, end: int) -> int:
        handle = ctypes.c_size_t()
        err = uclib.uc_hook_add(self.uc._uch, ctypes.byref(handle), kind, ctypes.cast(thunk, ctypes.c_void_p), None,
                                ctypes.c_uint64(begin), ctypes.c_uint64(end))
        if err:
            raise OSError(f"uc_hook_add({kind:#x}) failed with Unicorn error {err}")
        self._thunks[handle.value] = thunk
        return handle.value

    def code(self, handler: Callable[[Uc, int, int, object], None], begin: int, end: int) -> int:
        """UC_HOOK_CODE on [begin, end]: handler(uc, address, size, None)."""
        uc = self.uc
        return self._add(UC_HOOK_CODE, _CODE(lambda _h, address, size, _ud: handler(uc, address, size, None)),
                         begin, end)

    def interrupt(self, handler: Callable[[Uc, int, object], None]) -> int:
        """UC_HOOK_INTR: handler(uc, intno, None)."""
        uc = self.uc
        return self._add(UC_HOOK_INTR, _INTR(lambda _h, intno, _ud: handler(uc, intno, None)), 1, 0)

    def delete(self, handle: int) -> None:
        """Remove a hook made here (between runs: Unicorn defers it otherwise)."""
        if self._thunks.pop(handle, None) is not None:
            uclib.uc_hook_del(self.uc._uch, ctypes.c_size_t(handle))
