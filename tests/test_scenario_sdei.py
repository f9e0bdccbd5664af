"""SDEI in scenario files (actions, triggers, expectations), several vCPUs under Vm.run,
firmware-first by SDEI event, and the SDEI records of traces and timelines."""

import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from sandbox import Vm, assemble
from sandbox.firmware import firmware_dir
from sandbox.kvm import EINVAL, ENOENT, EPERM
from sandbox.ras.ghes import FirmwareFirst
from sandbox.ras.hest import Notification
from sandbox.scenario import Scenario, ScenarioError
from sandbox.trace import finish_trace, read_trace, start_trace

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"
SVG = "{http://www.w3.org/2000/svg}"

EVENT = 0x400010
HOST_INJECT = f"""
format_version = 1
purpose = "t"
[firmware]
files = ["kernel.S", "sdei.S"]
source = '''
guest_main:
    stp x29, x30, [sp, #-16]!
    ldr x1, ={EVENT:#x}
    mov x3, #0x77
    bl sdei_listen
    mov x1, #0
    mov x3, #0x78
    bl sdei_listen
    ldr x0, =0x1111
ready:
    nop
after:
    mov x1, #0
    mrs x2, mpidr_el1
    and x2, x2, #0xff
    bl sdei_event_signal
signalled:
    ldp x29, x30, [sp], #16
    ret
'''
[[steps]]
do = [ {{ sdei_expose = {{ event = {EVENT:#x} }} }} ]
[[steps]]
when = {{ pc = "ready" }}
do = [ {{ sdei_inject = {{ event = {EVENT:#x} }} }} ]
[[steps]]
when = {{ sdei_dispatch = {{ event = {EVENT:#x} }} }}
[[steps]]
when = {{ sdei_complete = {EVENT:#x} }}
[[steps]]
when = {{ sdei_dispatch = 0 }}
[[steps]]
when = {{ sdei_complete = true }}
"""


