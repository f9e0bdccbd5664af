"""Helpers for the fuzzer's tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable


def assert_same_campaign(first: dict[str, Any], second: dict[str, Any]) -> None:
    """Two `sandbox fuzz --json` summaries of the same seed: the same findings (but for where
    their files went), corpus size and coverage, and something found and kept."""
    strip = lambda fs: [{k: v for k, v in f.items() if k != "file"} for f in fs]  # noqa: E731
    assert first["findings"] and strip(first["findings"]) == strip(second["findings"])
    assert first["corpus"] == second["corpus"] > 0 and first["coverage_blocks"] == second["coverage_blocks"]


def same_seed_twice(fuzz: Callable[[Path], int], tmp_path: Path, capsys: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the campaign `fuzz(out)` (a `sandbox fuzz ... --json` that finds something) into
    tmp_path/a and tmp_path/b; check that both give the same campaign; their summaries."""
    summaries = []
    for out in ("a", "b"):
        assert fuzz(tmp_path / out) == 1
        summaries.append(json.loads(capsys.readouterr().out))
    assert_same_campaign(*summaries)
    return summaries[0], summaries[1]
