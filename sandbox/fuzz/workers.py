"""Where executions run: this process, a pool of processes, or a Ray cluster.

Every pool takes a list of plans and returns their outcomes in the same order, so a sweep or
a fuzzing round merges the same way whatever ran it (and a run with N workers or on Ray
equals the local run). Each worker builds the target once from a picklable `TargetKey` and
keeps its executor (fast path when the scenario allows it, else the general one) for every
chunk it gets.
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass
from typing import Any, Callable

from .fastpath import FastExecutor, FastPathUnsupported, fast_path_problem
from .general import run_general
from .outcome import Outcome
from .plan import Plan
from .target import Target


@dataclass(frozen=True)
class TargetKey:
    """What a worker needs to build the same target (all plain data)."""

    path: str
    variant: str | None
    events: tuple[str, ...] | None
    start: str | None
    end: str | None
    max_instructions: int | None

    def build(self) -> Target:
        return Target(self.path, variant=self.variant, events=list(self.events) if self.events else None,
                      start=self.start, end=self.end, max_instructions=self.max_instructions)


class Executor:
    """The fast path when possible, else the general one; `path` says which."""

    def __init__(self, target: Target, coverage: tuple[int, int] | None = None, exact: bool = False):
        self.target = target
        self.fast: FastExecutor | None = None
        self.path = "general"
        if not exact and fast_path_problem(target) is None:
            try:
                self.fast = FastExecutor(target, coverage=coverage)
                self.path = "fast"
            except FastPathUnsupported:
                self.fast = None

    def advance_to(self, count: int) -> None:
        if self.fast is not None and self.fast.start < count:
            self.fast.advance_to(count)

    def execute(self, plan: Plan) -> Outcome:
        if self.fast is not None and (not plan.injections or min(i.at for i in plan.injections) >= self.fast.start):
            try:
                return self.fast.execute(plan)
            except FastPathUnsupported:
                pass
        return run_general(self.target, plan)


_EXECUTORS: dict[tuple[Any, ...], Executor] = {}


def _executor(key: TargetKey, coverage: tuple[int, int] | None, exact: bool, start: int | None) -> Executor:
    k = (key, coverage, exact)
    ex = _EXECUTORS.get(k)
    if ex is None:
        ex = _EXECUTORS[k] = Executor(key.build(), coverage, exact)
    if start is not None:
        ex.advance_to(start)
    return ex


def execute_chunk(key: TargetKey, coverage: tuple[int, int] | None, exact: bool, start: int | None,
                  plans: list[Plan]) -> list[Outcome]:
    """One worker's share (a top-level function: process pools and Ray ship it by name)."""
    ex = _executor(key, coverage, exact, start)
    return [ex.execute(p) for p in plans]


def _chunks(plans: list[Plan], parts: int) -> list[list[Plan]]:
    size = max(1, min(256, -(-len(plans) // max(1, parts * 2))))
    return [plans[i:i + size] for i in range(0, len(plans), size)]


class LocalPool:
    def __init__(self, key: TargetKey, coverage: tuple[int, int] | None = None, exact: bool = False):
        self.key, self.coverage, self.exact = key, coverage, exact
        self.path = _executor(key, coverage, exact, None).path

    def execute(self, plans: list[Plan], *, start: int | None = None,
                progress: Callable[[int, int], None] | None = None) -> list[Outcome]:
        ex = _executor(self.key, self.coverage, self.exact, start)
        out = []
        for i, p in enumerate(plans):
            out.append(ex.execute(p))
            if progress is not None and (i % 64 == 63 or i + 1 == len(plans)):
                progress(i + 1, len(plans))
        return out

    def close(self) -> None:
        pass


class ProcessPool(LocalPool):
    """`--workers N`: N processes on this machine (spawned: no Unicorn state is forked)."""

    def __init__(self, key: TargetKey, workers: int, coverage: tuple[int, int] | None = None, exact: bool = False):
        self.key, self.coverage, self.exact = key, coverage, exact
        self.workers = workers
        self.path = "fast" if not exact and fast_path_problem(key.build()) is None else "general"
        self._pool = multiprocessing.get_context("spawn").Pool(workers)

    def execute(self, plans: list[Plan], *, start: int | None = None,
                progress: Callable[[int, int], None] | None = None) -> list[Outcome]:
        chunks = _chunks(plans, self.workers)
        args = [(self.key, self.coverage, self.exact, start, c) for c in chunks]
        out: list[Outcome] = []
        for part in self._pool.imap(_star, args):  # imap keeps the chunks' order
            out.extend(part)
            if progress is not None:
                progress(len(out), len(plans))
        return out

    def close(self) -> None:
        self._pool.close()
        self._pool.join()


def _star(args: tuple[Any, ...]) -> list[Outcome]:
    return execute_chunk(*args)


class RayPool(LocalPool):
    """`--ray auto|ADDRESS|local`: chunks as Ray tasks (optional extra `sandbox[ray]`)."""

    def __init__(self, key: TargetKey, address: str | None, coverage: tuple[int, int] | None = None,
                 exact: bool = False):
        try:
            import ray
        except ImportError:
            raise RuntimeError("--ray needs the optional extra: pip install 'sandbox[ray]'") from None
        self.ray = ray
        self.key, self.coverage, self.exact = key, coverage, exact
        if not ray.is_initialized():
            if address in (None, "local"):
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
        self.path = "fast" if not exact and fast_path_problem(key.build()) is None else "general"
        self._remote = ray.remote(execute_chunk)
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))

    def execute(self, plans: list[Plan], *, start: int | None = None,
                progress: Callable[[int, int], None] | None = None) -> list[Outcome]:
        refs = [self._remote.remote(self.key, self.coverage, self.exact, start, c)
                for c in _chunks(plans, self.workers)]
        out: list[Outcome] = []
        for ref in refs:  # in submission order: the merge does not depend on who finished first
            out.extend(self.ray.get(ref))
            if progress is not None:
                progress(len(out), len(plans))
        return out


def make_pool(key: TargetKey, *, workers: int = 1, ray: str | None = None, coverage: tuple[int, int] | None = None,
              exact: bool = False) -> LocalPool:
    if ray is not None:
        return RayPool(key, ray, coverage, exact)
    if workers > 1:
        return ProcessPool(key, workers, coverage, exact)
    return LocalPool(key, coverage, exact)
