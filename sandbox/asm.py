"""Keystone front-end: assemble guest `.S` sources into a flat image with exported symbols.

keystone-engine 0.9.2 lacks things guest kernels use; this module fills the gaps before
keystone sees the text:

- `esb` is spelled `hint #16` (the ESB encoding, Arm ARM C6.2.83) `udf #imm` and `.inst` (which keystone drops silently) become `.word`;
- RAS and EL2 registers keystone cannot name (DISR_EL1, VDISR_EL2, VSESR_EL2, ERR*/ERX*) are
  spelled with their generic S3_<op1>_C<n>_C<m>_<op2> names;
- numeric local labels (`1:`, `b 1b`, `cbz x0, 1f`) become unique named labels;
- `.include "file"` is expanded from the including file's folder and the include path
  (the firmware library by default);
- every label and `.equ`/`.set` constant is exported, so hosts find `label` addresses;
- errors name the file, the line and keystone's message.
"""

from __future__ import annotations

import json
import os
import re
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from keystone import KS_ARCH_ARM64, KS_MODE_LITTLE_ENDIAN, Ks, KsError

from .arch.sysreg import KEYSTONE_MISSING, SYSREGS
from .firmware import firmware_dir


class AsmError(Exception):
    """An assembly error located at a source file and line."""

    def __init__(self, message: str, file: str, line: int, text: str = ""):
        self.message, self.file, self.line, self.text = message, file, line, text
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {message}" + (f"\n    {text.strip()}" if text.strip() else ""))


@dataclass
class Program:
    """An assembled flat image: `code` loads at `base`; `symbols` maps names to values."""

    code: bytes
    base: int
    symbols: dict[str, int] = field(default_factory=dict)
    constants: frozenset[str] = frozenset()  # the symbols that are .equ/.set values, not labels

    def __getitem__(self, name: str) -> int:
        try:
            return self.symbols[name]
        except KeyError:
            raise KeyError(f"no symbol {name!r} in the assembled program") from None

    @property
    def end(self) -> int:
        return self.base + len(self.code)


@dataclass
class _Line:
    text: str
    file: str
    line: int


_LABEL_DEF = re.compile(r"^\s*([A-Za-z_$.][\w$.]*)\s*:")
_EQU = re.compile(r"^\s*\.(?:equ|set)\s+([A-Za-z_$.][\w$.]*)\s*,", re.IGNORECASE)
_NUM_DEF = re.compile(r"^(\s*)(\d+):")
_NUM_REF = re.compile(r"(?<![\w.$])(\d+)([bf])(?![\w.$])")
_INCLUDE = re.compile(r'^\s*\.include\s+"([^"]+)"\s*$')
_ESB = re.compile(r"^(\s*(?:[A-Za-z_$.][\w$.]*:\s*)?)esb(\s*(?://.*)?)$", re.IGNORECASE)
_UDF = re.compile(r"^(\s*(?:[A-Za-z_$.][\w$.]*:\s*)?)udf\s+#?(0x[0-9a-fA-F]+|\d+)(\s*)$", re.IGNORECASE)
_INST = re.compile(r"^(\s*(?:[A-Za-z_$.][\w$.]*:\s*)?)\.inst(\s)", re.IGNORECASE)
_SECTION = re.compile(r"^\s*\.(section|data|bss|pushsection|popsection|previous)\b", re.IGNORECASE)
_TEXT = re.compile(r"^\s*\.text\s*$", re.IGNORECASE)
_REG_NAMES = re.compile(r"\b(" + "|".join(KEYSTONE_MISSING) + r")\b", re.IGNORECASE)
_BLOCK_OPEN = re.compile(r"^\s*\.(macro|rept|irp|irpc|if\w*)\b", re.IGNORECASE)
_BLOCK_CLOSE = re.compile(r"^\s*\.(endm|endr|endif)\b", re.IGNORECASE)


