"""Extra top-level tables of a scenario file, registered by other parts of the sandbox.

    [fuzz]                      # sandbox.fuzz: sweep range, event kinds, invariants
    from = "el0_task"

A `SectionSpec` parses its table when the file is loaded (errors name file, line and field
like every other table), watches each run it is part of (`observe` is called for every Vm
the run uses, including the fresh one after a snapshot restore) and adds its own mismatches
and observations to the verdict (`judge`). A file without the table gets no call at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .fields import Node

if TYPE_CHECKING:
    from ..vm import Vm
    from .expect import Mismatch
    from .runner import ScenarioRun


@dataclass(frozen=True)
class SectionSpec:
    name: str
    summary: str
    parse: Callable[[Node], Any]  # the table -> the section's value (kept in spec.sections)
    observe: Callable[["ScenarioRun", Any, "Vm"], None]  # attach observers to a run's Vm
    judge: Callable[["ScenarioRun", Any, dict[str, Any]], "list[Mismatch]"]  # (run, value, observed)


SECTIONS: dict[str, SectionSpec] = {}
# Modules that register a section, imported when the first file is loaded (they import the
# scenario package themselves, so they cannot be imported from it at start-up).
BUILTIN_SECTIONS = ("sandbox.fuzz.section",)


def load_builtin_sections() -> None:
    import importlib
    for module in BUILTIN_SECTIONS:
        importlib.import_module(module)


def register_section(spec: SectionSpec) -> None:
    if spec.name in SECTIONS:
        raise ValueError(f"section {spec.name!r} is already registered")
    SECTIONS[spec.name] = spec
