"""Instruction breakpoints: stop a vCPU with KVM_EXIT_DEBUG before an instruction executes.

Like a KVM_SET_GUEST_DEBUG hardware breakpoint: the exit reports the breakpoint address as
PC and the instruction there has not executed. A breakpoint is one code hook on one address,
present only while armed (Unicorn compiles code hooks into translations, so arming drops
that address's cached translation). Arm and disarm outside a run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from unicorn import UC_HOOK_CODE

from .exits import Exit
from .kvm import ExitReason

if TYPE_CHECKING:
    from .vcpu import Vcpu


class Breakpoint:
    def __init__(self, vcpu: "Vcpu", address: int, *, hits: int = 1,
                 condition: Callable[[], bool] | None = None):
        """Stop at the `hits`-th execution of `address` for which `condition()` is true. If
        the vCPU already stands at `address` when armed, that instruction does not count:
        the breakpoint waits for the next time it is reached."""
        self.vcpu = vcpu
        self.address = address
        self.hits = hits
        self.condition = condition
        self.seen = 0
        self.fired = False
        self._hook: int | None = None
        self._skip_current = False

    def arm(self) -> None:
        if self._hook is None:
            v = self.vcpu
            self._skip_current = v.reg("pc") == self.address
            self._hook = v.uc.hook_add(UC_HOOK_CODE, self._on_code, None, self.address, self.address)
            v.uc.ctl_remove_cache(self.address, self.address + 4)

    def disarm(self) -> None:
        if self._hook is not None:
            self.vcpu.uc.hook_del(self._hook)
            self._hook = None
            self.vcpu.uc.ctl_remove_cache(self.address, self.address + 4)

    def _on_code(self, uc: object, address: int, size: int, _ud: object) -> None:
        v = self.vcpu
        try:
            if self.fired or v.replaying_access:
                return
            if self._skip_current:
                self._skip_current = False
                return
            if self.condition is not None and not self.condition():
                return
            self.seen += 1
            if self.seen >= self.hits:
                self.fired = True
                v._stop_with(Exit(ExitReason.DEBUG, address))
        except Exception:
            v._host_error(f"breakpoint at {self.address:#x}")
