"""`Vm`: guest-physical memory, devices, capabilities, the hypervisor shim and the vCPUs.

A Vm is what a VMM creates with KVM_CREATE_VM: it owns guest RAM (host buffers mapped into
every vCPU), the MMIO map, the capabilities the host can query (`check_extension`) and
enable (`enable_cap`), and the policy for accesses to addresses with nothing behind them.
"""

from __future__ import annotations

from typing import Literal, TextIO

from . import memmap
from .arch import decode
from .asm import Program
from .devices.pl011 import PL011, PL011_BASE, PL011_SIZE
from .firmware import ExceptionRecord, exception_records
from .hyp import Hypervisor
from .hyp.sdei_vmm import SdeiVmm
from .idregs import IdRegisters
from .hyp.smccc import Conduit
from .exits import Exit
from .interrupts import interrupt_line
from .kvm import EBUSY, EEXIST, EINVAL, Cap, kvm_error
from .memory import DEFAULT_MAX_RAM, MemoryMap, MmioDevice
from .observe import Event, Observer
from .poison import PoisonMap
from .quirks import check_quirks
from .semihosting import Semihosting
from .smp import DEFAULT_QUANTUM, DEFAULT_TIME_BUDGET, Scheduler
from .symbols import Symbolizer
from .system_counter import SystemCounter
from .vcpu import Vcpu

RAM_BASE = memmap.RAM_BASE  # QEMU virt's RAM base
DEFAULT_RAM_SIZE = 64 << 20
UnbackedPolicy = Literal["abort", "exit"]
KVM_MAX_VCPUS = 512  # arm64 (Linux arch/arm64/include/asm/kvm_host.h); also KVM_SDEI_MAX_VCPUS


