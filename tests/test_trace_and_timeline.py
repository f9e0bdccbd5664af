"""Traces (JSON Lines) and timelines (self-contained HTML/SVG), built on the observer stream."""

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from sandbox.observe import Event, KINDS
from sandbox.scenario import Scenario
from sandbox.timeline import render_html
from sandbox.trace import TRACE_FORMAT, TRACE_VERSION, TraceRecorder, read_trace, start_trace, finish_trace

ROOT = Path(__file__).resolve().parent.parent
SEED004 = ROOT / "scenarios" / "ras" / "seed004-el0-device-serror-deferred-by-esb.toml"
SVG = "{http://www.w3.org/2000/svg}"


def traced(path, tmp_path, variants=None):
    out = tmp_path / "trace.jsonl"
    rec = start_trace(str(out), source=str(path))
    result = Scenario.load(path).run(variants, recorder=rec, count_instructions=True)
    finish_trace(rec, str(tmp_path / "timeline.html"))
    return result, *read_trace(out)


def test_trace_has_a_versioned_header_and_a_record_per_event(tmp_path):
    result, header, records = traced(SEED004, tmp_path)
    assert result.passed
    assert (header["format"], header["version"]) == (TRACE_FORMAT, TRACE_VERSION) and header["kinds"] == list(KINDS)
    kinds = {r["kind"] for r in records}
    assert {"exception", "eret", "exit", "serror_pend", "serror_defer"} <= kinds
    assert [r["seq"] for r in records] == list(range(len(records)))
    for r in records:
        assert r["pc"].startswith("0x") and r["variant"] in ("esb-on-entry", "no-esb-on-entry")
        assert isinstance(r["icount"], int)
    for variant in ("esb-on-entry", "no-esb-on-entry"):
        counts = [r["icount"] for r in records if r["variant"] == variant]
        assert counts == sorted(counts)


def test_trace_records_scenario_steps_and_injections(tmp_path):
    _, _, records = traced(ROOT / "scenarios" / "ras" / "kvm-4715c14bc136-vserror-impdef-esr.toml", tmp_path,
                           ["fixed"])
    step, inject = records[0], records[1]
    assert step["kind"] == "step" and step["icount"] == 0 and step["trigger"] is None
    assert inject["kind"] == "inject" and inject["serror_iss"] == "0x1000000" and inject["events"]["serror_pending"] == "0x1"


def test_trace_exception_records_carry_disassembly_and_decoded_esr(tmp_path):
    _, _, records = traced(SEED004, tmp_path, ["esb-on-entry"])
    svc = next(r for r in records if r["kind"] == "exception" and r["entry"]["esr"] == "0x56000042")
    assert svc["insn"] == "nop" and svc["el"] == 1 and svc["daif"] == "DAIF"  # at ELR; after entry
    dec = svc["entry"]["esr_decoded"]
    assert dec["ec_name"] == "SVC64" and dec["imm16"] == 0x42 and dec["il"] is True
    defer = next(r for r in records if r["kind"] == "serror_defer")
    assert defer["disr"] == "0x81000000" and defer["insn"] == "esb"
    pend = next(r for r in records if r["kind"] == "serror_pend")
    assert pend["esr_decoded"]["ec_name"] == "SERROR" and pend["esr_decoded"]["ids"] is True
    eret = next(r for r in records if r["kind"] == "eret")
    assert eret["insn"] == "eret" and eret["el"] == 0 and eret["daif"] == "----"  # returns to EL0, unmasked


def test_every_observer_kind_is_recorded_generically():
    class FakeVm:
        vcpus: list = []
        observers: list = []

        def read_memory(self, a, n):
            raise OSError("nothing")

    rec = TraceRecorder()
    rec._vm = FakeVm()  # no vCPU: icount/pstate unknown, data still converted
    for kind in KINDS:
        rec(Event(kind, 0, 0x1000, {"esr": 0x96000410, "value": 1 << 63, "nested": {"b": b"\x01"}}))
    assert [r["kind"] for r in rec.records] == list(KINDS)
    r = rec.records[0]
    assert r["value"] == "0x8000000000000000" and r["nested"] == {"b": "01"}
    assert r["esr_decoded"]["ec_name"] == "DABT_CUR" and r["esr_decoded"]["fnv"] is True


def test_timeline_is_self_contained_and_shows_lanes_intervals_and_events(tmp_path):
    _, header, records = traced(SEED004, tmp_path)
    html = (tmp_path / "timeline.html").read_text()
    assert "<script" not in html and "src=" not in html and "href=" not in html
    root = ET.fromstring(html)
    svg = root.find(f".//{SVG}svg")
    groups = svg.findall(f"{SVG}g[@class='vcpu']")
    assert [(g.get("data-variant"), g.get("data-vcpu"), g.get("data-axis")) for g in groups] == [
        ("esb-on-entry", "0", "icount"), ("no-esb-on-entry", "0", "icount")]
    for g in groups:
        mine = [r for r in records if r["variant"] == g.get("data-variant")]
        markers = g.findall(f"{SVG}g[@class='event']")
        assert [m.get("data-kind") for m in markers] == [r["kind"] for r in mine]
        assert all(m.find(f"{SVG}title") is not None for m in markers)
        els = {r.get("data-el") for r in g.findall(f"{SVG}rect[@class='el']")}
        assert els == {"0", "1"}
        assert g.findall(f"{SVG}rect[@class='masked'][@data-bit='A']")
        pending = g.findall(f"{SVG}rect[@class='serror-pending']")
        pend_seq = [r["seq"] for r in mine if r["kind"] == "serror_pend"]
        assert [int(p.get("data-from-seq")) for p in pending] == pend_seq
    rows = root.findall(".//{http://www.w3.org/1999/xhtml}tbody/{http://www.w3.org/1999/xhtml}tr")
    assert len(rows) == len(records)


def test_timeline_without_instruction_counts_uses_event_order():
    header = {"source": "x"}
    records = [{"seq": i, "kind": k, "vcpu": 0, "icount": None, "pc": "0x0", "insn": None, "el": 1,
                "daif": "DAIF"} for i, k in enumerate(("inject", "exit"))]
    root = ET.fromstring(render_html(header, records))
    (g,) = root.findall(f".//{SVG}g[@class='vcpu']")
    assert g.get("data-axis") == "event-order"


def test_asm_runs_take_trace_and_timeline_too(tmp_path):
    trace, svg = tmp_path / "d.jsonl", tmp_path / "d.svg"
    p = subprocess.run([sys.executable, "-m", "sandbox", "run", "firmware/demo.S", "--trace", str(trace),
                        "--timeline", str(svg)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    header, records = read_trace(trace)
    assert header["source"] == "firmware/demo.S"
    exceptions = [r for r in records if r["kind"] == "exception"]
    assert len(exceptions) == 8 and records[-1]["kind"] == "exit"
    assert all(r["icount"] is None for r in records)  # the .S run counted nothing
    root = ET.fromstring(svg.read_text())
    assert len(root.findall(f".//{SVG}g[@data-kind='exception']")) == 8


def test_trace_lines_are_json(tmp_path):
    traced(SEED004, tmp_path, ["esb-on-entry"])
    for line in (tmp_path / "trace.jsonl").read_text().splitlines():
        json.loads(line)
