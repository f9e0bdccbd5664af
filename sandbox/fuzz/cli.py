"""`sandbox sweep` and `sandbox fuzz`.

Exit status: 0 nothing violated, 1 violations found (reproducers written), 2 bad input (the
scenario file, the window, another campaign in --out). A progress bar with the rate and the
findings so far is drawn on a terminal (rich), never when stderr is not one; `--json` prints
a summary for machines instead of the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def add_commands(sub: Any) -> None:
    s = sub.add_parser("sweep", help="inject each event kind at every instruction boundary of a scenario's window "
                                     "and check the invariants")
    _common(s)
    s.add_argument("--unique", action="store_true", help="one point per (PC, PSTATE) and event kind")
    s.add_argument("--all-rows", action="store_true", help="table: every point (default: the violating ones)")
    s.set_defaults(func=cmd_sweep)
    f = sub.add_parser("fuzz", help="a seeded, coverage-guided fuzzing campaign on a scenario")
    _common(f)
    f.add_argument("--seed", type=int, required=True)
    budget = f.add_mutually_exclusive_group(required=True)
    budget.add_argument("--iterations", type=int, help="executions to run (in total, across resumes)")
    budget.add_argument("--time", type=float, help="seconds to run (this invocation)")
    f.set_defaults(func=cmd_fuzz)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario", help="a scenario file (its [fuzz] table configures the defaults)")
    p.add_argument("--variant", action="append", help="only this variant (repeatable; default: every variant)")
    p.add_argument("--from", dest="start", metavar="SYMBOL", help="the window starts at this address")
    p.add_argument("--to", dest="end", metavar="SYMBOL", help="the window ends at this address")
    p.add_argument("--events", help="event kinds, comma-separated (default: [fuzz] events, else all)")
    p.add_argument("--max-instructions", type=int, help="budget of one execution")
    p.add_argument("--out", help="where reproducers (and a campaign's corpus) go")
    p.add_argument("--workers", type=int, default=1, help="processes on this machine")
    p.add_argument("--ray", metavar="auto|ADDRESS|local", help="run on a Ray cluster (extra sandbox[ray])")
    p.add_argument("--exact", action="store_true", help="the general execution path only (a fresh machine per run)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")


def _targets(args: argparse.Namespace) -> list[Any]:
    from ..scenario import Scenario
    from .target import Target

    names = args.variant or Scenario.load(args.scenario).variants
    events = args.events.split(",") if args.events else None
    return [Target(args.scenario, variant=v, events=events, start=args.start, end=args.end,
                   max_instructions=args.max_instructions) for v in names]


def _pool(args: argparse.Namespace, target: Any, coverage: tuple[int, int] | None = None) -> Any:
    from .workers import make_pool
    return make_pool(target.spec_key(), workers=args.workers, ray=args.ray, coverage=coverage, exact=args.exact)


class _Progress:
    """rich's progress bar on a terminal; nothing otherwise."""

    def __init__(self, enabled: bool, what: str, total: float | None):
        self.bar = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[rate]:.0f} exec/s"), TextColumn("findings {task.fields[found]}"),
                                TimeElapsedColumn(), console=Console(stderr=True), transient=True)
            self.task = self.bar.add_task(what, total=total, rate=0.0, found=0)
            self.bar.start()
        self.started = time.monotonic()

    def update(self, done: float, rate_count: int, found: int) -> None:
        if self.bar is not None:
            rate = rate_count / max(1e-9, time.monotonic() - self.started)
            self.bar.update(self.task, completed=done, rate=rate, found=found)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _errors() -> tuple[type, ...]:
    from ..scenario import ScenarioError
    from .campaign import CampaignError
    from .fastpath import FastPathUnsupported
    from .target import TargetError
    return (ScenarioError, TargetError, CampaignError, FastPathUnsupported, KeyError, OSError, RuntimeError)


# -- sweep ------------------------------------------------------------------------------------

def _guarded(run: Any, args: argparse.Namespace) -> int:
    """Bad input is one line on stderr and exit status 2, never a traceback."""
    try:
        return run(args)
    except _errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def cmd_sweep(args: argparse.Namespace) -> int:
    return _guarded(_sweep, args)


