"""Guest-physical memory: RAM held in host buffers (shared by every vCPU) and the MMIO map.

RAM regions are anonymous host mappings; each vCPU maps the same host pages into its own
Unicorn instance with `mem_map_ptr`, so all vCPUs and the host see one memory. Errors are
the ones KVM_SET_USER_MEMORY_REGION would give (EINVAL, EEXIST, ENOMEM).
"""

from __future__ import annotations

import ctypes
import mmap
from dataclasses import dataclass
from typing import Protocol

from .kvm import EEXIST, EFAULT, EINVAL, ENOMEM, kvm_error

PAGE_SIZE = 0x1000
PHYS_ADDR_LIMIT = 1 << 48  # Unicorn's 'max' CPU: 48-bit physical addresses (PARange 0b0101)
DEFAULT_MAX_RAM = 4 << 30


class MmioDevice(Protocol):
    """A device model: `read` returns the value of a `size`-byte access at `offset` inside
    the device's window; `write` receives one. Accesses of 1, 2 and 4 bytes arrive as they
    are; an 8-byte access (or a pair) arrives as 4-byte accesses, lower address first, as
    QEMU splits accesses for a device whose MemoryRegionOps allow at most 32 bits (Unicorn's
    mmio_map regions do)."""

    def read(self, offset: int, size: int) -> int: ...

    def write(self, offset: int, size: int, value: int) -> None: ...


@dataclass
class RamRegion:
    base: int
    size: int
    buffer: mmap.mmap
    host_address: int

    @property
    def end(self) -> int:
        return self.base + self.size


@dataclass
class MmioRegion:
    base: int
    size: int
    device: MmioDevice
    name: str

    @property
    def end(self) -> int:
        return self.base + self.size


class MemoryMap:
    def __init__(self, max_ram: int = DEFAULT_MAX_RAM):
        self.max_ram = max_ram
        self.ram: list[RamRegion] = []
        self.mmio: list[MmioRegion] = []

    def _check_range(self, base: int, size: int, what: str) -> None:
        if size <= 0 or base < 0 or base % PAGE_SIZE or size % PAGE_SIZE:
            raise kvm_error(EINVAL, f"{what} [{base:#x}, +{size:#x}) must be page-aligned and non-empty")
        if base + size > PHYS_ADDR_LIMIT:
            raise kvm_error(EINVAL, f"{what} [{base:#x}, +{size:#x}) is beyond the 48-bit physical address space")
        for r in [*self.ram, *self.mmio]:
            if base < r.end and r.base < base + size:
                raise kvm_error(EEXIST, f"{what} [{base:#x}, {base + size:#x}) overlaps "
                                        f"[{r.base:#x}, {r.end:#x})")

    def add_ram(self, base: int, size: int) -> RamRegion:
        self._check_range(base, size, "RAM")
        total = sum(r.size for r in self.ram) + size
        if total > self.max_ram:
            raise kvm_error(ENOMEM, f"RAM of {total:#x} bytes exceeds this Vm's limit of {self.max_ram:#x}")
        try:
            buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0))
        except OSError as e:
            raise kvm_error(ENOMEM, f"cannot allocate {size:#x} bytes of guest RAM: {e.strerror}") from None
        host = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        region = RamRegion(base, size, buf, host)
        self.ram.append(region)
        return region

    def add_mmio(self, base: int, size: int, device: MmioDevice, name: str) -> MmioRegion:
        self._check_range(base, size, f"MMIO region {name!r}")
        region = MmioRegion(base, size, device, name)
        self.mmio.append(region)
        return region

    def ram_at(self, address: int) -> RamRegion | None:
        for r in self.ram:
            if r.base <= address < r.end:
                return r
        return None

    def mmio_at(self, address: int) -> MmioRegion | None:
        for r in self.mmio:
            if r.base <= address < r.end:
                return r
        return None

    def _span(self, address: int, size: int) -> tuple[RamRegion, int]:
        r = self.ram_at(address)
        if r is None or address + size > r.end:
            raise kvm_error(EFAULT, f"[{address:#x}, +{size:#x}) is not inside one RAM region")
        return r, address - r.base

    def read(self, address: int, size: int) -> bytes:
        r, off = self._span(address, size)
        return bytes(r.buffer[off:off + size])

    def write(self, address: int, data: bytes) -> None:
        r, off = self._span(address, len(data))
        r.buffer[off:off + len(data)] = data
