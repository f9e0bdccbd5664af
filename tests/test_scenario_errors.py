"""A bad scenario file gets one message naming the file, the line and the field, never a
traceback; the runner's own API for fuzzers; the command line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.scenario import Scenario, ScenarioError

ROOT = Path(__file__).resolve().parent.parent

GOOD = '''format_version = 1
purpose = "a good base"

[machine]
ras = true

[firmware]
files = ["kernel.S"]
source = """
guest_main:
    msr daifclr, #4
unmasked:
    nop
    ret
"""

[[steps]]
do = [ { set_events = { serror_pending = 1 } } ]

[expect]
exceptions = [ { vector = 0x380, elr = "unmasked" } ]
'''


def load_text(tmp_path, text):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    return f, Scenario.load(f)


def error_of(tmp_path, text):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ScenarioError) as e:
        Scenario.load(f)
    return f, e.value


def line_of(text, needle):
    return next(i for i, row in enumerate(text.splitlines(), 1) if needle in row)


def test_the_base_file_is_good(tmp_path):
    _, sc = load_text(tmp_path, GOOD)
    assert sc.run().passed


@pytest.mark.parametrize("change, needle, field, words", [
    (("ras = true", "ras = true\nrma = 5"), "rma = 5", "machine.rma", "unknown key 'rma'"),
    (("ras = true", 'ras = "yes"'), 'ras = "yes"', "machine.ras", "expected true or false, got a string"),
    (('elr = "unmasked"', 'elr = "unmaskd"'), 'elr = "unmaskd"', "expect.exceptions[0].elr",
     "missing symbol 'unmaskd'"),
    (("serror_pending = 1", "serror_pendin = 1"), "serror_pendin", "steps[0].do[0].set_events.serror_pendin",
     "unknown key"),
    (("set_events", "set_event"), "set_event", "steps[0].do[0].set_event", "unknown action 'set_event'"),
    (("do = [", 'when = { pcc = 1 }\ndo = ['), "pcc", "steps[0].when.pcc", "unknown trigger 'pcc'"),
    (("do = [", 'when = { exit = "MMOI" }\ndo = ['), "MMOI", "steps[0].when.exit", "exit reason"),
    (("vector = 0x380", "vector = -1"), "vector = -1", "expect.exceptions[0].vector", "at least 0"),
    (("ras = true", 'ras = true\nquirks = ["no-such-quirk"]'), "no-such-quirk", "machine.quirks[0]",
     "is not one of"),
    (("format_version = 1", "format_version = 2"), "format_version = 2", "format_version", "reads format_version 1"),
    (('purpose = "a good base"\n', ""), "format_version", "", "missing required key 'purpose'"),
])
def test_bad_field_gives_file_line_and_field(tmp_path, change, needle, field, words):
    text = GOOD.replace(*change, 1)
    f, err = error_of(tmp_path, text)
    assert err.file == str(f) and err.line == line_of(text, needle)
    assert err.field == field and words in err.message
    assert str(err).startswith(f"{f}:{err.line}: ")


def test_toml_syntax_error_names_the_line(tmp_path):
    text = GOOD.replace("ras = true", "ras = = true")
    f, err = error_of(tmp_path, text)
    assert err.line == line_of(text, "ras = = true") and "TOML syntax error" in err.message


def test_assembler_error_in_inline_source_names_the_scenario_line(tmp_path):
    text = GOOD.replace("    nop\n", "    nopp x0\n", 1)
    f, err = error_of(tmp_path, text)
    assert err.file == str(f) and err.line == line_of(text, "nopp x0") and err.field == "firmware.source"


def test_machine_errors_found_when_building_name_the_field(tmp_path):
    text = GOOD + '\n[[poison]]\naddress = 0x10\n'
    f, err = error_of(tmp_path, text)
    assert err.field == "poison[0]" and err.line == line_of(text, "[[poison]]") and "not guest RAM" in err.message


def test_record_trigger_without_the_recording_vectors_is_refused(tmp_path):
    text = GOOD.replace('files = ["kernel.S"]\n', "").replace("guest_main:", "_start:").replace(
        "do = [", "when = { record = { vector = 0x380 } }\ndo = [").replace(
        'exceptions = [ { vector = 0x380, elr = "unmasked" } ]', "")
    _, err = error_of(tmp_path, text)
    assert err.field == "steps[0].when" and "firmware/vectors.S" in err.message


def test_cli_bad_file_is_one_line_status_2_and_no_traceback(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text(GOOD.replace("ras = true", "ras = true\nrma = 5"))
    p = subprocess.run([sys.executable, "-m", "sandbox", "run", str(f)], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip() == f"error: {f}:6: machine.rma: unknown key 'rma' (did you mean 'ras'?)"


def test_cli_pass_fail_exit_codes_and_json(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    bad = tmp_path / "fail.toml"
    bad.write_text(GOOD.replace("vector = 0x380", "vector = 0x200"))
    ok = subprocess.run([sys.executable, "-m", "sandbox", "run", str(good)], capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0 and ok.stdout.startswith("PASS")
    no = subprocess.run([sys.executable, "-m", "sandbox", "run", str(bad), "--json"], capture_output=True, text=True,
                        cwd=ROOT)
    assert no.returncode == 1
    data = json.loads(no.stdout)
    (variant,) = data["variants"]
    assert data["passed"] is False
    assert {"field": "exceptions[0] (in order)"}.items() <= variant["mismatches"][0].items()
    assert variant["observed"]["exceptions"][0]["vector"] == "0x380"


def test_cli_list_shows_every_scenario_with_its_purpose():
    p = subprocess.run([sys.executable, "-m", "sandbox", "list"], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0
    for f in (ROOT / "scenarios").rglob("*.toml"):
        assert str(f.relative_to(ROOT / "scenarios")) in p.stdout
    assert "KVM e735a5da6442" in p.stdout


# -- the run API for fuzzers ------------------------------------------------------------------------

SPIN = (ROOT / "scenarios" / "inject-at-instruction-boundary.toml")


def test_inject_at_chosen_boundaries_from_one_checkpoint_is_deterministic():
    sc = Scenario.load(SPIN)
    run = sc.prepare(count_instructions=True)
    assert run.advance(150) is None and run.instruction_count() == 150
    start = run.checkpoint()
    seen = {}
    for boundary in (160, 171, 160):
        run.rewind(start)
        assert run.advance(boundary) is None and run.instruction_count() == boundary
        run.apply("set_events", {"serror_pending": 1})
        run.step_index = len(sc.spec.steps)  # the file's own step is replaced by ours
        result = run.execute()
        rec = result.observed["exceptions"][0]
        assert rec["vector"] == 0x580 and rec["esr"] == 0xBF000000
        seen.setdefault(boundary, set()).add(rec["elr"])
    assert len(seen[160]) == 1  # the same boundary gives the same ELR after a rewind
    assert seen[160] != seen[171]
