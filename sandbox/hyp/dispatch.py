"""SMCCC dispatch by function ID: one entry point for every HVC/SMC the guest makes.

Order (what KVM does, arch/arm64/kvm/hypercalls.c kvm_smccc_call_handler): a non-zero
immediate is not an SMCCC call (SMCCC 2.9: NOT_SUPPORTED); the host's SMCCC filter may deny
the function or forward it to the host (KVM_EXIT_HYPERCALL); otherwise the service that owns
the function ID answers, on the conduit the Vm assigned it. A service answers on one conduit
only (HVC by default, as KVM): on the other the call gets NOT_SUPPORTED, as on a platform
with one conduit. The Arm Architecture calls (SMCCC_VERSION, SMCCC_ARCH_FEATURES) answer on
both. Unknown function IDs get NOT_SUPPORTED (-1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from ..exits import Exit, HypercallExit, KVM_HYPERCALL_EXIT_SMC
from ..kvm import EBUSY, EINVAL, Cap, ExitReason, kvm_error
from . import smccc
from .filter import FilterAction, KvmSmcccFilter, SmcccFilter
from .power import VcpuPower
from .psci import Psci
from .result import CallResult, GuestContext, ResumeEntry
from .sdei import Sdei
from .smccc import Conduit

if TYPE_CHECKING:
    from ..vcpu import Vcpu
    from ..vm import Vm

__all__ = ["CallResult", "GuestContext", "Hypervisor", "ResumeEntry"]

Handler = Callable[["Vcpu", Any], "int | CallResult"]
STATE_VERSION = 1  # of the snapshot section Hypervisor.state() writes


_CONDUIT_NAMES = tuple(c.name for c in Conduit)  # by conduit number (the notify runs per call)


class Hypervisor:
    def __init__(self, vm: "Vm", psci_conduit: Conduit = Conduit.HVC, sdei_conduit: Conduit = Conduit.HVC):
        self.vm = vm
        self._conduits = {"psci": Conduit(psci_conduit), "sdei": Conduit(sdei_conduit)}
        self.filter = SmcccFilter()
        self.power = VcpuPower()
        self.psci = Psci(vm)
        self.sdei = Sdei(vm)
        self._tables: list[dict[int, Handler]] | None = None

    # -- configuration -------------------------------------------------------------------------

    @property
    def psci_conduit(self) -> Conduit:
        return self._conduits["psci"]

    @property
    def sdei_conduit(self) -> Conduit:
        return self._conduits["sdei"]

    def set_conduit(self, service: str, conduit: Conduit) -> None:
        """Choose the conduit `service` ("psci" or "sdei") answers on (before a vCPU runs)."""
        if service not in self._conduits:
            raise kvm_error(EINVAL, f"no service {service!r}; services are {', '.join(self._conduits)}")
        if self.power.has_run:
            raise kvm_error(EBUSY, "conduits are fixed once a vCPU has run")
        self._conduits[service] = Conduit(conduit)
        self._tables = None

    def set_smccc_filter(self, f: "KvmSmcccFilter | bytes") -> None:
        """KVM_ARM_VM_SMCCC_FILTER (see hyp/filter.py)."""
        self.filter.set(f, vm_has_run=self.power.has_run)

    def add_vcpu(self, vcpu: "Vcpu") -> None:
        self.power.add(vcpu)
        self.sdei.add_pe(vcpu)

    def _build_tables(self) -> list[dict[int, Handler]]:
        arch: dict[int, Handler] = {smccc.SMCCC_VERSION: lambda v, a: smccc.SMCCC_VERSION_1_1,
                                    smccc.SMCCC_ARCH_FEATURES: _arch_features}
        tables: list[dict[int, Handler]] = [dict(arch), dict(arch)]
        tables[self.psci_conduit].update(self.psci.handlers)
        if self.vm.check_extension(Cap.ARM_SDEI):
            tables[self.sdei_conduit].update(self.sdei.handlers)
        self._tables = tables
        return tables

    # -- the call ------------------------------------------------------------------------------

    def call(self, vcpu: "Vcpu", conduit: int, regs: Any, pc: int, imm: int) -> "int | CallResult":
        """Answer one call: `regs` holds x0..x6 (indexable from 0), `pc` is the address past
        the instruction; the answer is x0 alone, or a CallResult. Kept short: it runs for
        every HVC/SMC."""
        if imm or self.filter.ranges_set:
            result = self._unusual(vcpu, conduit, regs, pc, imm)
        else:
            handler = (self._tables or self._build_tables())[conduit].get(regs[0] & 0xFFFFFFFF)
            result = smccc.NOT_SUPPORTED if handler is None else handler(vcpu, regs)
        if self.vm.observers:
            results = (result,) if isinstance(result, int) else (result.regs or None)
            fid = regs[0] & 0xFFFFFFFF
            self.vm.notify("hypercall", vcpu, pc, conduit=_CONDUIT_NAMES[conduit], function_id=fid,
                           function=smccc.describe_function(fid), args=tuple(regs[1:7]), results=results)
        return result

    def _unusual(self, vcpu: "Vcpu", conduit: int, regs: Any, pc: int, imm: int) -> "int | CallResult":
        """A non-zero immediate (SMCCC 2.9: not an SMCCC call), or the host's filter."""
        fid = regs[0] & 0xFFFFFFFF
        if imm:
            return smccc.NOT_SUPPORTED
        action = self.filter.action(fid)
        if action is FilterAction.DENY:
            return smccc.NOT_SUPPORTED
        if action is FilterAction.FWD_TO_USER:
            return _forward(conduit, regs, pc, fid, imm)
        handler = (self._tables or self._build_tables())[conduit].get(fid)
        return smccc.NOT_SUPPORTED if handler is None else handler(vcpu, regs)

    # -- snapshots -------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        pending = []
        for v in self.vm.vcpus:
            ex = v._hypercall_pending
            pending.append(None if ex is None or ex.hypercall is None else {
                "pc": ex.pc, "nr": ex.hypercall.nr, "args": list(ex.hypercall.args), "flags": ex.hypercall.flags,
                "immediate": ex.hypercall.immediate, "ret": [int(r) for r in ex.hypercall.ret]})
        return {"version": STATE_VERSION, "conduits": {k: int(c) for k, c in self._conduits.items()},
                "filter": self.filter.state(), "power": self.power.save(), "has_run": self.power.has_run,
                "hypercall_pending": pending, "sdei": self.sdei.state(), "scheduler": self.vm.scheduler.state()}

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise kvm_error(EINVAL, f"hypervisor state version {state.get('version')}; this sandbox reads "
                                    f"{STATE_VERSION}")
        self._conduits = {k: Conduit(c) for k, c in state["conduits"].items()}
        self._tables = None
        self.filter.restore(state["filter"])
        self.power.restore(state["power"])
        self.power.has_run = state["has_run"]
        for v, p in zip(self.vm.vcpus, state["hypercall_pending"]):
            if p is not None:
                v._hypercall_pending = Exit(ExitReason.HYPERCALL, p["pc"], hypercall=HypercallExit(
                    p["nr"], tuple(p["args"]), p["flags"], p["immediate"], list(p["ret"])), vcpu=v.index)
        self.sdei.restore(state["sdei"])
        self.vm.scheduler.restore(state["scheduler"])


def _arch_features(vcpu: "Vcpu", a: Any) -> int:
    """SMCCC_ARCH_FEATURES(function ID) (SMCCC 7.3): 0 for the two Arm Architecture calls
    implemented here; NOT_SUPPORTED for the rest (no SMCCC_ARCH_WORKAROUND_* is needed on
    an emulated CPU)."""
    return 0 if (a[1] & 0xFFFFFFFF) in (smccc.SMCCC_VERSION, smccc.SMCCC_ARCH_FEATURES) else smccc.NOT_SUPPORTED


def _forward(conduit: int, regs: Any, pc: int, fid: int, imm: int) -> CallResult:
    """KVM_EXIT_HYPERCALL for a filtered call: nr = function ID, args = x1..x6, flags say
    the conduit (api.rst 5. kvm_run: hypercall); ret starts as the current x0..x3, so a
    host that sets nothing leaves the registers as they were, as in KVM."""
    flags = KVM_HYPERCALL_EXIT_SMC if conduit == Conduit.SMC else 0
    hc = HypercallExit(fid, tuple(regs[1:7]), flags, imm, [regs[0], regs[1], regs[2], regs[3]])
    return CallResult(exit=Exit(ExitReason.HYPERCALL, pc, hypercall=hc))
