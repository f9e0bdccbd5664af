"""Guest memory as the guest's code sees it: virtual addresses, through its own page tables.

Semihosting parameter blocks and gdb memory requests carry virtual addresses; guest RAM is
indexed by physical ones. These helpers translate page by page (the guest's stage-1 tables
when SCTLR_EL1.M is set) and touch RAM only: device registers are never read or written
behind the guest's back (a read of a UART data register would consume input). Failures are
OSError(EFAULT), as a bad user pointer is for an ioctl.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .kvm import EFAULT, kvm_error

if TYPE_CHECKING:
    from .vcpu import Vcpu

_PAGE = 0x1000


def to_physical(vcpu: "Vcpu", va: int) -> int | None:
    """The guest-physical address of virtual address `va` on `vcpu`, or None if unmapped
    (the guest's stage-1 tables: Vcpu.translate, sandbox.arch.mmu)."""
    return vcpu.translate(va)


def _pieces(vcpu: "Vcpu", va: int, size: int):
    """(physical address, length) for each page-sized piece of [va, va + size)."""
    while size > 0:
        n = min(size, _PAGE - (va & (_PAGE - 1)))
        pa = to_physical(vcpu, va)
        if pa is None or vcpu.vm.memory.ram_at(pa) is None:
            raise kvm_error(EFAULT, f"guest address {va:#x} is not mapped to RAM")
        yield pa, n
        va, size = va + n, size - n


def read_virtual(vcpu: "Vcpu", va: int, size: int) -> bytes:
    return b"".join(vcpu.vm.memory.read(pa, n) for pa, n in _pieces(vcpu, va, size))


def write_virtual(vcpu: "Vcpu", va: int, data: bytes) -> None:
    """Write guest memory; cached translations of the bytes are dropped in every vCPU."""
    pieces = list(_pieces(vcpu, va, len(data)))  # check the whole range before writing
    done = 0
    for pa, n in pieces:
        vcpu.vm.write_memory(pa, data[done:done + n])
        done += n


def read_u64s(vcpu: "Vcpu", va: int, count: int) -> list[int]:
    raw = read_virtual(vcpu, va, 8 * count)
    return [int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 8)]


def read_cstring(vcpu: "Vcpu", va: int, limit: int) -> bytes:
    """The NUL-terminated string at `va` (without the NUL), at most `limit` bytes long."""
    start, out = va, bytearray()
    while len(out) < limit:
        n = min(limit - len(out), _PAGE - (va & (_PAGE - 1)))
        chunk = read_virtual(vcpu, va, n)
        end = chunk.find(0)
        if end >= 0:
            return bytes(out + chunk[:end])
        out += chunk
        va += n
    raise kvm_error(EFAULT, f"string at {start:#x} is longer than {limit} bytes")
