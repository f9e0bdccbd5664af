"""Host instructions per fast-path execution of bench_fuzz.py's sweep, counted by callgrind.

Wall-clock figures on a shared machine drift by tens of percent between runs; an instruction
count does not (callgrind counts what the CPU would execute, the same for the same code and
inputs). This runs the sweep under `valgrind --tool=callgrind` twice, with 1 and with 3
passes over its 63 points, and divides the difference by the extra executions, so that setup
(imports, assembling, building the machine) drops out. About a minute.

    python bench/bench_fuzz_callgrind.py
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _passes(n: int) -> None:
    sys.path.insert(0, str(HERE))
    from bench_fuzz import SCENARIO

    from sandbox.fuzz.fastpath import FastExecutor
    from sandbox.fuzz.sweep import sweep_points
    from sandbox.fuzz.target import Target

    target = Target(SCENARIO)
    points = sweep_points(target)
    fx = FastExecutor(target)
    fx.advance_to(points[0].boundary.count)
    for _ in range(n):
        for p in points:
            fx.execute(p.plan)
    print(f"points {len(points)}")


def _count(n: int) -> tuple[int, int]:
    """(instructions of the main process, sweep points) for `n` passes."""
    env = dict(os.environ, PYTHONHASHSEED="0")  # the same dict layouts in both runs
    out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                          __file__, "--passes", str(n)], capture_output=True, text=True, env=env, check=True)
    counts = [int(m.replace(",", "")) for m in re.findall(r"I\s+refs:\s+([\d,]+)", out.stderr)]
    points = int(re.search(r"points (\d+)", out.stdout).group(1))  # type: ignore[union-attr]
    return max(counts), points


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--passes":
        _passes(int(sys.argv[2]))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    one, points = _count(1)
    three, _ = _count(3)
    per = (three - one) / (2 * points)
    print(f"host instructions per fast-path execution: {per:,.0f} (callgrind, {points} points, 2 extra passes)")


if __name__ == "__main__":
    main()
