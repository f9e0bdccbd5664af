"""gdb-multiarch drives a guest through the sandbox's GDB stub, in batch mode."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from baremetal import build_hello, nm
from sandbox import ExitReason, Vm, assemble
from sandbox.gdb import GdbServer, SessionEnd
from sandbox.loaders.elf import load_elf

ROOT = Path(__file__).resolve().parent.parent
GDB = "gdb-multiarch"  # Debian gdb-multiarch (.ci/run installs it)

# CI installs gdb-multiarch, so there a missing one fails instead of skipping.
pytestmark = pytest.mark.skipif(shutil.which(GDB) is None and not os.environ.get("CI"),
                                reason="gdb-multiarch is not installed")


def gdb_command(port: int, *commands: str, program: Path | None = None) -> list[str]:
    cmd = [GDB, "-nx", "-batch", "-ex", "set architecture aarch64", "-ex", "set pagination off"]
    if program is not None:
        cmd.append(str(program))
    cmd += ["-ex", f"target remote 127.0.0.1:{port}"]
    for c in commands:
        cmd += ["-ex", c]
    return cmd


class Session:
    """A GdbServer serving in a thread while gdb runs as a subprocess."""

    def __init__(self, vm: Vm, **options: object):
        self.server = GdbServer(vm, 0, **options)  # type: ignore[arg-type]
        self.end: SessionEnd | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.end = self.server.serve(accept_timeout=30)

    def finish(self) -> SessionEnd:
        self.thread.join(30)
        self.server.close()
        assert self.end is not None, "the session did not end"
        return self.end


@pytest.fixture(scope="module")
def hello(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_hello(tmp_path_factory.mktemp("gdb"))


def test_gdb_breaks_at_main_reads_and_writes_memory_steps_and_sees_the_exit_status(hello):
    vm = Vm(semihosting=True)
    image = load_elf(vm, hello)
    vm.create_vcpu().set_reg("pc", image.entry)
    s = Session(vm)
    p = subprocess.run(gdb_command(s.server.port, "info registers pc cpsr", "break main", "continue",
                                   "p/x $pc", "p answer", "set var answer = 50", "set $x9 = 0x1234",
                                   "stepi", "p/x $pc", "p/x $x9", "info threads", "delete", "continue",
                                   program=hello),
                       capture_output=True, text=True, timeout=60)
    end = s.finish()
    out = p.stdout
    main = nm(hello)["main"]
    assert re.search(r"pc\s+0x40080000\s+0x40080000 <_start>", out), out
    assert "cpsr" in out and "EL=1" in out  # the target description's PSTATE fields
    assert f"Breakpoint 1, main () at" in out and f"$1 = {main:#x}" in out
    assert "$2 = 40" in out  # read from guest memory
    assert f"$3 = {main + 4:#x}" in out  # one instruction stepped
    assert "$4 = 0x1234" in out  # a register write (P packet), read back from the vCPU after a stop
    assert "Thread 1 (vCPU 0 MPIDR 0x0)" in out
    assert "exited with code 064" in out  # 50 + 2 = 52: gdb's write reached guest memory
    assert end.how == "exited" and end.exit.semihosting.status == 52
    assert vm.semihosting.text == "hello from semihosting\n!\nwritten to stdout\n"
    assert vm.read_memory(main, 4) != bytes.fromhex("000020d4")  # no breakpoint left behind


GUEST = """
.include "kernel.S"
guest_main:
    ldr x1, =0x10000000
load:
    ldr x2, [x1]                 // nothing here: a synchronous external abort
    ret