def _sweep(args: argparse.Namespace) -> int:
    from ..scenario import Scenario
    from .reproducer import write_reproducer
    from .sweep import sweep, sweep_points

    summaries, status = [], 0
    for target in _targets(args):
        out = Path(args.out or f"sandbox-sweep/{target.path.stem}") / target.variant.name
        total = len(sweep_points(target, unique=args.unique))
        bar = _Progress(not args.json, f"sweep {target.variant.name}", total)
        pool = _pool(args, target)
        started = time.monotonic()
        try:
            result = sweep(target, unique=args.unique, pool=pool,
                           progress=lambda done, n: bar.update(done, done, 0))
        finally:
            bar.close()
            pool.close()
        seconds = time.monotonic() - started
        files = [write_reproducer(target, row.point.plan, row.outcome,
                                  out / f"b{row.point.boundary.count:07d}-{row.point.kind}.toml", how="sweep")
                 for row in result.violating]
        minimal = None
        if files:
            status = 1
            minimal = files[0]  # the earliest boundary: the fewest instructions to reach it
            replay = Scenario.load(minimal).run()
            if not replay.passed:
                print(f"warning: {minimal} does not replay the violation:\n{replay.text()}", file=sys.stderr)
        summary = {"scenario": str(target.path), "variant": target.variant.name, "path": result.path,
                   "points": len(result.rows), "violating": len(result.violating), "seconds": round(seconds, 3),
                   "executions_per_second": round(len(result.rows) / seconds, 1) if seconds else None,
                   "reproducers": [str(f) for f in files], "minimal_reproducer": str(minimal) if minimal else None,
                   "rows": [r.to_json() for r in (result.rows if args.all_rows else result.violating)]}
        summaries.append(summary)
        if not args.json:
            _print_sweep(result, summary, args.all_rows, minimal)
    if args.json:
        print(json.dumps(summaries if len(summaries) > 1 else summaries[0], indent=2))
    return status


def _print_sweep(result: Any, summary: dict[str, Any], all_rows: bool, minimal: Path | None) -> None:
    rows = result.rows if all_rows else result.violating
    print(f"sweep {summary['scenario']} variant {summary['variant']}: {summary['points']} points "
          f"({result.path} path, {summary['executions_per_second']} exec/s), {summary['violating']} violating")
    if rows:
        _table(["boundary", "pc", "instruction", "event", "masking", "outcome"],
               [[str(r.point.boundary.count), f"{r.point.boundary.pc:#x}", r.disassembly, r.point.kind,
                 r.point.masking(), r.outcome.brief()] for r in rows])
    if minimal is not None:
        print(f"\nminimal reproducer ({len(summary['reproducers'])} written under {minimal.parent}): {minimal}")
        print(minimal.read_text())


def _table(header: list[str], rows: list[list[str]]) -> None:
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table
        t = Table(*header)
        for r in rows:
            t.add_row(*r)
        Console().print(t)
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) if i < len(header) - 1 else 0 for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


# -- fuzz ---------------------------------------------------------------------------------------

def cmd_fuzz(args: argparse.Namespace) -> int:
    return _guarded(_fuzz, args)


def _fuzz(args: argparse.Namespace) -> int:
    from .campaign import Campaign

    summaries, status = [], 0
    for target in _targets(args):
        out = Path(args.out or f"sandbox-fuzz/{target.path.stem}") / target.variant.name
        cov = target.config.coverage
        coverage = ((target.resolve(cov[0]), target.resolve(cov[1])) if cov is not None
                    else (target.program.base, target.program.end))
        pool = _pool(args, target, coverage)
        campaign = Campaign(target, out, args.seed, pool)
        done_before = campaign.state.executed
        bar = _Progress(not args.json, f"fuzz {target.variant.name}", args.iterations or args.time)
        try:
            campaign.run(iterations=args.iterations, seconds=args.time,
                         progress=lambda c: bar.update(c.state.executed if args.iterations else c.elapsed,
                                                       c.state.executed - done_before, len(c.state.findings)))
        finally:
            bar.close()
            pool.close()
        s = campaign.state
        ran = s.executed - done_before
        summary = {"scenario": str(target.path), "variant": target.variant.name, "seed": args.seed,
                   "path": pool.path, "out": str(out), "rounds": s.round, "executions": s.executed,
                   "executions_this_run": ran,
                   "executions_per_second": round(ran / campaign.elapsed, 1) if getattr(campaign, "elapsed", 0) else None,
                   "corpus": len(s.corpus), "coverage_blocks": len(s.coverage),
                   "findings": [f.to_json() for f in s.findings]}
        summaries.append(summary)
        status = status or (1 if s.findings else 0)
        if not args.json:
            print(f"fuzz {summary['scenario']} variant {summary['variant']} seed {args.seed}: {s.executed} executions "
                  f"({summary['executions_per_second']} exec/s, {pool.path} path), corpus {len(s.corpus)}, "
                  f"{len(s.coverage)} blocks, {len(s.findings)} findings in {out}")
            for f in s.findings:
                print(f"  {f.file}: {f.plan.describe()}\n      {f.violations[0]}")
    if args.json:
        print(json.dumps(summaries if len(summaries) > 1 else summaries[0], indent=2))
    return status