def _strip_comment(text: str) -> str:
    return text.split("//", 1)[0]


def _expand(source: str, file: str, search: list[Path], depth: int = 0) -> list[_Line]:
    if depth > 16:
        raise AsmError(".include nested too deeply (include cycle?)", file, 0)
    out: list[_Line] = []
    base_dir = Path(file).parent if not file.startswith("<") else None
    in_comment = False
    for number, raw in enumerate(source.splitlines(), 1):
        text = raw
        # Block comments are removed here so that later line-based rewrites stay simple.
        if in_comment or "/*" in text:
            kept, rest = "", text
            while rest:
                if in_comment:
                    end = rest.find("*/")
                    if end < 0:
                        rest = ""
                        break
                    rest, in_comment = rest[end + 2:], False
                else:
                    start = rest.find("/*")
                    if start < 0:
                        kept, rest = kept + rest, ""
                        break
                    kept, rest, in_comment = kept + rest[:start], rest[start + 2:], True
            text = kept
        m = _INCLUDE.match(_strip_comment(text))
        if m:
            name = m.group(1)
            candidates = ([base_dir / name] if base_dir else []) + [d / name for d in search]
            for cand in candidates:
                if cand.is_file():
                    out.extend(_expand(cand.read_text(), str(cand), search, depth + 1))
                    break
            else:
                raise AsmError(f'.include "{name}": file not found (searched {", ".join(str(c.parent) for c in candidates)})',
                               file, number, raw)
            continue
        if _SECTION.match(text):
            raise AsmError("sections are not supported: the sandbox assembles one flat image "
                           "(use .balign / .org / .skip to lay it out)", file, number, raw)
        if _TEXT.match(text):
            text = ""
        out.append(_Line(text, file, number))
    return out


def _rewrite(lines: list[_Line]) -> None:
    """esb, register names and numeric local labels, in place."""
    # Numeric local labels: number each definition, then resolve b/f references.
    defs: dict[str, list[int]] = {}
    for i, ln in enumerate(lines):
        m = _NUM_DEF.match(ln.text)
        if m:
            defs.setdefault(m.group(2), []).append(i)
    for i, ln in enumerate(lines):
        code = _strip_comment(ln.text)
        m = _NUM_DEF.match(code)
        if m:
            k = defs[m.group(2)].index(i)
            code = f"{m.group(1)}__local_{m.group(2)}_{k}:" + code[m.end():]

        def ref(mm: re.Match[str], i: int = i, ln: _Line = ln) -> str:
            num, direction = mm.group(1), mm.group(2)
            positions = defs.get(num, [])
            if direction == "b":
                cands = [k for k, p in enumerate(positions) if p <= i]
                if not cands:
                    raise AsmError(f"local label {num}b has no earlier definition", ln.file, ln.line, ln.text)
                return f"__local_{num}_{cands[-1]}"
            cands = [k for k, p in enumerate(positions) if p > i]
            if not cands:
                raise AsmError(f"local label {num}f has no later definition", ln.file, ln.line, ln.text)
            return f"__local_{num}_{cands[0]}"

        if defs:
            head, _, operands = code.partition(" ") if not _LABEL_DEF.match(code) else (code, "", "")
            if operands:
                code = head + " " + _NUM_REF.sub(ref, operands)
            elif _LABEL_DEF.match(code):
                # "label: insn operands" - rewrite after the label
                lm = _LABEL_DEF.match(code)
                assert lm
                rest = code[lm.end():]
                code = code[:lm.end()] + _NUM_REF.sub(ref, rest)
        code = _ESB.sub(lambda mm: f"{mm.group(1)}hint #16{mm.group(2)}", code)
        # UDF #imm16 (permanently undefined, Arm ARM C6.2.394): encoding 0x0000 | imm16.
        code = _UDF.sub(lambda mm: f"{mm.group(1)}.word {int(mm.group(2), 0) & 0xFFFF:#x}{mm.group(3)}", code)
        # keystone silently drops `.inst`: emit the word instead.
        code = _INST.sub(lambda mm: f"{mm.group(1)}.word{mm.group(2)}", code)
        code = _REG_NAMES.sub(lambda mm: SYSREGS[mm.group(1).upper()].generic_name(), code)
        ln.text = code


