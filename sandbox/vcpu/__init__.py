"""One vCPU = one Unicorn instance (sandbox/vcpu/core.py and the mixins beside it)."""

from .core import Vcpu
from .registers import RESET_PSTATE
from .run_loop import DEFAULT_TIME_BUDGET

__all__ = ["DEFAULT_TIME_BUDGET", "RESET_PSTATE", "Vcpu"]
