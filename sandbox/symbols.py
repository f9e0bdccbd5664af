"""Guest symbols: name -> address for scenarios, address -> `symbol+offset` for people.

Every Vm has one `Symbolizer` (`vm.symbols`). Loaders add what they know: `load_elf` the ELF
symbol table (functions and objects with their sizes), `Vm.load` the labels of an assembled
keystone `Program`. The CLI, gdb messages and traces print addresses through `format` or
`annotate`, so an exception at 0x40080058 reads `0x40080058 <main+0x8>`.

Lookup follows what addr2line and gdb print: the closest symbol at or below the address, but
only inside the image that defined it, and for a symbol with a size (an ELF function or
object) only within that size.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator, Mapping

if TYPE_CHECKING:
    from .asm import Program


@dataclass(frozen=True)
class Symbol:
    name: str
    address: int
    size: int = 0  # 0: unknown (an assembler label); the symbol reaches the next one
    rank: int = 0  # which name wins when several share an address: higher is better


# Ranks: a function names code better than a data object, which names it better than a label.
RANK_LABEL, RANK_OBJECT, RANK_FUNCTION = 0, 1, 2


class Symbolizer:
    """Symbols of everything loaded into one guest, searchable both ways."""

    def __init__(self) -> None:
        self._by_name: dict[str, Symbol] = {}
        self._starts: list[int] = []  # sorted addresses of _best
        self._best: list[Symbol] = []  # the winning symbol at each address
        self._regions: list[tuple[int, int]] = []  # [lo, hi) of the images that define symbols

    # -- adding ------------------------------------------------------------------------

    def add(self, symbol: Symbol) -> None:
        self._by_name[symbol.name] = symbol
        i = bisect.bisect_left(self._starts, symbol.address)
        if i < len(self._starts) and self._starts[i] == symbol.address:
            old = self._best[i]
            # At equal rank the later name wins: of two labels at one address, the earlier
            # usually ends what precedes it (`stack_top:`) and the later starts what follows.
            if (symbol.rank, bool(symbol.size)) >= (old.rank, bool(old.size)):
                self._best[i] = symbol
        else:
            self._starts.insert(i, symbol.address)
            self._best.insert(i, symbol)

    def add_image(self, symbols: Iterable[Symbol], lo: int, hi: int) -> None:
        """Add the symbols of one image occupying [lo, hi); symbols outside it (assembler
        constants such as `.equ RING_ENTRIES, 64`) keep their name but never name an address."""
        self._regions.append((lo, hi))
        for s in symbols:
            if lo <= s.address < hi or (s.address == hi and s.size == 0):
                self.add(s)
            else:
                self._by_name.setdefault(s.name, s)

    def add_program(self, program: "Program") -> None:
        """The labels of an assembled keystone `Program` (sandbox.asm); its `.equ` constants
        keep their names but never name an address."""
        self._regions.append((program.base, program.end))
        for name, value in program.symbols.items():
            if name in program.constants:
                self._by_name.setdefault(name, Symbol(name, value))
            else:
                self.add(Symbol(name, value))

    # -- looking up ----------------------------------------------------------------------

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def __getitem__(self, name: str) -> int:
        try:
            return self._by_name[name].address
        except KeyError:
            raise KeyError(f"no guest symbol {name!r}") from None

    def __iter__(self) -> Iterator[Symbol]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def names(self) -> Mapping[str, int]:
        return {n: s.address for n, s in self._by_name.items()}

    def lookup(self, address: int) -> tuple[Symbol, int] | None:
        """(symbol, offset) naming `address`, or None."""
        if not any(lo <= address < hi for lo, hi in self._regions):
            return None
        i = bisect.bisect_right(self._starts, address) - 1
        if i < 0:
            return None
        symbol = self._best[i]
        offset = address - symbol.address
        if symbol.size and offset >= symbol.size:
            return None  # past the end of a sized symbol: padding, or code without a name
        return symbol, offset

    def format(self, address: int) -> str:
        """`name+0xoff` (or `name` at offset 0), or "" when nothing names the address."""
        found = self.lookup(address)
        if found is None:
            return ""
        symbol, offset = found
        return f"{symbol.name}+{offset:#x}" if offset else symbol.name

    def annotate(self, address: int) -> str:
        """`0x40080058 <main+0x8>`, or just the hex address."""
        name = self.format(address)
        return f"{address:#x} <{name}>" if name else f"{address:#x}"
