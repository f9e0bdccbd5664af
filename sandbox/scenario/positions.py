"""Where each key and array element of a TOML document is: its line number.

tomllib reports positions only for syntax errors, and tomlkit keeps none for values either,
so scenario errors ("unknown key", "wrong type", "missing symbol") find their line here. The
scanner runs only on text tomllib has already accepted, so it follows TOML 1.0's structure
without re-checking it: table headers ([t], [[t]] with their array indices), dotted and
quoted keys, inline tables, arrays (possibly multi-line, with comments) and the four string
forms. Paths are tuples of keys and array indices, e.g. ("steps", 1, "do", 0, "poison").
"""

from __future__ import annotations

import bisect
from typing import Union

Path = tuple[Union[str, int], ...]

_BARE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


class _Scanner:
    def __init__(self, text: str):
        self.s = text
        self.i = 0
        self.starts = [0] + [n + 1 for n, ch in enumerate(text) if ch == "\n"]
        self.lines: dict[Path, int] = {}
        self.aot: dict[Path, int] = {}  # array-of-tables path -> elements so far

    def line(self, pos: int) -> int:
        return bisect.bisect_right(self.starts, pos)

    def note(self, path: Path, pos: int) -> None:
        self.lines.setdefault(path, self.line(pos))

    # -- lexical helpers --------------------------------------------------------------

    def skip_ws(self, newlines: bool = False) -> None:
        s, n = self.s, len(self.s)
        while self.i < n:
            ch = s[self.i]
            if ch in " \t\r" or (newlines and ch == "\n"):
                self.i += 1
            elif ch == "#":
                end = s.find("\n", self.i)
                self.i = n if end < 0 else end
            else:
                return

    def string(self) -> str:
        s = self.s
        for quote in ('"""', "'''"):
            if s.startswith(quote, self.i):
                j = self.i + 3
                while True:
                    if quote == '"""' and s[j] == "\\":
                        j += 2
                        continue
                    if s.startswith(quote, j):
                        k = j + 3
                        while k < len(s) and s[k] == quote[0] and k - j < 5:  # up to 2 quotes may close it
                            k += 1
                        text, self.i = s[self.i + 3:k - 3], k
                        return text
                    j += 1
        quote = s[self.i]
        j = self.i + 1
        while s[j] != quote:
            j += 2 if quote == '"' and s[j] == "\\" else 1
        text, self.i = s[self.i + 1:j], j + 1
        return text

    def key(self) -> tuple[list[str], int]:
        """A dotted key; returns its parts and where it starts."""
        parts, start = [], self.i
        while True:
            self.skip_ws()
            if self.s[self.i] in "\"'":
                parts.append(self.string())
            else:
                j = self.i
                while j < len(self.s) and self.s[j] in _BARE:
                    j += 1
                parts.append(self.s[self.i:j])
                self.i = j
            self.skip_ws()
            if self.i < len(self.s) and self.s[self.i] == ".":
                self.i += 1
                continue
            return parts, start

    # -- structure ----------------------------------------------------------------------

    def concrete(self, parts: list[str]) -> Path:
        """A header's key path with the current index of every array of tables in it."""
        out: list[Union[str, int]] = []
        for p in parts:
            out.append(p)
            count = self.aot.get(tuple(out))
            if count is not None:
                out.append(count - 1)
        return tuple(out)

    def document(self) -> None:
        table: Path = ()
        s = self.s
        while True:
            self.skip_ws(newlines=True)
            if self.i >= len(s):
                return
            pos = self.i
            if s.startswith("[[", self.i):
                self.i += 2
                parts, _ = self.key()
                self.i += 2  # ]]
                parent = self.concrete(parts[:-1])
                base = parent + (parts[-1],)
                self.aot[base] = self.aot.get(base, 0) + 1
                table = base + (self.aot[base] - 1,)
                self.note(base, pos)
                self.note(table, pos)
            elif s[self.i] == "[":
                self.i += 1
                parts, _ = self.key()
                self.i += 1  # ]
                table = self.concrete(parts)
                self.note(table, pos)
            else:
                self.keyval(table)

    def keyval(self, table: Path) -> None:
        parts, start = self.key()
        for k in range(1, len(parts) + 1):
            self.note(table + tuple(parts[:k]), start)
        self.skip_ws()
        self.i += 1  # =
        self.skip_ws()
        self.value(table + tuple(parts))

    def value(self, path: Path) -> None:
        s = self.s
        ch = s[self.i]
        if ch in "\"'":
            self.string()
        elif ch == "{":
            self.i += 1
            while True:
                self.skip_ws()
                if s[self.i] == "}":
                    self.i += 1
                    return
                if s[self.i] == ",":
                    self.i += 1
                    continue
                self.keyval(path)
        elif ch == "[":
            self.i += 1
            index = 0
            while True:
                self.skip_ws(newlines=True)
                if s[self.i] == "]":
                    self.i += 1
                    return
                if s[self.i] == ",":
                    self.i += 1
                    continue
                self.note(path + (index,), self.i)
                self.value(path + (index,))
                index += 1
        else:
            while self.i < len(s) and s[self.i] not in ",]}#\n":
                self.i += 1


def key_lines(text: str) -> dict[Path, int]:
    """Line (1-based) of every key, table and array element of a valid TOML document."""
    sc = _Scanner(text)
    sc.document()
    return sc.lines


def line_of(lines: dict[Path, int], path: Path) -> int:
    """The line of `path`, or of its nearest ancestor that is written in the file."""
    p = tuple(path)
    while p:
        if p in lines:
            return lines[p]
        p = p[:-1]
    return 1


def path_text(path: Path) -> str:
    """steps[1].do[0].poison"""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out
