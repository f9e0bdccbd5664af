"""Reading a scenario file's tables with types checked, and the one error a bad file gets.

`Node` wraps one TOML table and its path; each typed getter marks its key as read, and
`finish()` reports the first key nobody read ("unknown key"). Every problem raises
`ScenarioError`, which names the file, the line and the field. Addresses stay `Ref`s (a
number, a symbol, or "symbol+offset") until the firmware is assembled; `Doc.resolve` turns
them into numbers or reports the missing symbol at the line that names it.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from .positions import Path, line_of, path_text

_MISSING = object()
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)i?b?\s*$", re.IGNORECASE)
_REF = re.compile(r"^\s*([A-Za-z_.$][\w.$]*)\s*(?:([+-])\s*(0x[0-9a-fA-F]+|\d+))?\s*$")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


class ScenarioError(Exception):
    """A bad scenario file: `file:line: field: message`."""

    def __init__(self, file: str, line: int, field_name: str, message: str):
        self.file, self.line, self.field, self.message = file, line, field_name, message
        where = f"{file}:{line}"
        super().__init__(f"{where}: {field_name}: {message}" if field_name else f"{where}: {message}")


@dataclass(frozen=True)
class Ref:
    """An address as written: an int, a symbol, or "symbol+offset"; `path` locates it."""

    value: int | str
    path: Path


@dataclass
class Doc:
    file: str
    lines: dict[Path, int]
    refs: list[Ref] = field(default_factory=list)  # every address to check once symbols exist

    def error(self, path: Path, message: str) -> ScenarioError:
        return ScenarioError(self.file, line_of(self.lines, path), path_text(path), message)

    def resolve(self, ref: Ref, symbols: dict[str, int]) -> int:
        if isinstance(ref.value, int):
            return ref.value
        text = ref.value.strip()
        try:
            return int(text, 0)
        except ValueError:
            pass
        m = _REF.match(text)
        if not m:
            raise self.error(ref.path, f"{text!r} is neither a number nor symbol[+-offset]")
        name, sign, offset = m.groups()
        if name not in symbols:
            close = difflib.get_close_matches(name, list(symbols), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise self.error(ref.path, f"missing symbol {name!r}: the firmware defines no such label or .equ{hint}")
        value = symbols[name]
        if offset:
            value = value + int(offset, 0) if sign == "+" else value - int(offset, 0)
        return value


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


class Node:
    """One table of the scenario file."""

    def __init__(self, doc: Doc, value: dict[str, Any], path: Path):
        self.doc, self.value, self.path = doc, value, path
        self.used: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.value

    def keys(self) -> list[str]:
        return list(self.value)

    def error(self, key: str | None, message: str) -> ScenarioError:
        return self.doc.error(self.path + ((key,) if key is not None else ()), message)

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        self.used.add(key)
        if key not in self.value:
            if default is _MISSING:
                raise self.error(None, f"missing required key {key!r}")
            return default
        return self.value[key]

    def _typed(self, key: str, default: Any, ok: Any, wanted: str) -> Any:
        v = self.raw(key, default)
        if v is default and key not in self.value:
            return v
        if not ok(v):
            raise self.error(key, f"expected {wanted}, got {_type_name(v)}")
        return v

    def int(self, key: str, default: Any = _MISSING, *, minimum: int | None = None,
            maximum: int | None = None) -> Any:
        v = self._typed(key, default, lambda x: isinstance(x, int) and not isinstance(x, bool), "an integer")
        if minimum is not None and isinstance(v, int) and v < minimum:
            raise self.error(key, f"must be at least {minimum}, got {v}")
        if maximum is not None and isinstance(v, int) and v > maximum:
            raise self.error(key, f"must be at most {maximum}, got {v}")
        return v

    def number(self, key: str, default: Any = _MISSING) -> Any:
        return self._typed(key, default, lambda x: isinstance(x, (int, float)) and not isinstance(x, bool), "a number")

    def str(self, key: str, default: Any = _MISSING, *, choices: Iterable[str] | None = None) -> Any:
        v = self._typed(key, default, lambda x: isinstance(x, str), "a string")
        if choices is not None and isinstance(v, str):
            options = list(choices)
            if v not in options:
                raise self.error(key, f"{v!r} is not one of {', '.join(options)}")
        return v

    def bool(self, key: str, default: Any = _MISSING) -> Any:
        return self._typed(key, default, lambda x: isinstance(x, bool), "true or false")

    def size(self, key: str, default: Any = _MISSING) -> Any:
        v = self._typed(key, default, lambda x: isinstance(x, (int, str)) and not isinstance(x, bool),
                        'a size (an integer or "64M")')
        return parse_size(v, lambda msg: self.error(key, msg)) if key in self.value else v

    def address(self, key: str, default: Any = _MISSING) -> Any:
        v = self._typed(key, default, lambda x: isinstance(x, (int, str)) and not isinstance(x, bool),
                        "an address (an integer, a symbol or \"symbol+offset\")")
        if key not in self.value:
            return v
        ref = Ref(v, self.path + (key,))
        self.doc.refs.append(ref)
        return ref

    def str_list(self, key: str, default: Any = _MISSING, *, choices: Iterable[str] | None = None) -> Any:
        v = self._typed(key, default, lambda x: isinstance(x, list), "an array of strings")
        if key not in self.value:
            return v
        options = list(choices) if choices is not None else None
        for i, item in enumerate(v):
            if not isinstance(item, str):
                raise self.doc.error(self.path + (key, i), f"expected a string, got {_type_name(item)}")
            if options is not None and item not in options:
                raise self.doc.error(self.path + (key, i), f"{item!r} is not one of {', '.join(options)}")
        return list(v)

    def table(self, key: str, required: bool = False) -> "Node | None":
        v = self._typed(key, _MISSING if required else None, lambda x: isinstance(x, dict), "a table")
        return None if v is None else Node(self.doc, v, self.path + (key,))

    def tables(self, key: str) -> list["Node"]:
        """An array of tables ([[key]] or [ {..}, {..} ])."""
        v = self._typed(key, [], lambda x: isinstance(x, list), "an array of tables")
        out = []
        for i, item in enumerate(v):
            if not isinstance(item, dict):
                raise self.doc.error(self.path + (key, i), f"expected a table, got {_type_name(item)}")
            out.append(Node(self.doc, item, self.path + (key, i)))
        return out

    def finish(self) -> None:
        """Refuse keys nothing read (a typo must not silently do nothing)."""
        for key in self.value:
            if key not in self.used:
                known = sorted(self.used)
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise self.error(key, f"unknown key {key!r}{hint}")


def parse_size(value: int | str, error: Any) -> int:
    if isinstance(value, int):
        return value
    m = _SIZE.match(value)
    if m:
        return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    try:
        return int(value, 0)
    except ValueError:
        raise error(f"{value!r} is not a size (e.g. 4096, \"0x1000\", \"64M\")") from None


def unsigned_fields(t: Node, names: Any, address: Any = (), need: str = "give") -> dict[str, Any]:
    """The fields of table `t` among `names` (non-negative integers; those in `address` may
    also be symbols), refusing unknown keys and a table that names none of them."""
    out: dict[str, Any] = {}
    for k in names:
        if t.has(k):
            out[k] = t.address(k) if k in address else t.int(k, minimum=0)
        else:
            t.raw(k, None)
    t.finish()
    if not out:
        raise t.error(None, f"{need} at least one of {', '.join(names)}")
    return out
