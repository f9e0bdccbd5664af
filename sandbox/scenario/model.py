"""A parsed scenario file: plain data, addresses still as `Ref`s until the firmware is built."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from ..kvm import Cap
from ..ras.hest import Notification
from .fields import Ref
from .positions import Path

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Source:
    """Where the reproduced report comes from (scenarios/ras/ headers)."""

    project: str
    reference: str  # commit id, lore message id, or issue or thread URL
    title: str
    what: str  # one line: what went wrong


@dataclass(frozen=True)
class Machine:
    ram: tuple[tuple[int, int], ...]
    vcpus: int
    ras: bool
    unbacked: str
    quirks: tuple[str, ...]
    offer: tuple[Cap, ...]
    withhold: tuple[Cap, ...]
    enable: tuple[Cap, ...]
    uart: bool
    storm_threshold: int
    gic: bool = False  # a GICv2 at QEMU virt's addresses (sandbox.devices.gic.GicV2.create)


@dataclass(frozen=True)
class Firmware:
    base: int
    entry: Ref
    files: tuple[FsPath, ...]
    source: str | None
    source_line: int  # line of the inline source's first line in the scenario file
    defines: dict[str, int]


@dataclass(frozen=True)
class Device:
    kind: str
    name: str
    base: int
    size: int
    args: dict[str, Any]
    path: Path


@dataclass(frozen=True)
class Poison:
    address: Ref
    size: int


@dataclass(frozen=True)
class FirmwareFirstSpec:
    base: Ref
    sources: tuple[tuple[int, Notification, int], ...]


@dataclass(frozen=True)
class Limits:
    max_instructions: int | None
    timeout: float
    max_exits: int
    count_instructions: bool


@dataclass(frozen=True)
class TriggerCall:
    name: str
    args: Any
    count: int
    path: Path


@dataclass(frozen=True)
class ActionCall:
    name: str
    args: Any
    path: Path


@dataclass(frozen=True)
class Step:
    index: int
    name: str
    vcpu: int
    trigger: TriggerCall | None
    actions: tuple[ActionCall, ...]
    optional: bool
    path: Path

    def describe(self) -> str:
        label = self.name or f"steps[{self.index}]"
        if self.trigger is None:
            return f"{label} (immediately)"
        return f"{label} (when {self.trigger.name})"


@dataclass
class Variant:
    name: str
    description: str
    quirks: tuple[str, ...]
    defines: dict[str, int]
    expect: Any  # sandbox.scenario.expect.Expect
    path: Path
    program: Any = None  # the assembled firmware (sandbox.asm.Program), set when loaded


@dataclass
class ScenarioSpec:
    file: FsPath
    purpose: str
    source: Source | None
    machine: Machine
    firmware: Firmware
    devices: tuple[Device, ...]
    poison: tuple[Poison, ...]
    firmware_first: FirmwareFirstSpec | None
    limits: Limits
    steps: tuple[Step, ...]
    variants: list[Variant] = field(default_factory=list)
    sections: dict[str, Any] = field(default_factory=dict)  # registered extra tables (scenario.sections)