"""


def test_gdb_stops_on_a_guest_exception_with_its_syndrome_then_lets_the_guest_handle_it():
    vm = Vm(unbacked="abort")
    program = assemble(GUEST, 0x40000000)
    vm.load(program)
    vm.create_vcpu().set_reg("pc", program["_start"])
    s = Session(vm)
    p = subprocess.run(gdb_command(s.server.port, "continue", "p/x $esr_el1", "p/x $far_el1", "p/x $elr_el1",
                                   "p/x $pc", "monitor exceptions off", "continue"),
                       capture_output=True, text=True, timeout=60)
    end = s.finish()
    out = p.stdout + p.stderr
    assert "Program received signal SIGBUS" in out, out  # an external abort is a bus error
    assert "guest exception: DABT_CUR taken at vector +0x200" in out
    assert "$1 = 0x96000010" in out and "$2 = 0x10000000" in out
    assert f"$3 = {program['load']:#x}" in out and f"$4 = {program['exc_vectors'] + 0x200:#x}" in out
    assert "stop on guest exceptions: off" in out
    assert "exited normally" in out  # the guest's handler ran, guest_main returned: SYSTEM_OFF
    assert end.how == "exited" and end.exit.reason is ExitReason.SYSTEM_EVENT
    assert [(r.esr, r.elr) for r in vm.exception_records(program)] == [(0x96000010, program["load"])]


def test_ctrl_c_in_gdb_interrupts_a_spinning_guest():
    vm = Vm()
    program = assemble('.include "kernel.S"\nguest_main:\nspin:\n add x5, x5, #1\n b spin\n', 0x40000000)
    vm.load(program)
    vm.create_vcpu().set_reg("pc", program["_start"])
    s = Session(vm)
    gdb = subprocess.Popen(gdb_command(s.server.port, "continue", "p $x5 > 0", "p/x $pc", "detach"),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # gdb connects and continues; the guest spins
    gdb.send_signal(signal.SIGINT)  # what Ctrl-C at gdb's prompt does: gdb sends 0x03
    out, err = gdb.communicate(timeout=60)
    end = s.finish()
    assert "Program received signal SIGINT" in out, out + err
    assert "$1 = 1" in out
    assert f"$2 = {program['spin']:#x}" in out or f"$2 = {program['spin'] + 4:#x}" in out
    assert end.how == "detached"
    assert vm.vcpus[0].reg("pc") in (program["spin"], program["spin"] + 4)


def test_an_unhandled_vcpu_exit_stops_gdb_with_the_exit_described():
    vm = Vm(unbacked="exit")
    program = assemble('.include "kernel.S"\nguest_main:\n ldr x1, =0x10000000\n str x1, [x1]\n ret\n',
                       0x40000000)
    vm.load(program)
    vm.create_vcpu().set_reg("pc", program["_start"])
    s = Session(vm)
    p = subprocess.run(gdb_command(s.server.port, "continue", "kill"), capture_output=True, text=True,
                       timeout=60)
    end = s.finish()
    assert "vCPU 0 exit: MMIO at pc=" in p.stderr and "write 8B @ 0x10000000" in p.stderr, p.stderr
    assert "Program received signal SIGTRAP" in p.stdout
    assert end.how in ("killed", "disconnected")


def test_the_stub_listens_on_loopback_only():
    vm = Vm()
    vm.create_vcpu()
    with GdbServer(vm, 0) as server:
        assert server.address == ("127.0.0.1", server.port) and server.port > 0


def test_sandbox_run_gdb_port_serves_gdb_and_exits_with_the_guest_status(hello):
    cli = subprocess.Popen([sys.executable, "-m", "sandbox", "run", str(hello), "--semihosting", "--gdb", "0"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert cli.stderr is not None
    line = cli.stderr.readline()
    port = int(re.search(r"waiting for gdb on 127\.0\.0\.1:(\d+)", line).group(1))
    p = subprocess.run(gdb_command(port, "break semihosting_exit", "continue", "p status", "continue",
                                   program=hello), capture_output=True, text=True, timeout=60)
    out, _ = cli.communicate(timeout=60)
    assert "Breakpoint 1, semihosting_exit (status=42)" in p.stdout, p.stdout + p.stderr
    assert "exited with code 052" in p.stdout
    assert cli.returncode == 42 and "gdb session exited" in out and "hello from the UART" in out


TWO_CPUS = """
.include "kernel.S"
.include "smp.S"
guest_main:
    str x30, [sp, #-16]!
    mov x0, #1
    ldr x1, =work
    bl cpu_on                    // CPU 1 runs `work`
    ldr x9, =flag
wait:
    ldr x10, [x9]
    cbz x10, wait
    ldr x30, [sp], #16
    ret                          // SYSTEM_OFF
work:
    mov x7, #0x77
    ldr x9, =flag
    str x7, [x9]
    ret                          // CPU_OFF
.balign 8
flag: .quad 0
"""


def test_gdb_continue_runs_every_vcpu_and_stops_in_the_thread_that_hit_the_breakpoint():
    vm = Vm()
    vm.create_vcpu()
    vm.create_vcpu()
    program = assemble(TWO_CPUS, 0x40000000)
    vm.load(program)
    vm.vcpus[0].set_reg("pc", program["_start"])
    s = Session(vm)
    p = subprocess.run(gdb_command(s.server.port, "info threads", f"break *{program['work']:#x}", "continue",
                                   "p/x $pc", "p $x0", "info threads", "thread 1", "p/x $pc", "delete", "continue"),
                       capture_output=True, text=True, timeout=60)
    end = s.finish()
    out = p.stdout + p.stderr
    assert "Thread 2 (vCPU 1 MPIDR 0x1)" in out, out  # both vCPUs are threads from the start
    assert re.search(r"Thread 2 .*hit Breakpoint 1", out), out  # CPU 1 hit it, not the current thread
    assert f"$1 = {program['work']:#x}" in out
    assert "$2 = 1" in out  # secondary_entry calls `work` with x0 = MPIDR Aff0
    assert "* 2    Thread 2" in out  # the stopped vCPU became gdb's current thread
    pc0 = int(re.search(r"\$3 = (0x[0-9a-f]+)", out).group(1), 16)
    # CPU 0 stands right after its CPU_ON call: the call ended its turn, CPU 1 ran next.
    assert pc0 == program["cpu_on"] + 20
    assert "exited normally" in out  # CPU 1 raised the flag, CPU 0 powered off
    assert end.how == "exited" and end.exit.reason is ExitReason.SYSTEM_EVENT
    assert vm.read_memory(program["flag"], 1) == b"\x77"
