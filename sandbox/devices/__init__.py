"""Device models: Python objects with `read(offset, size)` / `write(offset, size, value)`,
registered on the Vm's MMIO map with `Vm.add_device` (kvmtool's one-callback-per-device
habit). Each device is a small module here."""

from .pl011 import PL011

__all__ = ["PL011"]