def _exported_names(lines: list[_Line]) -> list[str]:
    names: list[str] = []
    seen = set()
    for ln in lines:
        text = ln.text
        while True:
            m = _LABEL_DEF.match(text)
            if not m:
                break
            name = m.group(1)
            if not name.startswith("__local_") and name not in seen:
                seen.add(name)
                names.append(name)
            text = text[m.end():]
        m = _EQU.match(ln.text)
        if m and m.group(1) not in seen:
            seen.add(m.group(1))
            names.append(m.group(1))
    return names


class _KeystoneFailure(Exception):
    """keystone reported an error (KsError text) or LLVM aborted the assembler."""

    def __init__(self, message: str, missing: list[str] | None = None):
        super().__init__(message)
        self.missing = missing or []


def _ks_asm(text: str, base: int, resolve_all: bool = False) -> tuple[bytes, str]:
    """Assemble with keystone in a forked child process.

    keystone (LLVM MC) calls exit() on some inputs ("LLVM ERROR: fixup value out of range")
    and prints other diagnostics straight to fd 2 while still returning success. A child
    process keeps both away from the host: its stderr is captured and returned, and a child
    that dies becomes an error. `resolve_all` resolves every unknown symbol to `base` (used
    while locating an error in a prefix of the source, where later labels are missing)."""
    rfd, wfd = os.pipe()
    err = tempfile.TemporaryFile()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(rfd)
            os.dup2(err.fileno(), 2)
            ks = Ks(KS_ARCH_ARM64, KS_MODE_LITTLE_ENDIAN)
            if resolve_all:
                def resolve_to_base(symbol: bytes, value: "object") -> bool:
                    value[0] = base  # type: ignore[index]
                    return True
                ks.sym_resolver = resolve_to_base
            try:
                enc, _ = ks.asm(text, base)
                payload = b"K" + bytes(enc or b"")
            except KsError as e:
                missing: list[str] = []
                if "SYMBOL_MISSING" in str(e):
                    # A resolver is asked only for symbols nothing defines: name them.
                    probe = Ks(KS_ARCH_ARM64, KS_MODE_LITTLE_ENDIAN)

                    def record(symbol: bytes, value: "object") -> bool:
                        missing.append(symbol.decode(errors="replace"))
                        return False
                    probe.sym_resolver = record
                    try:
                        probe.asm(text, base)
                    except KsError:
                        pass
                payload = b"E" + json.dumps({"message": str(e), "missing": missing}).encode()
            with os.fdopen(wfd, "wb") as w:
                w.write(payload)
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as r:
        payload = r.read()
    _, status = os.waitpid(pid, 0)
    err.seek(0)
    diag = err.read().decode(errors="replace")
    err.close()
    if not payload:
        fatal = [ln for ln in diag.splitlines() if ln.strip()]
        raise _KeystoneFailure(fatal[-1] if fatal else f"the assembler died (status {status})")
    if payload[:1] == b"E":
        info = json.loads(payload[1:])
        raise _KeystoneFailure(info["message"], info["missing"])
    return payload[1:], diag


def _fails(lines: list[_Line], n: int, base: int) -> str | None:
    # A trailing nop: keystone rejects some directives (.balign) as the very last line.
    text = "\n".join(ln.text for ln in lines[:n]) + "\nnop\n"
    try:
        _, diag = _ks_asm(text, base)
    except _KeystoneFailure as e:
        # A prefix misses the labels defined after it: that is not the error we look for.
        return None if "SYMBOL_MISSING" in str(e) else str(e)
    return _diagnostic(diag)


