"""pytest plugin: guest tests in any project, as naturally as with pytest-embedded.

Installed with the sandbox (entry point `pytest11: sandbox`); disable with `-p no:sandbox`.
Importing it loads nothing heavy: Unicorn and keystone are imported by the fixtures.

Fixtures
- `vm`: a fresh `sandbox.Vm`; `@pytest.mark.sandbox(**kwargs)` passes Vm keyword arguments
  (e.g. `semihosting=True`, `unbacked="exit"`, `ram_size=...`).
- `vcpu`: vCPU 0 of `vm`.
- `boot_guest(source, **run_kwargs) -> GuestRun`: assemble `source` with the mini kernel
  (it defines `guest_main`), load it into `vm`, run it to the first exit; `.records` holds what
  the guest's vector table recorded (sandbox.testing.boot).
- `run_scenario(path=None)`: `Scenario.load(path).run()` for a scenario file; the path
  defaults to `@pytest.mark.scenario("file.toml")`, relative to the test file.
- `sandbox_options`: the command-line options below.

Options (group "sandbox")
- `--sandbox-timeout SECONDS`: wall-time budget of each run `boot_guest` starts.
- `--sandbox-echo`: echo guest UART and semihosting output to the terminal (with `-s`).
- `--sandbox-gdb PORT`: `boot_guest` waits for gdb on 127.0.0.1:PORT and lets it drive the
  guest (`target remote :PORT`), then the test goes on with the exit the session ended with.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest


@dataclass(frozen=True)
class SandboxOptions:
    timeout: float | None = None
    echo: bool = False
    gdb_port: int | None = None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sandbox", "AArch64 guests on the sandbox (Unicorn)")
    group.addoption("--sandbox-timeout", type=float, default=None, metavar="SECONDS",
                    help="wall-time budget of each guest run boot_guest starts (default: the sandbox's)")
    group.addoption("--sandbox-echo", action="store_true", default=False,
                    help="echo guest UART and semihosting output to the terminal (use with -s)")
    group.addoption("--sandbox-gdb", type=int, default=None, metavar="PORT",
                    help="boot_guest waits for gdb on 127.0.0.1:PORT and lets it drive the guest")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sandbox(**vm_kwargs): keyword arguments for the Vm the `vm` fixture "
                                       "builds, e.g. @pytest.mark.sandbox(semihosting=True)")
    config.addinivalue_line("markers", "scenario(path): the scenario file `run_scenario` runs "
                                       "(relative to the test file)")


@pytest.fixture(scope="session")
def sandbox_options(pytestconfig: pytest.Config) -> SandboxOptions:
    return SandboxOptions(timeout=pytestconfig.getoption("sandbox_timeout"),
                          echo=pytestconfig.getoption("sandbox_echo"),
                          gdb_port=pytestconfig.getoption("sandbox_gdb"))


@pytest.fixture
def vm(request: pytest.FixtureRequest, sandbox_options: SandboxOptions) -> Any:
    from sandbox import Vm

    marker = request.node.get_closest_marker("sandbox")
    kwargs = dict(marker.kwargs) if marker is not None else {}
    if sandbox_options.echo:
        kwargs.setdefault("uart_echo", sys.stdout)
    machine = Vm(**kwargs)
    if sandbox_options.echo and machine.semihosting is not None:
        machine.semihosting.echo = sys.stdout
    return machine


@pytest.fixture
def vcpu(vm: Any) -> Any:
    return vm.vcpus[0] if vm.vcpus else vm.create_vcpu()


@pytest.fixture
def boot_guest(vm: Any, sandbox_options: SandboxOptions, pytestconfig: pytest.Config) -> Callable[..., Any]:
    from sandbox.testing import boot

    def boot_in_vm(source: str, *, run: bool = True, **run_kwargs: Any) -> Any:
        if sandbox_options.timeout is not None:
            run_kwargs.setdefault("timeout", sandbox_options.timeout)
        if not run or sandbox_options.gdb_port is None:
            return boot(source, vm=vm, run=run, **run_kwargs)
        from sandbox.gdb import serve

        guest = boot(source, vm=vm, run=False)
        # Like a pdb session: the port and the guest's console reach the terminal, not the capture.
        capture = pytestconfig.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            end = serve(vm, sandbox_options.gdb_port, announce=sys.stderr)
        guest.exit = end.exit if end.exit is not None else guest.vcpu.run(**run_kwargs)
        return guest

    return boot_in_vm


@pytest.fixture
def run_scenario(request: pytest.FixtureRequest) -> Callable[..., Any]:
    def run(path: str | Path | None = None) -> Any:
        from sandbox.scenario import Scenario

        if path is None:
            marker = request.node.get_closest_marker("scenario")
            if marker is None or not marker.args:
                raise pytest.UsageError("run_scenario needs a path or @pytest.mark.scenario(path)")
            path = marker.args[0]
        path = Path(path)
        if not path.is_absolute():
            path = Path(request.node.path).parent / path
        return Scenario.load(path).run()

    return run
