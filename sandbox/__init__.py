"""sandbox: run real AArch64 guest code on Unicorn and do to it what a KVM host does."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Names are imported on first use (PEP 562): `import sandbox.pytest_plugin`, which pytest does
# in every run of an environment where the sandbox is installed, must not load Unicorn,
# keystone and capstone (about 0.25 s).
_EXPORTS = {
    "AsmError": ".asm", "Program": ".asm", "assemble": ".asm", "assemble_file": ".asm",
    "Exit": ".exits", "ExceptionRecord": ".firmware", "Cap": ".kvm", "ExitReason": ".kvm",
    "SystemEventType": ".kvm", "Vcpu": ".vcpu", "Vm": ".vm",
}

if TYPE_CHECKING:
    from .asm import AsmError, Program, assemble, assemble_file
    from .exits import Exit
    from .firmware import ExceptionRecord
    from .kvm import Cap, ExitReason, SystemEventType
    from .vcpu import Vcpu
    from .vm import Vm

__all__ = ["AsmError", "Cap", "ExceptionRecord", "Exit", "ExitReason", "Program", "SystemEventType",
           "Vcpu", "Vm", "assemble", "assemble_file"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
