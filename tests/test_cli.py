"""The `sandbox` command, run as a user would."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sandbox(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sandbox", *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_run_demo_prints_records_with_disassembly_and_exits_zero():
    p = sandbox("run", "firmware/demo.S")
    assert p.returncode == 0, p.stderr
    assert "SYSTEM_EVENT" in p.stdout
    assert "ESR 0x96000010 (DABT_CUR)" in p.stdout and "ldr x2, [x1]" in p.stdout
    assert "ESR 0x92000010 (DABT_LOW)" in p.stdout


def test_assembly_error_is_one_line_with_file_and_line_and_status_2(tmp_path):
    bad = tmp_path / "bad.S"
    bad.write_text("nop\nnot_an_insn x0\n")
    p = sandbox("run", str(bad))
    assert p.returncode == 2
    assert f"{bad}:2:" in p.stderr and "Traceback" not in p.stderr


def test_asm_and_disasm(tmp_path):
    src = tmp_path / "t.S"
    src.write_text("start: svc #1\n esb\n")
    p = sandbox("asm", str(src), "--symbols")
    assert p.returncode == 0 and "svc #1" in p.stdout and "start" in p.stdout
    p = sandbox("disasm", "--hex", "1f2203d5", "--base", "0x1000")
    assert "esb" in p.stdout
