"""A timeline picture of a trace: one self-contained HTML page (or SVG) that opens offline.

Per run (scenario variant) and vCPU, over instruction count (or event order when the run
did not count instructions):

- the exception level and the four PSTATE mask bits D, A, I, F (as of each event: the
  vector's PSTATE after an exception, SPSR after an exception return);
- intervals where a virtual SError was pending (serror_pend until it was taken or an ESB
  deferred it) and where an SDEI handler ran (sdei_dispatch until sdei_complete);
- a marker for every event: exceptions taken (by type), exception returns, injections,
  hypercalls, exits, firmware-first records, scenario steps; each marker's tooltip (SVG
  <title>) carries the disassembly and the decoded ESR.

An event table under the picture lists everything in text. No scripts, no external files.
The markup is well-formed XML, so tools (and the tests) can parse it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable
from xml.sax.saxutils import escape, quoteattr

SVG_NS = "http://www.w3.org/2000/svg"
WIDTH = 1100
LEFT = 130
LANE = 18
GAP = 4
LANES = ("EL", "D", "A", "I", "F", "SError pending", "SDEI handler", "events")
EL_COLOURS = {0: "#9ecae1", 1: "#3182bd", 2: "#08519c", 3: "#08306b"}
MASKED = "#636363"
MARKERS = {  # kind -> (shape, colour)
    "exception": ("down", "#d62728"), "eret": ("up", "#2ca02c"), "exit": ("square", "#7f7f7f"),
    "inject": ("circle", "#9467bd"), "hypercall": ("diamond", "#17becf"), "ghes": ("circle", "#ff7f0e"),
    "step": ("flag", "#000000"), "serror_pend": ("circle", "#e377c2"), "serror_defer": ("circle", "#8c564b"),
    "sdei_dispatch": ("down", "#bcbd22"), "sdei_complete": ("up", "#bcbd22"),
}
EXCEPTION_COLOURS = {"SYNC": "#d62728", "IRQ": "#1f77b4", "FIQ": "#aec7e8", "SERROR": "#ff00ff"}


def _describe(rec: dict[str, Any]) -> str:
    """One line of text for a record: what, where, and the decoded syndrome if any."""
    parts = [f"#{rec['seq']} {rec['kind']}", f"vCPU {rec['vcpu']}"]
    if rec.get("icount") is not None:
        parts.append(f"icount {rec['icount']}")
    parts.append(f"pc {rec['pc']}" + (f" ({rec['insn']})" if rec.get("insn") else ""))
    parts.append(f"{_mode(rec)} DAIF {rec.get('daif', '?')}")
    entry = rec.get("entry")
    if isinstance(entry, dict):
        parts.append(f"{entry.get('kind')} vector +{entry.get('vector_offset')} ELR {entry.get('elr')}")
        esr = entry.get("esr")
        if esr:
            dec = entry.get("esr_decoded", {})
            parts.append(f"ESR {esr} {dec.get('ec_name', '')}")
    ex = rec.get("exit")
    if isinstance(ex, dict):
        parts.append(f"exit {ex.get('reason')}")
    for key in ("esr", "disr", "action", "address", "name", "trigger"):
        if key in rec and rec[key] is not None:
            parts.append(f"{key} {rec[key]}")
    return "; ".join(parts)


def _mode(rec: dict[str, Any]) -> str:
    return f"EL{rec.get('el', '?')}"


def _intervals(recs: list[dict[str, Any]], xs: list[float], start_kind: str, end: "Any") -> list[tuple[float, float, int]]:
    """[x0, x1) spans from a `start_kind` event to the first event for which `end(rec)` holds."""
    spans, opened, seq = [], None, 0
    for rec, x in zip(recs, xs):
        if rec["kind"] == start_kind and opened is None:
            opened, seq = x, rec["seq"]
        elif opened is not None and end(rec):
            spans.append((opened, x, seq))
            opened = None
    if opened is not None:
        spans.append((opened, xs[-1] if xs else opened, seq))
    return spans


def _serror_over(rec: dict[str, Any]) -> bool:
    entry = rec.get("entry")
    return rec["kind"] == "serror_defer" or (rec["kind"] == "exception" and isinstance(entry, dict)
                                             and entry.get("kind") == "SERROR")


def _marker(shape: str, x: float, y: float, colour: str) -> str:
    s = 5
    if shape == "down":
        return f'<path d="M{x - s:.1f},{y - s} L{x + s:.1f},{y - s} L{x:.1f},{y + s} Z" fill="{colour}"/>'
    if shape == "up":
        return f'<path d="M{x - s:.1f},{y + s} L{x + s:.1f},{y + s} L{x:.1f},{y - s} Z" fill="{colour}"/>'
    if shape == "square":
        return f'<rect x="{x - s:.1f}" y="{y - s}" width="{2 * s}" height="{2 * s}" fill="{colour}"/>'
    if shape == "diamond":
        return f'<path d="M{x:.1f},{y - s} L{x + s:.1f},{y} L{x:.1f},{y + s} L{x - s:.1f},{y} Z" fill="{colour}"/>'
    if shape == "flag":
        return (f'<path d="M{x:.1f},{y + s + 2} L{x:.1f},{y - s - 2} L{x + 2 * s:.1f},{y - s} '
                f'L{x:.1f},{y}" stroke="{colour}" fill="{colour}"/>')
    return f'<circle cx="{x:.1f}" cy="{y}" r="{s - 1}" fill="{colour}"/>'


def _group_svg(title: str, recs: list[dict[str, Any]], y0: int, variant: str, vcpu: int) -> tuple[str, int]:
    counted = all(r.get("icount") is not None for r in recs)
    raw = [float(r["icount"]) if counted else float(i) for i, r in enumerate(recs)]
    lo, hi = (min(raw), max(raw)) if raw else (0.0, 1.0)
    span = (hi - lo) or 1.0
    scale = (WIDTH - LEFT - 20) / span
    xs = [LEFT + (v - lo) * scale for v in raw]
    end_x = LEFT + (hi - lo) * scale
    out = [f'<g class="vcpu" data-variant={quoteattr(variant)} data-vcpu="{vcpu}" '
           f'data-axis="{"icount" if counted else "event-order"}">',
           f'<text x="4" y="{y0 + 12}" font-weight="bold">{escape(title)}</text>']
    top = y0 + 20
    lane_y = {name: top + i * (LANE + GAP) for i, name in enumerate(LANES)}
    for name, y in lane_y.items():
        out.append(f'<text x="4" y="{y + 13}" class="lane">{escape(name)}</text>')
        out.append(f'<rect x="{LEFT}" y="{y}" width="{WIDTH - LEFT - 20}" height="{LANE}" fill="#f7f7f7"/>')
    # State lanes: the state after record i holds until record i + 1.
    for i, rec in enumerate(recs):
        x1 = xs[i + 1] if i + 1 < len(recs) else end_x
        w = max(x1 - xs[i], 0.0)
        if w <= 0:
            continue
        el = int(rec.get("el", 0))
        out.append(f'<rect class="el" data-el="{el}" x="{xs[i]:.1f}" y="{lane_y["EL"]}" width="{w:.1f}" '
                   f'height="{LANE}" fill="{EL_COLOURS.get(el, "#000")}"><title>EL{el}</title></rect>')
        daif = rec.get("daif", "----")
        for bit, letter in enumerate("DAIF"):
            if len(daif) > bit and daif[bit] == letter:
                out.append(f'<rect class="masked" data-bit="{letter}" x="{xs[i]:.1f}" y="{lane_y[letter]}" '
                           f'width="{w:.1f}" height="{LANE}" fill="{MASKED}"/>')
    for cls, lane, start, end, colour in (
            ("serror-pending", "SError pending", "serror_pend", _serror_over, "#e377c2"),
            ("sdei-handler", "SDEI handler", "sdei_dispatch", lambda r: r["kind"] == "sdei_complete", "#bcbd22")):
        for a, b, seq in _intervals(recs, xs, start, end):
            out.append(f'<rect class="{cls}" data-from-seq="{seq}" x="{a:.1f}" y="{lane_y[lane]}" '
                       f'width="{max(b - a, 2.0):.1f}" height="{LANE}" fill="{colour}"/>')
    y = lane_y["events"] + LANE // 2
    for rec, x in zip(recs, xs):
        shape, colour = MARKERS.get(rec["kind"], ("circle", "#000000"))
        entry = rec.get("entry")
        if rec["kind"] == "exception" and isinstance(entry, dict):
            colour = EXCEPTION_COLOURS.get(str(entry.get("kind")), colour)
        out.append(f'<g class="event" data-kind={quoteattr(rec["kind"])} data-seq="{rec["seq"]}">'
                   f'<title>{escape(_describe(rec))}</title>{_marker(shape, x, y, colour)}</g>')
    axis_y = lane_y["events"] + LANE + 14
    label = "instructions" if counted else "event order"
    out.append(f'<text x="{LEFT}" y="{axis_y}" class="axis">{escape(f"{lo:g}")}</text>')
    out.append(f'<text x="{WIDTH - 20}" y="{axis_y}" class="axis" text-anchor="end">'
               f'{escape(f"{hi:g} ({label})")}</text>')
    out.append("</g>")
    return "\n".join(out), axis_y + 16 - y0


def render_svg(records: Iterable[dict[str, Any]]) -> str:
    """The picture as a standalone SVG document."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for rec in records:
        groups[(str(rec.get("variant", "")), int(rec["vcpu"]))].append(rec)
    parts, y = [], 10
    for (variant, vcpu), recs in sorted(groups.items(), key=lambda kv: (kv[1][0]["seq"], kv[0][1])):
        title = (f"{variant}: " if variant else "") + f"vCPU {vcpu}"
        svg, height = _group_svg(title, recs, y, variant, vcpu)
        parts.append(svg)
        y += height + 10
    style = ("<style>text{font:11px sans-serif} .axis{fill:#555} .lane{fill:#333}</style>")
    return (f'<svg xmlns="{SVG_NS}" width="{WIDTH}" height="{max(y, 40)}" '
            f'viewBox="0 0 {WIDTH} {max(y, 40)}">{style}\n' + "\n".join(parts) + "\n</svg>")


