"""Reading a scenario file into a `ScenarioSpec`, with one message per problem.

The file is parsed by tomllib (a syntax error becomes `file:line: ...`), then every table is
read through `fields.Node` (types, unknown keys, choices), then each variant's firmware is
assembled and every address in the file is resolved against its symbols (a missing symbol
names the line that uses it; an assembler error in inline source names the scenario line).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path as FsPath
from typing import Any

from ..asm import AsmError, assemble
from ..firmware import firmware_dir
from ..kvm import Cap
from ..quirks import QUIRKS
from ..ras.hest import Notification
from ..vm import KVM_MAX_VCPUS, RAM_BASE
from .actions import ACTIONS
from .expect import parse_expect
from .fields import Doc, Node, Ref, ScenarioError
from .model import (FORMAT_VERSION, ActionCall, Device, Firmware, FirmwareFirstSpec, Limits, Machine, Poison,
                    ScenarioSpec, Source, Step, TriggerCall, Variant)
from .positions import key_lines, line_of
from .sections import SECTIONS, load_builtin_sections
from .triggers import TRIGGERS

DEVICE_KINDS = ("serror-source",)
_NOTIFICATIONS = {n.name: n for n in Notification} | {"SDEI": Notification.SOFTWARE_DELEGATED}
_CAPS = {c.name: c for c in Cap}
_SYNTAX_POS = re.compile(r"\(at line (\d+), column (\d+)\)")
_EQU_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def load_spec(path: str | FsPath) -> tuple[ScenarioSpec, Doc]:
    file = FsPath(path)
    try:
        text = file.read_text()
    except OSError as e:
        raise ScenarioError(str(file), 0, "", f"cannot read: {e.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = _SYNTAX_POS.search(str(e))
        line = int(m.group(1)) if m else 0
        raise ScenarioError(str(file), line, "", f"TOML syntax error: {_SYNTAX_POS.sub('', str(e)).strip()}") from None
    doc = Doc(str(file), key_lines(text))
    top = Node(doc, data, ())
    version = top.int("format_version")
    if version != FORMAT_VERSION:
        raise top.error("format_version", f"this sandbox reads format_version {FORMAT_VERSION}, not {version}")
    purpose = top.str("purpose")
    source = _source(top.table("source"))
    machine = _machine(top.table("machine") or Node(doc, {}, ("machine",)))
    firmware = _firmware(top.table("firmware", required=True), file, doc)
    devices = tuple(_device(n) for n in top.tables("devices"))
    poison = tuple(_poison(n) for n in top.tables("poison"))
    ff = _firmware_first(top.table("firmware_first"))
    limits = _limits(top.table("run") or Node(doc, {}, ("run",)))
    steps = tuple(_step(i, n, machine.vcpus) for i, n in enumerate(top.tables("steps")))
    base_expect = top.table("expect")
    variants_node = top.table("variants")
    load_builtin_sections()
    sections = {name: s.parse(n) for name, s in SECTIONS.items() if (n := top.table(name)) is not None}
    top.finish()
    spec = ScenarioSpec(file, purpose, source, machine, firmware, devices, poison, ff, limits, steps,
                        sections=sections)
    if variants_node is None or not variants_node.keys():
        spec.variants.append(Variant("default", "", (), {}, parse_expect(doc, base_expect, None), ("expect",)))
    else:
        for name in variants_node.keys():
            spec.variants.append(_variant(doc, variants_node, name, base_expect))
        variants_node.finish()
    if base_expect is not None:
        base_expect.used.update(base_expect.keys())
    _build(doc, spec)
    return spec, doc


# -- sections ------------------------------------------------------------------------------------

def _source(n: Node | None) -> Source | None:
    if n is None:
        return None
    project = n.str("project")
    refs = [k for k in ("commit", "message_id", "url") if n.has(k)]
    for k in ("commit", "message_id", "url"):
        n.str(k, None)
    if len(refs) != 1:
        raise n.error(None, "give exactly one of commit, message_id or url (issue or thread)")
    reference = n.value[refs[0]]
    title = n.str("title")
    what = n.str("what")
    n.finish()
    return Source(project, reference, title, what)


def _caps(n: Node, key: str) -> tuple[Cap, ...]:
    return tuple(_CAPS[c] for c in n.str_list(key, [], choices=_CAPS))


def _machine(n: Node) -> Machine:
    ram: list[tuple[int, int]] = []
    raw = n.raw("ram", None)
    if raw is None:
        ram.append((RAM_BASE, 64 << 20))
    elif isinstance(raw, (int, str)) and not isinstance(raw, bool):
        ram.append((RAM_BASE, n.size("ram")))
    else:
        for t in n.tables("ram"):
            base = t.int("base", RAM_BASE, minimum=0)
            ram.append((base, t.size("size")))
            t.finish()
    vcpus = n.int("vcpus", 1, minimum=1, maximum=KVM_MAX_VCPUS)
    m = Machine(
        ram=tuple(ram), vcpus=vcpus, ras=n.bool("ras", True),
        unbacked=n.str("unbacked", "abort", choices=("abort", "exit")),
        quirks=tuple(n.str_list("quirks", [], choices=QUIRKS)),
        offer=_caps(n, "offer"), withhold=_caps(n, "withhold"), enable=_caps(n, "enable"),
        uart=n.bool("uart", True), storm_threshold=n.int("storm_threshold", 64, minimum=2),
        gic=n.bool("gic", False))
    n.finish()
    return m


def _firmware(n: Node | None, file: FsPath, doc: Doc) -> Firmware:
    assert n is not None
    base = n.int("base", RAM_BASE, minimum=0)
    entry = n.address("entry", "_start")
    if not isinstance(entry, Ref):
        entry = Ref(entry, ("firmware", "entry"))
        doc.refs.append(entry)
    files = []
    for i, name in enumerate(n.str_list("files", [])):
        here = file.parent / name
        found = here if here.is_file() else firmware_dir() / name
        if not found.is_file():
            raise doc.error(("firmware", "files", i), f"no file {name!r} next to the scenario or in firmware/")
        files.append(found)
    source = n.str("source", None)
    defines = _defines(n.table("defines"))
    if not files and source is None:
        raise n.error(None, "give the firmware as `files`, inline `source`, or both")
    n.finish()
    line = line_of(doc.lines, ("firmware", "source"))
    return Firmware(base, entry, tuple(files), source, line, defines)


def _defines(n: Node | None) -> dict[str, int]:
    out: dict[str, int] = {}
    if n is None:
        return out
    for k in n.keys():
        if not _EQU_NAME.match(k):
            raise n.error(k, f"{k!r} is not an assembler symbol name")
        v = n.raw(k)
        if isinstance(v, bool):
            v = int(v)
        if not isinstance(v, int):
            raise n.error(k, "a define takes an integer (or true/false)")
        out[k] = v
    return out


def _device(n: Node) -> Device:
    kind = n.str("type", choices=DEVICE_KINDS)
    name = n.str("name")
    base = n.int("base", minimum=0)
    size = n.size("size", 0x1000)
    args: dict[str, Any] = {}
    if kind == "serror-source":
        args["iss"] = n.int("iss", None, minimum=0)
        args["delay"] = n.int("delay_instructions", 0, minimum=0)
    n.finish()
    return Device(kind, name, base, size, args, n.path)


def _poison(n: Node) -> Poison:
    p = Poison(n.address("address"), n.size("size", 0x1000))
    n.finish()
    return p


def _firmware_first(n: Node | None) -> FirmwareFirstSpec | None:
    if n is None:
        return None
    base = n.address("base")
    sources = []
    for t in n.tables("sources"):
        sid = t.int("id", minimum=0)
        notify = _NOTIFICATIONS[t.str("notify", choices=_NOTIFICATIONS)]
        vector = t.int("vector", 0, minimum=0)
        t.finish()
        sources.append((sid, notify, vector))
    if not sources:
        raise n.error("sources", "firmware_first needs at least one error source")
    n.finish()
    return FirmwareFirstSpec(base, tuple(sources))


def _limits(n: Node) -> Limits:
    lim = Limits(n.int("max_instructions", None, minimum=0), float(n.number("timeout", 10.0)),
                 n.int("max_exits", 64, minimum=1), n.bool("count_instructions", False))
    n.finish()
    return lim


def parse_step(doc: Doc, index: int, raw: dict[str, Any], vcpus: int) -> Step:
    """One `[[steps]]` table given as data (a fuzzer's injection), checked like the file's own."""
    return _step(index, Node(doc, raw, ("steps", index)), vcpus)


def _step(index: int, n: Node, vcpus: int) -> Step:
    name = n.str("name", "")
    vcpu = n.int("vcpu", 0, minimum=0)
    if vcpu >= vcpus:
        raise n.error("vcpu", f"the machine has {vcpus} vCPU(s)")
    optional = n.bool("optional", False)
    trigger = None
    when = n.table("when")
    if when is not None:
        names = [k for k in when.keys() if k != "count"]
        if len(names) != 1 or names[0] not in TRIGGERS:
            unknown = [k for k in names if k not in TRIGGERS]
            what = f"unknown trigger {unknown[0]!r}" if unknown else "give exactly one trigger"
            raise when.error(unknown[0] if unknown else None, f"{what} (one of {', '.join(TRIGGERS)})")
        spec = TRIGGERS[names[0]]
        args = spec.parse(when.doc, when.path + (names[0],), when.raw(names[0]))
        count = when.int("count", 1, minimum=1)
        if count != 1 and not spec.counts:
            raise when.error("count", f"trigger {spec.name!r} takes no count")
        when.finish()
        trigger = TriggerCall(spec.name, args, count, when.path)
    actions = []
    for i, item in enumerate(n.raw("do", [])):
        path = n.path + ("do", i)
        if not isinstance(item, dict) or len(item) != 1:
            raise n.doc.error(path, "each action is a one-key table, e.g. { poison = { address = \"buf\" } }")
        (aname, value), = item.items()
        if aname not in ACTIONS:
            raise n.doc.error(path + (aname,), f"unknown action {aname!r} (known: {', '.join(sorted(ACTIONS))})")
        actions.append(ActionCall(aname, ACTIONS[aname].parse(n.doc, path + (aname,), value), path + (aname,)))
    if not isinstance(n.value.get("do", []), list):
        raise n.error("do", "expected an array of actions")
    n.finish()
    return Step(index, name, vcpu, trigger, tuple(actions), optional, n.path)


def _variant(doc: Doc, variants: Node, name: str, base_expect: Node | None) -> Variant:
    n = variants.table(name)
    assert n is not None
    quirks = tuple(n.str_list("quirks", [], choices=QUIRKS))
    defines = _defines(n.table("defines"))
    description = n.str("description", "")
    override = n.table("expect")
    n.finish()
    return Variant(name, description, quirks, defines, parse_expect(doc, base_expect, override), n.path)


# -- firmware and symbols --------------------------------------------------------------------------

def _source_text(spec: ScenarioSpec, defines: dict[str, int]) -> tuple[str, int]:
    """The text to assemble (defines, includes, then the inline source) and how many lines
    come before the inline source."""
    fw = spec.firmware
    head = [f".equ {k}, {v:#x}" for k, v in defines.items()] + [f'.include "{p}"' for p in fw.files]
    return "\n".join(head + ([fw.source] if fw.source is not None else [])), len(head)


def _build(doc: Doc, spec: ScenarioSpec) -> None:
    """Assemble each variant's firmware and resolve every address the file names."""
    cache: dict[tuple[tuple[str, int], ...], Any] = {}
    for v in spec.variants:
        defines = {**spec.firmware.defines, **v.defines}
        key = tuple(sorted(defines.items()))
        if key not in cache:
            text, head = _source_text(spec, defines)
            try:
                cache[key] = assemble(text, spec.firmware.base, filename=str(spec.file),
                                      include_path=[spec.file.parent, firmware_dir()])
            except AsmError as e:
                line = e.line
                if e.file == str(spec.file):
                    # A line of the inline source: `source = """` is followed by its first line.
                    line = (spec.firmware.source_line + line - head) if line > head else spec.firmware.source_line
                raise ScenarioError(e.file, line, "firmware.source" if e.file == str(spec.file) else "firmware",
                                    e.message) from None
        v.program = cache[key]
        for ref in doc.refs:
            if ref.path[:1] == ("variants",) and ref.path[1:2] != (v.name,):
                continue  # another variant's expectation, checked against that variant's firmware
            doc.resolve(ref, v.program.symbols)
        for step in spec.steps:
            if step.trigger is not None and step.trigger.name == "record":
                for sym in ("exc_ring", "exc_recorded"):
                    if sym not in v.program.symbols:
                        raise doc.error(step.trigger.path, f"a record trigger needs firmware/vectors.S "
                                                           f"(symbol {sym!r} is missing)")
