"""`sandbox run FILE.toml` and `sandbox list`: the scenario commands of the CLI.

Exit status of `run`: 0 every variant passed, 1 one failed, 2 the file is bad (one message
naming file, line and field).
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

from ..trace import finish_trace, start_trace
from . import Scenario, ScenarioError


def run_scenario(args: argparse.Namespace) -> int:
    try:
        scenario = Scenario.load(args.file)
    except ScenarioError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name in args.variant or []:
        if name not in scenario.variants:
            print(f"error: {args.file}: no variant {name!r} (has {', '.join(scenario.variants)})", file=sys.stderr)
            return 2
    tracing = bool(args.trace or args.timeline)
    recorder = start_trace(args.trace, source=str(args.file), variants=args.variant or scenario.variants) if tracing else None
    try:
        result = scenario.run(args.variant or None, recorder=recorder, count_instructions=tracing)
    finally:
        if recorder is not None:
            finish_trace(recorder, args.timeline)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(result.text(verbose=args.verbose))
    return 0 if result.passed else 1


def default_dir() -> Path:
    here = Path("scenarios")
    return here if here.is_dir() else Path(__file__).resolve().parents[2] / "scenarios"


def list_steps() -> int:
    """The registered actions and triggers with their one-line summaries."""
    from . import ACTIONS, TRIGGERS
    for title, registry in (("actions (do = [ { NAME = ... } ])", ACTIONS), ("triggers (when = { NAME = ... })", TRIGGERS)):
        print(title)
        width = max(len(n) for n in registry)
        for name in sorted(registry):
            print(f"  {name:<{width}}  {registry[name].summary}")
    return 0


def list_scenarios(args: argparse.Namespace) -> int:
    if getattr(args, "steps", False):
        return list_steps()
    root = Path(args.dir) if args.dir else default_dir()
    files = sorted(root.rglob("*.toml")) if root.is_dir() else []
    if not files:
        print(f"no scenarios under {root}", file=sys.stderr)
        return 1
    width = max(len(str(f.relative_to(root))) for f in files)
    for f in files:
        try:
            purpose = str(tomllib.loads(f.read_text()).get("purpose", "(no purpose line)"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            purpose = f"(unreadable: {e})"
        print(f"{str(f.relative_to(root)):<{width}}  {purpose}")
    return 0
