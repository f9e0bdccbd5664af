"""Starting a loaded image the way a bootloader does (Linux Documentation/arch/arm64/booting.rst):
the device tree in RAM, the boot CPU at the image's entry in EL1h with the MMU and caches
off and D, A, I, F masked, x0 = the device tree's physical address, x1 = x2 = x3 = 0.
Secondary vCPUs stay off until the guest starts them with PSCI CPU_ON.

`start()` is the whole of `sandbox boot` as a Python API: a virt machine with N vCPUs, the
image (Linux `Image` by its header, else flat), the device tree, and a `BootedMachine`
whose `run()` runs every powered-on vCPU through `Vm.run()`."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from . import devicetree
from .hyp.smccc import Conduit
from .loaders.flat import load_flat
from .loaders.image import is_linux_image, load_linux_image
from .memmap import DTB_ALIGN, DTB_MAX_SIZE, FLAT_LOAD_ADDRESS
from .smp import DEFAULT_QUANTUM, DEFAULT_TIME_BUDGET
from .vcpu import RESET_PSTATE
from .virt import DEFAULT_RAM_SIZE, create_vm

if TYPE_CHECKING:
    from .exits import Exit
    from .loaders import LoadedImage
    from .vm import Vm

FDT_MAGIC = 0xD00DFEED
SZ_2M = 2 << 20


class DtbError(ValueError):
    """A device tree blob that cannot be handed to the guest."""


def check_dtb(dtb: bytes, name: str = "dtb") -> None:
    if len(dtb) < 40:
        raise DtbError(f"{name}: {len(dtb)} bytes is too short for a flattened device tree header")
    magic, totalsize = struct.unpack_from(">II", dtb)
    if magic != FDT_MAGIC:
        raise DtbError(f"{name}: magic is {magic:#010x}, not 0xd00dfeed: not a device tree blob")
    if totalsize != len(dtb):
        raise DtbError(f"{name}: header totalsize {totalsize:#x} but the file has {len(dtb):#x} bytes")
    if totalsize > DTB_MAX_SIZE:
        raise DtbError(f"{name}: {totalsize:#x} bytes; booting.rst allows at most 2 MiB")


def dtb_address(vm: "Vm", image: "LoadedImage", size: int) -> int:
    """Where the device tree goes: the start of RAM when it fits below the image (QEMU's
    place for it), else the first 2 MiB boundary above the image."""
    ram = min(vm.memory.ram, key=lambda r: r.base)
    start = -(-ram.base // DTB_ALIGN) * DTB_ALIGN
    if start + size <= image.base or start >= image.end:
        return start
    above = -(-image.end // SZ_2M) * SZ_2M
    r = vm.memory.ram_at(above)
    if r is None or above + size > r.end:
        raise DtbError(f"no room for a {size:#x}-byte device tree in RAM next to the image")
    return above


def boot(vm: "Vm", image: "LoadedImage", *, bootargs: str = "", dtb: bytes | None = None,
         vcpu: int = 0) -> int:
    """Put the device tree (generated from `vm` unless given) in RAM and set vCPU `vcpu`
    up to enter `image`. Returns the device tree's address (the x0 the guest gets)."""
    blob = devicetree.generate(vm, bootargs) if dtb is None else bytes(dtb)
    check_dtb(blob)
    address = dtb_address(vm, image, len(blob))
    vm.write_memory(address, blob)
    cpu = vm.vcpus[vcpu]
    cpu.set_regs({"pstate": RESET_PSTATE, "pc": image.entry, "x0": address, "x1": 0, "x2": 0, "x3": 0})
    return address


@dataclass
class BootedMachine:
    """A virt machine with its image loaded and vCPU 0 at the entry point."""

    vm: "Vm"
    image: "LoadedImage"
    dtb_address: int  # the x0 vCPU 0 starts with

    def run(self, *, max_instructions: int | None = None, timeout: float | None = DEFAULT_TIME_BUDGET,
            quantum: int = DEFAULT_QUANTUM) -> "Exit":
        """Run all powered-on vCPUs (`Vm.run`): the secondaries join when the guest starts
        them with PSCI CPU_ON."""
        return self.vm.run(max_instructions=max_instructions, timeout=timeout, quantum=quantum)

    @property
    def instructions(self) -> int:
        """Instructions retired by all vCPUs so far."""
        return sum(v.instructions for v in self.vm.vcpus)

    def dtb(self) -> bytes:
        """The device tree blob the guest was given."""
        size = int.from_bytes(self.vm.read_memory(self.dtb_address + 4, 4), "big")
        return self.vm.read_memory(self.dtb_address, size)


def load_image(vm: "Vm", source: "str | Path | bytes", load_address: int = FLAT_LOAD_ADDRESS) -> "LoadedImage":
    """An arm64 Linux `Image` (or Image.gz), recognised by its header, or else a flat binary
    at `load_address` (QEMU's -kernel rule for images that are not Linux)."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if is_linux_image(data):
        return load_linux_image(vm, source)
    return load_flat(vm, source, load_address)


def start(source: "str | Path | bytes", *, smp: int = 1, ram_size: int = DEFAULT_RAM_SIZE, bootargs: str = "",
          dtb: bytes | None = None, load_address: int = FLAT_LOAD_ADDRESS,
          psci_conduit: Conduit = Conduit.HVC, uart_echo: TextIO | None = None) -> BootedMachine:
    """`sandbox boot` without the terminal: a virt machine with `smp` vCPUs (each in the
    device tree with its MPIDR and enable-method "psci"; all but vCPU 0 off until PSCI
    CPU_ON), `source` loaded and vCPU 0 set up to enter it."""
    vm = create_vm(ram_size=ram_size, smp=smp,
                   psci_conduit=psci_conduit, uart_echo=uart_echo)
    image = load_image(vm, source, load_address)
    if dtb is not None:
        check_dtb(dtb)
    return BootedMachine(vm, image, boot(vm, image, bootargs=bootargs, dtb=dtb))
