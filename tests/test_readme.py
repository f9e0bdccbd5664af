"""The README's Python example runs and shows what it says it shows."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_readme_python_example_runs_and_prints_the_records():
    example = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    out = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "SYSTEM_EVENT" in lines[0] and "SHUTDOWN" in lines[0]
    assert "ESR 0x56000042" in lines[1] and "ESR 0x96000010" in lines[2]
