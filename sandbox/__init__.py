"""sandbox: run real AArch64 guest code on Unicorn and do to it what a KVM host does."""

from .asm import AsmError, Program, assemble, assemble_file
from .exits import Exit
from .firmware import ExceptionRecord
from .kvm import Cap, ExitReason, SystemEventType
from .vcpu import Vcpu
from .vm import Vm

__all__ = ["AsmError", "Cap", "ExceptionRecord", "Exit", "ExitReason", "Program", "SystemEventType",
           "Vcpu", "Vm", "assemble", "assemble_file"]