def write(tmp_path, text, name="s.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_sdei_dispatch_trigger_stops_at_the_handler_entry_with_x0_to_x3_set(tmp_path):
    run = Scenario.load(write(tmp_path, HOST_INJECT)).prepare()
    sym = run.program.symbols
    assert run.execute(until_step=3) is None  # host-injected: dispatched by the run loop
    v = run.vm.vcpus[0]
    assert v.reg("pc") == sym["sdei_handler"]
    assert (v.reg("x0"), v.reg("x1"), v.reg("x2")) == (EVENT, 0x77, sym["ready"])
    assert run.vm.hypervisor.sdei.pes[0].stack[-1].num == EVENT
    assert [e.reason.name for e in run.exits] == []  # a trigger's stop is not a guest exit


def test_sdei_complete_trigger_stops_where_complete_resumed(tmp_path):
    run = Scenario.load(write(tmp_path, HOST_INJECT)).prepare()
    assert run.execute(until_step=4) is None
    v = run.vm.vcpus[0]
    assert v.reg("pc") == run.program.symbols["ready"] and v.reg("x0") == 0x1111  # x0-x17 restored
    assert not run.vm.hypervisor.sdei.pes[0].stack


def test_sdei_dispatch_trigger_from_a_guest_call_stops_at_the_handler_too(tmp_path):
    run = Scenario.load(write(tmp_path, HOST_INJECT)).prepare()
    sym = run.program.symbols
    assert run.execute(until_step=5) is None  # EVENT_SIGNAL: dispatched as the HVC returns
    v = run.vm.vcpus[0]
    assert v.reg("pc") == sym["sdei_handler"] and (v.reg("x0"), v.reg("x1")) == (0, 0x78)
    assert v.reg("x2") == sym["sdei_call"] + 16
    result = run.execute()
    assert result.passed, result.mismatches
    assert [c["event"] for c in result.observed["sdei_completions"]] == [EVENT, 0]
    assert [r["pc"] for r in result.observed["sdei"]] == [sym["ready"], sym["sdei_call"] + 16]


def test_sdei_expectations_report_what_differs(tmp_path):
    text = HOST_INJECT + f"""
[expect]
sdei = [ {{ event = {EVENT:#x}, arg = 0x99 }}, {{ event = 0 }} ]
sdei_completions = [ {{ how = "complete_and_resume" }}, {{ how = "complete" }} ]
sdei_state = [ {{ cpu = 0, masked = true, events = [ {{ event = {EVENT:#x}, status = 7 }} ] }} ]
"""
    result = Scenario.load(write(tmp_path, text)).run()
    fields = {m.field for m in result.variants[0].mismatches}
    assert fields == {"sdei[0].arg", "sdei_completions[0].how", "sdei_state[cpu 0].masked",
                      f"sdei_state[cpu 0].events[{EVENT:#x}].status"}
    assert "sdei handler cpu0 event 0x400010 arg 0x77" in result.text()


@pytest.mark.parametrize("snippet, where, message", [
    ('do = [ { sdei_inject = { event = "x" } } ]', "steps[0].do[0].sdei_inject.event", "expected an integer"),
    ('do = [ { sdei_expose = { event = 1, priority = 1 } } ]', "steps[0].do[0].sdei_expose.priority", "unknown key"),
    ('do = [ { raise_interrupt = { intid = 2000 } } ]', "steps[0].do[0].raise_interrupt.intid", "at most 1019"),
    ('when = { sdei_dispatch = "handler" }', "steps[0].when.sdei_dispatch", "takes true"),
    ('when = { sdei_complete = { event = 1, vcpu = 1 } }', "steps[0].when.sdei_complete.vcpu", "unknown key"),
])
def test_bad_sdei_steps_name_file_line_and_field(tmp_path, snippet, where, message):
    text = f"""format_version = 1
purpose = "t"
[firmware]
source = "guest_main: ret"
files = ["kernel.S"]
[[steps]]
{snippet}
"""
    with pytest.raises(ScenarioError) as e:
        Scenario.load(write(tmp_path, text))
    assert e.value.line == 7 and e.value.field == where and message in e.value.message


def test_bad_per_vcpu_expectations_are_file_errors(tmp_path):
    base = 'format_version = 1\npurpose = "t"\n[firmware]\nsource = "guest_main: ret"\nfiles = ["kernel.S"]\n'
    for snippet, field in (('[machine]\nvcpus = 600\n', "machine.vcpus"),
                           ('[expect]\nexits = ["SYSTEM_EVENT@one"]\n', "expect.exits[0]"),
                           ('[expect]\nvcpus = [ { vcpu = 0, power = "sleeping" } ]\n', "expect.vcpus[0].power"),
                           ('[expect]\nsdei_state = [ { cpu = 0, running = [true] } ]\n', "expect.sdei_state[0].running")):
        with pytest.raises(ScenarioError) as e:
            Scenario.load(write(tmp_path, base + snippet))
        assert e.value.field == field, (snippet, e.value)


def test_two_vcpus_run_under_vm_run_and_steps_address_their_vcpu():
    sc = Scenario.load(SCENARIOS / "smp-sdei-shared-event-routed-to-vcpu1.toml")
    run = sc.prepare()
    result = run.execute()
    assert result.passed, result.mismatches
    assert [(e.reason.name, e.vcpu) for e in run.exits] == [("SYSTEM_EVENT", 0)]
    # the step addressed to vCPU 1 stopped vCPU 1; the handler ran there only
    assert [r["cpu"] for r in result.observed["sdei"]] == [1]
    assert run.vm.vcpus[1].instructions > 0


def test_exit_expectations_can_name_the_vcpu(tmp_path):
    text = (SCENARIOS / "smp-sdei-shared-event-routed-to-vcpu1.toml").read_text().replace(
        'exits = ["SYSTEM_EVENT@0"]', 'exits = ["SYSTEM_EVENT@1"]')
    result = Scenario.load(write(tmp_path, text)).run()
    assert [m.field for m in result.variants[0].mismatches] == ["exits"]
    assert result.variants[0].mismatches[0].observed == ["SYSTEM_EVENT@0"]


# -- firmware-first by SDEI -------------------------------------------------------------------

GHES_SDEI = 0x400040


def ff_machine(register: bool):
    vm = Vm()
    src = (f'.include "kernel.S"\n.include "sdei.S"\n.include "ghes.S"\n.include "ghes_sdei.S"\n'
           f"guest_main:\n    stp x29, x30, [sp, #-16]!\n"
           + (f"    ldr x1, ={GHES_SDEI:#x}\n    bl ghes_sdei_listen\n" if register else "")
           + "ready:\n    nop\n    ldp x29, x30, [sp], #16\n    ret\n")
    program = assemble(src, 0x40000000, include_path=[firmware_dir()])
    vm.load(program)
    v = vm.create_vcpu()
    v.set_reg("pc", program.symbols["_start"])
    vm.sdei.expose(GHES_SDEI)
    ff = FirmwareFirst(vm, 0x43000000, [(0, Notification.SOFTWARE_DELEGATED, GHES_SDEI)])
    ff.publish(program.symbols["ghes_hest_ptr"])
    return vm, v, ff, program


def test_ghes_sdei_source_signals_its_event_and_the_guest_consumes_from_the_handler():
    from sandbox.ras.consumer import consumed_errors
    from sandbox.sdei_client import sdei_records
    vm, v, ff, program = ff_machine(register=True)
    from sandbox.breakpoint import Breakpoint
    bp = Breakpoint(v, program.symbols["ready"])
    bp.arm()
    v.run()
    bp.disarm()
    assert ff.record_memory_error(0x42000000, kind=5).value == "delivered"
    assert vm.hypervisor.sdei.table.pending  # the event is pending: the guest has not run yet
    ex = v.run()
    assert ex.reason.name == "SYSTEM_EVENT"
    [c] = consumed_errors(vm, program.symbols["ghes_log"])
    assert (c.notification, c.physical_address, c.memory_section) == (11, 0x42000000, True)
    [r] = sdei_records(vm, program.symbols, 0)
    assert (r.event, r.arg, r.interrupted_pc) == (GHES_SDEI, GHES_SDEI, program.symbols["ready"])
    assert ff.acknowledged(ff.sources[0])


def test_ghes_sdei_notification_refused_before_anything_is_written():
    vm, v, ff, _ = ff_machine(register=False)
    source = ff.sources[0]
    with pytest.raises(OSError) as e:
        ff.record_memory_error(0x42000000, kind=5)
    assert e.value.errno == EPERM  # the guest never registered and enabled the event
    assert struct.unpack("<I", vm.read_memory(source.block_address, 4)) == (0,)  # BlockStatus untouched
    assert ff.acknowledged(source) and not vm.hypervisor.sdei.table.pending


@pytest.mark.parametrize("vector, errno", [(0, EINVAL), (0x400041, ENOENT)])
def test_ghes_sdei_source_needs_a_real_event_other_than_event_0(vector, errno):
    vm = Vm()
    vm.create_vcpu()
    ff = FirmwareFirst(vm, 0x43000000, [(0, Notification.SOFTWARE_DELEGATED, vector)])
    with pytest.raises(OSError) as e:
        ff.record_memory_error(0x42000000, kind=5)
    assert e.value.errno == errno


# -- traces and timelines --------------------------------------------------------------------

def test_trace_and_timeline_of_a_run_with_sdei_dispatches_and_completions(tmp_path):
    out, picture = tmp_path / "t.jsonl", tmp_path / "t.html"
    path = SCENARIOS / "firmware-first-sdei.toml"
    rec = start_trace(str(out), source=str(path))
    result = Scenario.load(path).run(recorder=rec, count_instructions=True)
    finish_trace(rec, str(picture))
    assert result.passed
    _, records = read_trace(out)
    program = Scenario.load(path).prepare().program.symbols
    dispatches = [r for r in records if r["kind"] == "sdei_dispatch"]
    completes = [r for r in records if r["kind"] == "sdei_complete"]
    assert len(dispatches) == len(completes) == 2
    for d in dispatches:
        assert d["event"] == hex(GHES_SDEI) and d["handler"] == hex(program["sdei_handler"])
        assert d["interrupted_pc"] == hex(program["ready"]) and d["arg"] == hex(GHES_SDEI)
        assert d["critical"] is False and isinstance(d["icount"], int)
    for c in completes:
        assert c["how"] == "complete" and c["event"] == hex(GHES_SDEI) and c["interrupted_pc"] == hex(program["ready"])
    order = [r["kind"] for r in records if r["kind"] in ("sdei_dispatch", "sdei_complete")]
    assert order == ["sdei_dispatch", "sdei_complete"] * 2
    root = ET.fromstring(picture.read_text())
    (g,) = root.findall(f".//{SVG}g[@class='vcpu']")
    handlers = g.findall(f"{SVG}rect[@class='sdei-handler']")
    assert [int(h.get("data-from-seq")) for h in handlers] == [int(d["seq"]) for d in dispatches]
    assert all(float(h.get("width")) > 0 for h in handlers)
    kinds = [m.get("data-kind") for m in g.findall(f"{SVG}g[@class='event']")]
    assert kinds.count("sdei_dispatch") == 2 and kinds.count("sdei_complete") == 2


SIGNAL = f"""
format_version = 1
purpose = "t"
[firmware]
files = ["kernel.S", "sdei.S"]
source = '''
guest_main:
    stp x29, x30, [sp, #-16]!
    ldr x1, ={EVENT:#x}
    mov x3, #0x77
    REGISTER
ready:
    nop
    ldp x29, x30, [sp], #16
    ret
'''
[[steps]]
do = [ {{ sdei_expose = {{ event = {EVENT:#x} }} }} ]
[[steps]]
when = {{ pc = "ready" }}
do = [ {{ sdei_signal = {{ event = {EVENT:#x} }} }}, {{ sdei_signal = {{ event = {EVENT:#x} }} }} ]
"""


def test_sdei_signal_is_an_edge_two_signals_give_one_handler_run(tmp_path):
    text = SIGNAL.replace("REGISTER", "bl sdei_listen") + f"""
[expect]
sdei = [ {{ event = {EVENT:#x}, arg = 0x77, pc = "ready" }} ]
"""
    result = Scenario.load(write(tmp_path, text)).run()
    assert result.passed, result.text()


def test_sdei_signal_of_an_event_the_guest_did_not_enable_is_a_host_error(tmp_path):
    text = SIGNAL.replace("REGISTER", "nop") + '[expect]\nhost_error = "not registered and enabled"\nsdei = []\n'
    result = Scenario.load(write(tmp_path, text)).run()
    assert result.passed, result.text()
    assert result.variants[0].observed["host_error"].startswith("sdei_signal: ")


def test_sandbox_list_shows_the_new_scenarios_and_list_steps_the_registries(capsys):
    from sandbox.cli import main
    assert main(["list", str(SCENARIOS)]) == 0
    listed = capsys.readouterr().out
    for name in ("firmware-first-sdei.toml", "smp-sdei-shared-event-routed-to-vcpu1.toml",
                 "ras/tfa-4096bd66c-sdei-bind-exhaustion.toml", "ras/kvm-sdei-v7-complete-and-resume-address.toml"):
        assert name in listed
    assert main(["list", "--steps"]) == 0
    steps = capsys.readouterr().out
    for name in ("sdei_expose", "sdei_inject", "sdei_signal", "raise_interrupt", "sdei_dispatch", "sdei_complete"):
        assert f"  {name} " in steps


def test_sdei_bind_overflow_quirk_crashes_the_machine_at_the_fourth_bind_else_it_powers_off():
    from sandbox.kvm import SystemEventType
    sc = Scenario.load(SCENARIOS / "ras" / "tfa-4096bd66c-sdei-bind-exhaustion.toml")
    ends = {}
    for name in ("buggy", "fixed"):
        run = sc.prepare(name)
        assert run.execute().passed
        ends[name] = (run.exits[-1].system_event.type, run.exits[-1].pc)
    sym = sc.prepare().program.symbols
    assert ends["buggy"] == (SystemEventType.CRASH, sym["sdei_call"] + 16)  # right after the fourth bind's HVC
    assert ends["fixed"][0] == SystemEventType.SHUTDOWN