def render_html(header: dict[str, Any], records: list[dict[str, Any]]) -> str:
    """A self-contained page: title, legend, the SVG and an event table."""
    title = f"sandbox timeline: {header.get('source', '')}"
    rows = "\n".join(
        f"<tr><td>{r['seq']}</td><td>{escape(str(r.get('variant', '')))}</td><td>{r['vcpu']}</td>"
        f"<td>{'' if r.get('icount') is None else r['icount']}</td><td>{escape(r['kind'])}</td>"
        f"<td>{escape(r['pc'])}</td><td>{escape(r.get('insn') or '')}</td><td>{escape(_describe(r))}</td></tr>"
        for r in records)
    legend = " ".join(f'<span style="color:{c}">&#9632; {escape(k)}</span>' for k, (_s, c) in MARKERS.items())
    return (
        '<!DOCTYPE html>\n<html xmlns="http://www.w3.org/1999/xhtml"><head><meta charset="utf-8"/>'
        f"<title>{escape(title)}</title>"
        "<style>body{font:13px sans-serif;margin:12px} table{border-collapse:collapse} "
        "td,th{border:1px solid #ccc;padding:2px 6px;font:12px monospace;text-align:left}</style>"
        f"</head><body><h1>{escape(title)}</h1>"
        f"<p>Lanes per vCPU: exception level, PSTATE masks D/A/I/F (grey = masked), pending virtual "
        f"SError, SDEI handler, events (hover a marker for details). Markers: {legend}</p>\n"
        f"{render_svg(records)}\n"
        "<h2>Events</h2><table><thead><tr><th>seq</th><th>variant</th><th>vCPU</th><th>icount</th>"
        f"<th>kind</th><th>pc</th><th>insn</th><th>details</th></tr></thead><tbody>\n{rows}\n</tbody></table>"
        "</body></html>\n")


def write_timeline(path: str, header: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """Write an .svg (the picture alone) or anything else as the HTML page."""
    text = render_svg(records) if str(path).lower().endswith(".svg") else render_html(header, records)
    with open(path, "w") as f:
        f.write(text)