def _diagnostic(diag: str) -> str | None:
    for row in diag.splitlines():
        if "error:" in row:
            return row.split("error:", 1)[1].strip()
    return None


def _locate(lines: list[_Line], message: str, base: int) -> AsmError:
    """Find the first line whose prefix fails to assemble (binary search over the lines that
    are outside .macro/.rept/.if blocks, so a prefix never ends inside a block)."""
    cuts, depth = [], 0
    for i, ln in enumerate(lines):
        if _BLOCK_OPEN.match(ln.text):
            depth += 1
        if _BLOCK_CLOSE.match(ln.text):
            depth = max(0, depth - 1)
        if depth == 0:
            cuts.append(i + 1)
    lo, hi = 0, len(cuts) - 1
    if not cuts or _fails(lines, cuts[hi], base) is None:
        return AsmError(message, lines[0].file if lines else "<string>", 0)
    while lo < hi:
        mid = (lo + hi) // 2
        if _fails(lines, cuts[mid], base) is not None:
            hi = mid
        else:
            lo = mid + 1
    bad = lines[cuts[lo] - 1]
    return AsmError(message, bad.file, bad.line, bad.text)


def _missing_symbol_error(lines: list[_Line], missing: list[str]) -> AsmError:
    for name in missing:
        pat = re.compile(rf"(?<![\w$.]){re.escape(name)}(?![\w$.])")
        for ln in lines:
            if pat.search(_LABEL_DEF.sub("", ln.text)):
                return AsmError(f"undefined symbol '{name}'", ln.file, ln.line, ln.text)
    return AsmError(f"undefined symbol {', '.join(missing) or '(unknown)'}",
                    lines[0].file if lines else "<string>", 0)


def assemble(source: str, base: int = 0, *, filename: str = "<string>",
             include_path: list[Path] | tuple[Path, ...] | None = None) -> Program:
    """Assemble A64 `source` to load at `base`. Raises AsmError naming file and line."""
    search = [Path(p) for p in (include_path if include_path is not None else [firmware_dir()])]
    lines = _expand(source, filename, search)
    _rewrite(lines)
    names = _exported_names(lines)
    body = "\n".join(ln.text for ln in lines)
    # Symbol export: flush the literal pool, then append a table of `.quad name` after
    # everything else. Appended data cannot move an earlier label, so one assembly gives
    # every address; the table's first entry is its own address, where the image ends.
    table = ("\n.ltorg\n.balign 8\n__symbol_table:\n.quad __symbol_table\n"
             + "".join(f".quad {n}\n" for n in names))
    try:
        enc, diag = _ks_asm(body + table, base)
    except _KeystoneFailure as e:
        if "SYMBOL_MISSING" in str(e):
            raise _missing_symbol_error(lines, e.missing) from None
        raise _locate(lines, str(e), base) from None
    msg = _diagnostic(diag)
    if msg is not None:
        raise _locate(lines, msg, base)
    count = len(names) + 1
    values = struct.unpack_from(f"<{count}Q", enc, len(enc) - 8 * count)
    symbols = dict(zip(names, values[1:]))
    constants = frozenset(m.group(1) for ln in lines if (m := _EQU.match(ln.text)))
    return Program(code=enc[: values[0] - base], base=base, symbols=symbols, constants=constants)


def assemble_file(path: str | os.PathLike[str], base: int = 0,
                  include_path: list[Path] | None = None) -> Program:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise AsmError(f"cannot read: {e.strerror}", str(p), 0) from None
    search = include_path if include_path is not None else [firmware_dir()]
    return assemble(text, base, filename=str(p), include_path=search)


def assemble_one(text: str, address: int = 0) -> bytes:
    """Assemble a few instructions without the front-end (for tests and tools)."""
    enc, diag = _ks_asm(text, address)
    msg = _diagnostic(diag)
    if msg:
        raise AsmError(msg, "<string>", 1, text)
    return enc