class Vm:
    def __init__(self, *, ram_size: int = DEFAULT_RAM_SIZE, ram_base: int = RAM_BASE,
                 unbacked: UnbackedPolicy = "exit", ras: bool = True,
                 storm_threshold: int = 64, max_ram: int = DEFAULT_MAX_RAM,
                 psci_conduit: Conduit = Conduit.HVC, sdei_conduit: Conduit = Conduit.HVC,
                 uart: bool = True, uart_echo: TextIO | None = None,
                 quirks: "set[str] | frozenset[str] | list[str] | tuple[str, ...]" = (),
                 semihosting: bool = False):
        """`unbacked` chooses what a guest access to an address with no RAM and no device
        does: "exit" (the default, what KVM does) returns KVM_EXIT_MMIO / KVM_EXIT_ARM_NISV to
        the host; "abort" takes a synchronous external abort in the guest (what QEMU's virt
        board does). Instruction fetches from nothing always abort (KVM injects that SEA
        itself: Linux mmu.c kvm_handle_guest_abort). `ras` models a CPU
        with FEAT_RAS (ESB, DISR_EL1, error records, VSESR_EL2-style SError syndromes)."""
        if unbacked not in ("abort", "exit"):
            raise kvm_error(EINVAL, f"unbacked policy must be 'abort' or 'exit', not {unbacked!r}")
        if storm_threshold < 2:
            raise kvm_error(EINVAL, "storm_threshold must be at least 2")
        self.quirks = check_quirks(quirks)  # sandbox.quirks: fixes reverted on purpose
        self.memory = MemoryMap(max_ram)
        self.unbacked_policy: UnbackedPolicy = unbacked
        self.ras = ras
        self.storm_threshold = storm_threshold
        self.hypervisor = Hypervisor(self, psci_conduit, sdei_conduit)  # SMCCC, PSCI, SDEI (sandbox/hyp)
        self.scheduler = Scheduler(self)  # Vm.run (sandbox/smp.py)
        self.system_counter = SystemCounter(self)  # the time every vCPU's generic timer reads
        self.sdei = SdeiVmm(self)  # KVM_ARM_SDEI_COMMAND (sandbox/hyp/sdei_vmm.py)
        self.vcpus: list[Vcpu] = []
        self.caps: dict[Cap, int] = {
            Cap.VCPU_EVENTS: 1,
            Cap.ARM_PSCI: 1,
            Cap.ARM_PSCI_0_2: 1,
            Cap.ARM_INJECT_EXT_DABT: 1,
            Cap.ARM_NISV_TO_USER: 1,
            Cap.ARM_SEA_TO_USER: 1,
            Cap.SET_GUEST_DEBUG: 1,
            Cap.ARM_SDEI: 1,
        }
        if ras:
            self.caps[Cap.ARM_INJECT_SERROR_ESR] = 1
        self.enabled_caps: set[Cap] = set()
        self.id_registers = IdRegisters(self)  # what the guest reads in MIDR/MPIDR/ID_AA64* (sandbox.idregs)
        # `raise_(intid, mpidr)` / `lower(intid, mpidr)`: the GIC (sandbox.devices.gic) once created.
        self.interrupt_controller: object | None = None
        self.observers: list[Observer] = []  # see sandbox.observe
        self.poisoned = PoisonMap()
        self.ghes = None  # sandbox.ras.ghes.FirmwareFirst, when the machine has firmware-first RAS
        self.eret_sites: set[int] = set()
        self.gate_sites: set[int] = set()  # `msr daifclr` with A, and `esb`
        self.symbols = Symbolizer()  # guest symbols from every image loaded (sandbox.symbols)
        # Arm semihosting (HLT #0xF000, sandbox.semihosting): off by default, as in QEMU.
        self.semihosting: Semihosting | None = Semihosting() if semihosting else None
        if ram_size:
            self.add_ram(ram_base, ram_size)
        # QEMU virt's PL011 at 0x09000000: guest output is captured in vm.uart.output.
        self.uart: PL011 | None = None
        if uart:
            self.uart = PL011(echo=uart_echo)
            self.add_device(PL011_BASE, PL011_SIZE, self.uart, "pl011")

    # -- memory and devices ------------------------------------------------------------

    def add_ram(self, base: int, size: int) -> None:
        region = self.memory.add_ram(base, size)
        for v in self.vcpus:
            v._map_ram(region)

    def add_device(self, base: int, size: int, device: MmioDevice, name: str) -> None:
        region = self.memory.add_mmio(base, size, device, name)
        for v in self.vcpus:
            v._map_mmio(region)

    def poison(self, address: int, size: int = 0x1000) -> None:
        """Mark guest-physical bytes as holding an uncorrectable error: a guest load, fetch
        or store there never completes (KVM_EXIT_ARM_SEA with KVM_CAP_ARM_SEA_TO_USER, else an
        injected synchronous external abort). Real hardware usually reports nothing
        synchronous for a store to poison; the sandbox treats stores like loads, on purpose,
        so a scenario sees every touch."""
        self._check_ram_range(address, size)
        before = self.poisoned.pages()
        self.poisoned.add(address, size)
        for v in self.vcpus:
            v.apply_poison(before, self.poisoned.pages())

    def unpoison(self, address: int, size: int = 0x1000) -> None:
        """Repair poisoned bytes (the host replaced the page)."""
        before = self.poisoned.pages()
        self.poisoned.remove(address, size)
        for v in self.vcpus:
            v.apply_poison(before, self.poisoned.pages())

    def _check_ram_range(self, address: int, size: int) -> None:
        r = self.memory.ram_at(address)
        if size <= 0 or r is None or address + size > r.end:
            raise kvm_error(EINVAL, f"[{address:#x}, +{size:#x}) is not guest RAM")

    def read_memory(self, address: int, size: int) -> bytes:
        return self.memory.read(address, size)

    def write_memory(self, address: int, data: bytes) -> None:
        """Write guest RAM from the host. Unicorn's cached translations of that range are
        dropped in every vCPU, so code the host writes is what runs next."""
        self.memory.write(address, data)
        for v in self.vcpus:
            v.uc.ctl_remove_cache(address, address + len(data))

    def load(self, program: Program) -> None:
        """Copy an assembled image into guest RAM at its base address."""
        self.write_memory(program.base, program.code)
        self.note_code(program.base, program.code)
        self.symbols.add_program(program)

    def note_code(self, address: int, code: bytes) -> None:
        """Tell the vCPUs where guest code is: each ERET in it is checked before it runs
        (Unicorn does not raise the Illegal Execution State exception by itself), and the
        instructions that can take or defer a pending SError are found once here."""
        code = bytes(code)
        for off in decode.find_words(code, (decode.ERET, decode.ERETAA, decode.ERETAB)):
            self.eret_sites.add(address + off)
            for v in self.vcpus:
                v.watch_eret(address + off)
        for off in decode.find_words(code, (decode.ESB, *decode.DAIFCLR_A)):
            self.gate_sites.add(address + off)
            for v in self.vcpus:
                v.serror.watch(address + off)
        for v in self.vcpus:
            v.virtual_sites.forget()  # the aliases of the new sites come with the next walk

    def has_quirk(self, name: str) -> bool:
        """Whether this Vm reproduces the bug that quirk `name` names (sandbox.quirks)."""
        return name in self.quirks

    # -- capabilities ------------------------------------------------------------------

    def check_extension(self, cap: int) -> int:
        """KVM_CHECK_EXTENSION: 0 when the capability is not offered."""
        return self.caps.get(cap, 0)  # Cap is an IntEnum: a plain number finds its member

    def set_capability(self, cap: Cap, offered: bool) -> None:
        """Configure what this Vm advertises (a CPU without RAS has no SET_SERROR_ESR)."""
        if self.vcpus:
            raise kvm_error(EBUSY, "capabilities are fixed once a vCPU exists")
        if offered:
            self.caps[cap] = 1
        else:
            self.caps.pop(cap, None)

    def enable_cap(self, cap: Cap) -> None:
        """KVM_ENABLE_CAP for VM capabilities that change behaviour (NISV_TO_USER, SEA_TO_USER)."""
        if not self.check_extension(cap):
            raise kvm_error(EINVAL, f"capability {Cap(cap).name} is not offered")
        self.enabled_caps.add(Cap(cap))

    # -- vCPUs ---------------------------------------------------------------------------

    def create_vcpu(self, mpidr: int | None = None) -> Vcpu:
        """KVM_CREATE_VCPU. MPIDR defaults to Aff0 = the vCPU index."""
        if getattr(self.interrupt_controller, "initialized", False):
            # As KVM after KVM_DEV_ARM_VGIC_CTRL_INIT: the GIC is sized for its vCPUs.
            raise kvm_error(EBUSY, "the interrupt controller is initialized: no more vCPUs")
        index = len(self.vcpus)
        if index >= KVM_MAX_VCPUS:
            raise kvm_error(EINVAL, f"a Vm has at most KVM_MAX_VCPUS = {KVM_MAX_VCPUS} vCPUs")
        mpidr = index if mpidr is None else mpidr
        if any(v.mpidr & 0xFF00FFFFFF == mpidr & 0xFF00FFFFFF for v in self.vcpus):
            raise kvm_error(EEXIST, f"a vCPU with MPIDR affinity {mpidr:#x} exists already")
        vcpu = Vcpu(self, index, mpidr)
        self.vcpus.append(vcpu)
        self.hypervisor.add_vcpu(vcpu)  # power state (vCPU 0 on, the rest off) and SDEI PE state
        return vcpu

    def run(self, *, max_instructions: int | None = None, timeout: float | None = DEFAULT_TIME_BUDGET,
            quantum: int = DEFAULT_QUANTUM) -> Exit:
        """Run every powered-on vCPU, round-robin, `quantum` guest instructions per turn,
        until one needs the host; Exit.vcpu says which (sandbox/smp.py)."""
        return self.scheduler.run(max_instructions=max_instructions, timeout=timeout, quantum=quantum)

    # -- interrupts --------------------------------------------------------------------------

    def raise_interrupt(self, intid: int, mpidr: int | None = None) -> None:
        """Assert interrupt `intid` (GIC numbering: SGI 0-15, PPI 16-31 per vCPU, chosen by
        `mpidr` (None: vCPU 0), SPI 32-1019). An INTID bound to a registered SDEI event is
        SDEI's; anything else goes to `interrupt_controller`; with none, OSError(ENXIO)
        (sandbox/interrupts.py)."""
        interrupt_line(self, intid, mpidr, asserted=True)

    def lower_interrupt(self, intid: int, mpidr: int | None = None) -> None:
        """Deassert `intid` (an SDEI event it made pending and not yet taken is withdrawn)."""
        interrupt_line(self, intid, mpidr, asserted=False)

    # -- the hypercall filter ------------------------------------------------------------------

    def set_smccc_filter(self, base: int, nr_functions: int, action: int) -> None:
        """KVM_ARM_VM_SMCCC_FILTER: `action` (hyp.filter.FilterAction: HANDLE, DENY,
        FWD_TO_USER) for function IDs [base, base + nr_functions). Errors as KVM: EEXIST for
        an overlap (with another range or the Arm Architecture calls), EINVAL for a bad
        range or action, EBUSY once a vCPU has run."""
        from .hyp.filter import KvmSmcccFilter
        self.hypervisor.set_smccc_filter(KvmSmcccFilter(base, nr_functions, action))

    # -- snapshots --------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole Vm as bytes (versioned, checksummed; see sandbox.snapshot)."""
        from . import snapshot
        return snapshot.save(self)

    @staticmethod
    def restore(data: bytes, devices: dict[str, MmioDevice] | None = None) -> "Vm":
        """A fresh Vm continuing exactly where the snapshotted one stopped."""
        from . import snapshot
        return snapshot.load(data, devices)

    # -- the guest library -----------------------------------------------------------------

    def exception_records(self, program: Program, cpu: int = 0) -> list[ExceptionRecord]:
        """What firmware/vectors.S recorded on CPU `cpu` (MPIDR Aff0), oldest first."""
        return exception_records(self, program["exc_ring"], cpu)

    # -- observers ---------------------------------------------------------------------------

    def notify(self, kind: str, vcpu: Vcpu, pc: int, **data: object) -> None:
        """Tell every observer what happened (callers check `self.observers` first, so an
        unobserved Vm builds no events)."""
        event = Event(kind, vcpu.index, pc, data)
        for fn in self.observers:
            fn(event)
