"""Why a run of the vCPU stops: what a hook leaves for the run loop, and the KVM_RUN-style
failure."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

from ..exits import Exit
from ..traps import Trap


class RunFailure(OSError):
    """run() fails the way KVM_RUN does (an errno), not with an exit."""

    def __init__(self, code: int, what: str):
        super().__init__(code, f"{os.strerror(code)}: {what}")


@dataclass
class Stop:
    """Why the hooks stopped Unicorn; handled by the run loop after emu_start returns."""

    exit: Exit | None = None
    trap: Trap | None = None
    # Work hooks left for the run loop (Vcpu.pause_then): (action, instructions to wait first).
    actions: list[tuple[Callable[[], None], int]] = field(default_factory=list)

    @staticmethod
    def replacing(previous: "Stop | None", exit_: Exit | None = None, trap: Trap | None = None) -> "Stop":
        """A stop for `exit_` or `trap` that keeps the actions hooks left before it."""
        return Stop(exit_, trap, previous.actions if previous is not None else [])
