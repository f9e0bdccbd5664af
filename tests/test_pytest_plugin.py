"""The pytest plugin as a user's project sees it: fixtures without a conftest, markers,
options, light imports; and this suite runs on it."""

from __future__ import annotations

import subprocess
import sys

import pytest

USER_TEST = '''
import pytest
from sandbox import ExitReason

def test_vm_and_vcpu_fixtures_give_a_fresh_machine(vm, vcpu):
    assert vm.vcpus == [vcpu] and vcpu.reg("pstate") == 0x3c5

@pytest.mark.sandbox(semihosting=True, ram_size=16 << 20)
def test_the_sandbox_marker_configures_the_vm(vm):
    assert vm.semihosting is not None and vm.memory.ram[0].size == 16 << 20

def test_boot_guest_runs_a_snippet_and_reads_its_records(boot_guest, sandbox_options):
    run = boot_guest("guest_main:\\n svc #0x42\\n ret\\n")
    assert run.exit.reason is ExitReason.SYSTEM_EVENT
    assert [r.esr for r in run.records] == [0x56000042]
    assert sandbox_options.timeout == 2.5

@pytest.mark.sandbox(semihosting=True)
def test_semihosting_output_through_boot_guest(boot_guest, vm):
    boot_guest("guest_main:\\n mov w0, #4\\n adr x1, text\\n hlt #0xf000\\n ret\\ntext: .asciz \\"hi\\"\\n")
    assert vm.semihosting.text == "hi"
'''


def test_a_project_without_conftest_gets_fixtures_markers_and_options(pytester: pytest.Pytester):
    pytester.makepyfile(test_user=USER_TEST)
    result = pytester.runpytest_subprocess("--sandbox-timeout", "2.5", "-W", "error::pytest.PytestUnknownMarkWarning")
    result.assert_outcomes(passed=4)


def test_the_plugin_can_be_disabled(pytester: pytest.Pytester):
    pytester.makepyfile(test_user=USER_TEST)
    result = pytester.runpytest_subprocess("-p", "no:sandbox")
    result.assert_outcomes(errors=4)
    assert "fixture 'vm' not found" in result.stdout.str()


def test_options_are_grouped_in_help(pytester: pytest.Pytester):
    result = pytester.runpytest_subprocess("--help")
    text = result.stdout.str()
    assert "AArch64 guests on the sandbox" in text
    for option in ("--sandbox-timeout", "--sandbox-echo", "--sandbox-gdb"):
        assert option in text


def test_loading_the_plugin_imports_neither_unicorn_nor_keystone():
    code = "import sys, sandbox.pytest_plugin; print(sorted(m for m in ('unicorn', 'keystone', 'capstone') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_this_suite_runs_on_the_plugin(request: pytest.FixtureRequest, vm):
    import conftest

    plugin = request.config.pluginmanager.get_plugin("sandbox")
    assert plugin is not None and plugin.__name__ == "sandbox.pytest_plugin"
    assert not hasattr(conftest, "vm") and not hasattr(conftest, "vcpu")  # the fixtures are the plugin's


def test_sandbox_gdb_lets_gdb_drive_the_guest_of_boot_guest(tmp_path):
    import re
    import shutil

    if shutil.which("gdb-multiarch") is None:
        pytest.skip("gdb-multiarch is not installed")
    (tmp_path / "test_debugged.py").write_text(
        "def test_guest_under_gdb(boot_guest):\n"
        "    run = boot_guest('guest_main:\\n mov x7, #5\\n svc #1\\n ret\\n')\n"
        "    assert run.exit.machine_status() == 0 and run.vcpu.reg('x7') == 5\n"
        "    assert [r.esr for r in run.records] == [0x56000001]\n")
    tests = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--sandbox-gdb", "0",
                              "test_debugged.py"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    assert tests.stderr is not None
    port = re.search(r"127\.0\.0\.1:(\d+)", tests.stderr.readline()).group(1)
    gdb = subprocess.run(["gdb-multiarch", "-nx", "-batch", "-ex", f"target remote 127.0.0.1:{port}",
                          "-ex", "monitor exceptions off", "-ex", "continue"],
                         capture_output=True, text=True, timeout=60)
    out, _ = tests.communicate(timeout=60)
    assert "exited normally" in gdb.stdout, gdb.stdout + gdb.stderr
    assert "1 passed" in out, out
