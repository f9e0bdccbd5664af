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
                 condition: Callable[[], bool] | None = None, include_current: bool = False):
        """Stop at the `hits`-th execution of `address` for which `condition()` is true. If
        the vCPU already stands at `address` when armed, that instruction does not count:
        the breakpoint waits for the next time it is reached (unless `include_current`: then
        it stops before that very instruction, e.g. where the host just put the PC)."""
        self.vcpu = vcpu
        self.address = address
        self.hits = hits
        self.condition = condition
        self.include_current = include_current
        self.seen = 0
        self.fired = False
        self._hook: int | None = None
        self._skip_current = False

    def arm(self) -> None:
        if self._hook is None:
            v, address = self.vcpu, self.address
            self._skip_current = not self.include_current and v.reg("pc") == address
            # Hooks on one address run in the order they were added, and one that stops the
            # run skips the rest: the breakpoint must run before the hooks that model the
            # instruction (the SError gate's daifclr/esb site, the ERET check), so those are
            # added again after it.
            gate_site = v.serror._site_hooks.pop(address, None)
            eret_site = v._eret_hooks.pop(address, None)
            for hook in (gate_site, eret_site):
                if hook is not None:
                    v.raw_hooks.delete(hook)
            self._hook = v.uc.hook_add(UC_HOOK_CODE, self._on_code, None, address, address)
            if gate_site is not None:
                v.serror.watch(address)
            if eret_site is not None:
                v.watch_eret(address)
            v.uc.ctl_remove_cache(address, address + 4)

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
