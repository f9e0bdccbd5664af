"""The machine's system counter, one for the whole Vm, on deterministic time.

An Arm system has one system counter that every PE's generic timer reads (Arm ARM D11.1.2,
"The system counter": CNTPCT_EL0 of each PE is its value). Here it counts guest
instructions: it advances by TICKS_PER_INSTRUCTION for every instruction retired by *any*
vCPU. `Vm.run()` runs the vCPUs one at a time (sandbox/smp.py), so this sum is a single
monotonic time all vCPUs agree on: a vCPU that reads the counter after seeing another
vCPU's store never reads a value older than the one the writer read before the store. This
is QEMU's -icount with its single-threaded round-robin TCG (one instruction counter for
all vCPUs, cpus-common/icount-common.c); so N busy vCPUs share CNTFRQ_HZ /
TICKS_PER_INSTRUCTION instructions per second of guest time between them.

Idle: when every powered-on vCPU waits in WFI, time jumps to the next timer deadline of any
of them (QEMU's -icount sleep=off, icount_warp_rt) instead of passing instruction by
instruction; while one vCPU runs, the others' time passes with its instructions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import icount

if TYPE_CHECKING:
    import ctypes

    from .vcpu import Vcpu
    from .vm import Vm

CNTFRQ_HZ = 62_500_000  # QEMU's GTIMER_SCALE (16 ns) frequency, Unicorn's CNTFRQ_EL0 reset value
TICKS_PER_INSTRUCTION = 1  # one tick for each instruction any vCPU retires
MASK64 = 0xFFFFFFFFFFFFFFFF


class SystemCounter:
    """The count every vCPU's CNTPCT_EL0 reads (before its CNTVOFF_EL2)."""

    def __init__(self, vm: "Vm"):
        self.vm = vm
        self.base = 0  # the count when no vCPU had retired anything (idle jumps, restores)
        self._views: dict[int, "ctypes.c_uint64 | None"] = {}  # vCPU index -> its engine counter

    def _in_flight(self, v: "Vcpu") -> int:
        """Instructions of the vCPU's current run that have retired but are not yet in
        `v.instructions` (the run loop adds them when the engine returns)."""
        if not (v._in_emulation and v._counting):
            return 0
        view = self._views.get(v.index)
        if view is None:
            view = self._views[v.index] = icount.counter(v.uc)
        started = view.value if view is not None else icount.started_instructions(v.uc)
        # The instruction reading the counter has started, not retired.
        return started - 1 if started else 0

    def retired(self) -> int:
        """Instructions retired by all vCPUs, also from inside a run."""
        return sum(v.instructions + self._in_flight(v) for v in self.vm.vcpus)

    def count(self) -> int:
        """The system count now: between runs, or the value the instruction being executed
        reads."""
        return (self.base + self.retired() * TICKS_PER_INSTRUCTION) & MASK64

    def advance(self, ticks: int) -> None:
        """Let `ticks` pass with no instruction retiring (every vCPU idle)."""
        self.base += ticks

    def set(self, count: int) -> None:
        """Make the counter read `count` now (a restored snapshot)."""
        self.base = (count - self.retired() * TICKS_PER_INSTRUCTION) & MASK64

    def idle_until_event(self, vcpus: "list[Vcpu]", wake: "Vcpu | None") -> bool:
        """Every vCPU in `vcpus` waits in WFI: jump the count to their next timer deadline,
        again and again, until one of them has something that wakes it (`wake` itself when
        given). False when no timer among them is armed (or `wake` stays asleep while another
        woke: its turn comes first)."""
        timers = [v.timer for v in vcpus if v.timer is not None]
        while True:
            ticks = min((t for t in (timer.ticks_to_event() for timer in timers) if t is not None), default=None)
            if ticks is None:
                return False
            self.advance(ticks)
            for timer in timers:
                timer.update()
            if wake is not None and wake._wakeup_pending():
                return True
            if any(v is not wake and v._wakeup_pending() for v in vcpus):
                return wake is None
