"""`sandbox sweep` / `sandbox fuzz` as a user runs them: a progress bar with the rate and the
findings on a terminal, none when stderr is not one; a JSON summary with --json."""

import json
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "scenarios" / "fuzz" / "syscall-serror.toml"


def test_no_progress_bar_when_not_a_terminal_and_a_plain_table(tmp_path):
    p = subprocess.run([sys.executable, "-m", "sandbox", "sweep", str(DEMO), "--variant", "unmask-early",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert p.stderr == ""  # no bar, no escape sequences
    lines = p.stdout.splitlines()
    assert lines[1].split() == ["boundary", "pc", "instruction", "event", "masking", "outcome"]
    assert "\x1b[" not in p.stdout


def test_a_progress_bar_with_rate_and_findings_on_a_terminal(tmp_path):
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "sandbox", "fuzz", str(DEMO), "--variant", "unmask-early",
                          "--seed", "2", "--iterations", "640", "--out", str(tmp_path)],
                         stdin=slave, stdout=subprocess.DEVNULL, stderr=slave, env={**os.environ, "COLUMNS": "120"})
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    assert p.wait(timeout=120) == 1
    text = seen.decode(errors="replace")
    assert "exec/s" in text and "findings" in text and "fuzz unmask-early" in text


def test_json_summaries(tmp_path):
    p = subprocess.run([sys.executable, "-m", "sandbox", "fuzz", str(DEMO), "--variant", "vectors", "--seed", "1",
                        "--iterations", "64", "--out", str(tmp_path), "--json"], capture_output=True, text=True,
                       timeout=120)
    summary = json.loads(p.stdout)
    assert p.returncode == 0 and summary["executions"] == 64 and summary["path"] == "fast"
    assert summary["executions_per_second"] > 0 and summary["corpus"] >= 1 and summary["findings"] == []
    p = subprocess.run([sys.executable, "-m", "sandbox", "sweep", str(DEMO), "--json", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    both = json.loads(p.stdout)
    assert [s["variant"] for s in both] == ["vectors", "unmask-early"]
    assert both[0]["violating"] == 0 and both[1]["violating"] > 0 and both[1]["minimal_reproducer"]
