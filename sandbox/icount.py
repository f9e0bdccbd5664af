"""Exact retired-instruction counts for a Unicorn run that stopped early.

Unicorn counts instructions only when `emu_start` is given a `count` (its internal code
hook, `uc->emu_counter`), and does not report the count when a hook stops the run before
the limit (no uc_ctl for it in 2.1.4). The counter sits next to the limit (`emu_count`,
which holds the `count` argument) inside the engine's `uc_struct`. This module finds that
field once per process by running a calibration guest with a distinctive limit, then reads
the counter with ctypes. If calibration fails, counts are None and the sandbox says so.
"""

from __future__ import annotations

import ctypes
import struct

from unicorn import UC_ARCH_ARM64, UC_HOOK_INTR, UC_MODE_ARM, Uc

_MAGIC = 0x5A17C0DE1234567
UNBOUNDED = 1 << 62  # a count limit for a run that must count but has no budget
_offset: int | None = None
_calibrated = False


def _handle_address(uc: Uc) -> int:
    h = uc._uch  # the engine handle (uc_engine *), a ctypes c_void_p
    return int(h.value if hasattr(h, "value") else ctypes.cast(h, ctypes.c_void_p).value)


def _calibrate() -> int | None:
    base = 0x10000
    uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
    uc.mem_map(base, 0x1000)
    uc.mem_write(base, bytes.fromhex("1f2003d5") * 37 + bytes.fromhex("010000d4"))  # 37 nops; svc #0
    uc.hook_add(UC_HOOK_INTR, lambda u, i, d: u.emu_stop())
    uc.emu_start(base, 0, count=_MAGIC)
    addr = _handle_address(uc)
    raw = ctypes.string_at(addr, 0x4000)
    off = raw.find(struct.pack("<Q", _MAGIC))
    if off < 8 or struct.unpack_from("<Q", raw, off - 8)[0] != 38:
        return None
    # Confirm with a second, count-limited run.
    uc.emu_start(base, 0, count=5)
    if struct.unpack("<Q", ctypes.string_at(addr + off - 8, 8))[0] != 6:
        return None
    return off - 8


def counter_offset() -> int | None:
    global _offset, _calibrated
    if not _calibrated:
        try:
            _offset = _calibrate()
        except Exception:  # pragma: no cover - defensive: an engine we cannot read
            _offset = None
        _calibrated = True
    return _offset


def started_instructions(uc: Uc) -> int | None:
    """Instructions the last count-limited `emu_start` began (the engine's emu_counter).
    A run stopped by its own limit reports limit + 1 (the hook of the first instruction
    over the limit stops it); callers clamp to the limit."""
    off = counter_offset()
    if off is None:
        return None
    return struct.unpack("<Q", ctypes.string_at(_handle_address(uc) + off, 8))[0]


def _field(uc: Uc, delta: int) -> "ctypes.c_uint64 | None":
    off = counter_offset()
    if off is None:
        return None
    return ctypes.c_uint64.from_address(_handle_address(uc) + off + delta)


def run_limit(uc: Uc) -> int | None:
    """The instruction limit of the current (or last) count-limited run (`emu_count`),
    including any change made by `set_limit` during it."""
    f = _field(uc, 8)
    return None if f is None else f.value


def set_limit(uc: Uc, limit: int) -> bool:
    """Change the limit of the count-limited run in progress: it stops before starting
    instruction `limit + 1`. Lets a hook or a device callback end the run at an exact
    instruction boundary (emu_stop only takes effect at the end of the translation block)."""
    f = _field(uc, 8)
    if f is None:
        return False
    f.value = max(0, limit)
    return True


def stop_before_next(uc: Uc) -> bool:
    """From inside a count-limited run: stop before the next instruction starts."""
    started = started_instructions(uc)
    return started is not None and set_limit(uc, started)


def counter(uc: Uc) -> "ctypes.c_uint64 | None":
    """The engine's emu_counter as a ctypes view (read `.value`: no call, no copy), for hot
    paths that read it often; None if calibration failed."""
    return _field(uc, 0)


def limit_view(uc: Uc) -> "ctypes.c_uint64 | None":
    """The engine's emu_count (the run's limit) as a ctypes view, as `counter`."""
    return _field(uc, 8)
