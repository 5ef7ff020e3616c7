"""The report as one self-contained HTML file: Plotly's offline bundle inlined, no network request.

Per run: its answer (report_answer.py), its attributes, a sweep's table (report_tables.py), the
trace view (report_trace.py), the slow and failed invocations linked to their row there, the phase
breakdown and the plots (report_plots.py); then the callbacks' table.
"""

from __future__ import annotations

import html
import json
from typing import Any

from . import report_answer, report_plots, report_tables, report_trace
from .report import Report, RunView

_CONFIG = {"displaylogo": False, "responsive": True, "showLink": False}


def render(report: Report, comparison: str = "") -> str:
    """The page; ``comparison``: a before-and-after table (report_compare.py) that opens it."""
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    figures: list[tuple[str, Any]] = []
    details: dict[str, list[dict[str, Any]]] = {}
    traces: dict[str, list[list[Any]]] = {}
    sections = []
    for index, run in enumerate(report.runs):
        key = f"run{index}"
        details[key] = [_detail(span) for span in run.spans]
        traces[key] = report_trace.rows(run)
        plots = report_plots.plots(run)
        figures += [(f"{key}-{name}", figure) for name, figure in plots]
        sections.append(_section(key, run, {name for name, _ in plots}))
    calls = report_tables.callback_table(report)
    scripts = "\n".join(f"draw({json.dumps(div)}, {pio.to_json(fig)});" for div, fig in figures)
    bad = "".join(f"<li>{html.escape(line)}</li>" for line in report.bad_lines)
    files = ", ".join(html.escape(f) for f in report.files)
    return _PAGE.format(
        plotly=get_plotlyjs(),
        files=files,
        runs=len(report.runs),
        bad=f"<details><summary>{len(report.bad_lines)} bad lines skipped</summary><ul>{bad}</ul></details>"
        if bad
        else "",
        comparison=comparison,
        sections="\n".join(sections),
        callbacks=calls,
        details=json.dumps(details),
        traces=json.dumps(traces),
        trace_css=report_trace.CSS,
        trace_js=report_trace.JS,
        config=json.dumps(_CONFIG),
        scripts=scripts,
    )


def _detail(span: Any) -> dict[str, Any]:
    return {
        "name": span.name,
        "start_ms": round(span.start_ms, 3),
        "duration_ms": round(span.duration_ms, 3),
        "status": span.status or "OK",
        "attributes": span.attributes,
        "events": span.events,
    }


def _phase_cells(run: RunView, name: str, count: int, total_ms: float) -> list[tuple[str, Any]]:
    share = 100 * total_ms / max(run.duration_ms, 1e-9)
    total, mean = total_ms / 1e3, total_ms / count / 1e3
    duration = report_tables.duration
    return [
        (name, None),
        (str(count), count),
        (duration(total), total),
        (duration(mean), mean),
        (f"{share:.1f}", share),
    ]


def _section(key: str, run: RunView, plots: set[str]) -> str:
    attributes = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in run.attributes.items()
    )
    phases = "".join(
        "<tr>"
        + "".join(report_tables.cell(text, sort) for text, sort in _phase_cells(run, name, count, total))
        + "</tr>"
        for name, (count, total) in run.phase_counts().items()
    )
    notes = (
        "".join(
            f"<li><a href='#' onclick='return focusSpan(\"{key}\", {i})'>{html.escape(s.name)}</a> "
            f"{s.duration_ms:.3f} ms{' (slow)' if s.slow else ''} {html.escape(s.status)}</li>"
            for i, s in run.noteworthy()
        )
        or "<li>none</li>"
    )
    divs = "".join(
        f"<div id='{key}-{name}' class='plot'></div>" for name in report_plots.NAMES if name in plots
    )
    started = html.escape(str(run.started))
    steps = report_tables.sweep_table(key, run)
    answer = "".join(f"<li>{html.escape(line)}</li>" for line in report_answer.answer(run))
    return f"""<section id="{key}" class="run" data-run="{html.escape(run.name)}">
<h2>{html.escape(run.name)} run <small>{run.duration_ms / 1e3:.3f} s · service {html.escape(run.service)}
· started <span class="ts" data-ns="{started}"></span></small></h2>
<ul class="answer">{answer}</ul>
<table class="attrs">{attributes}</table>{steps}
<h3>Trace <small>(a row per span in tree order; ▸ opens a row, a click shows its details)</small></h3>
<div id="{key}-trace" class="trace"></div>
<pre id="{key}-detail" class="detail">click a span</pre>
<h3>Slow and failed</h3><ul class="noteworthy">{notes}</ul>
<h3>Phases</h3>
<table class="sortable phases"><thead><tr><th>phase</th><th>count</th><th>total</th><th>mean</th>
<th>% run</th></tr></thead><tbody>{phases}</tbody></table>
<div class="plots">{divs}</div>
</section>"""


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>otel-callbacks report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin: .5em 0; }}
td, th {{ padding: 2px 8px; border-bottom: 1px solid #ddd; text-align: left; }}
.sortable th {{ cursor: pointer; background: #f3f3f3; }}
.detail {{ background: #f7f7f7; padding: .5em; max-height: 16em; overflow: auto; }}
.plots {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(360px, 1fr)); }}
section.run {{ border-top: 3px solid #4c78a8; margin-top: 2em; }}
table.sweep tbody tr {{ cursor: pointer; }}
table.sweep tr.best {{ font-weight: bold; }}
ul.answer {{ font-size: 1.1em; line-height: 1.5; }}
ul.answer li:first-child {{ font-weight: bold; }}
{trace_css}
</style>
<script>{plotly}</script></head><body>
<h1>otel-callbacks report</h1>
<p>{runs} runs from {files}</p>{bad}
{comparison}
{sections}
<h2>Callbacks <small>(every call of every run, from the metrics; by total time)</small></h2>{callbacks}
<script>
const CONFIG = {config};
const DETAILS = {details};
function draw(div, figure) {{ Plotly.newPlot(div, figure.data, figure.layout, CONFIG); }}
const TRACES = {traces};
{trace_js}
{scripts}
document.querySelectorAll(".ts").forEach(el => {{
  el.textContent = new Date(Number(el.dataset.ns) / 1e6).toISOString();
}});
document.querySelectorAll("table.sortable").forEach(table =>
  table.querySelectorAll("th").forEach((th, column) => th.addEventListener("click", () => {{
    const body = table.tBodies[0], rows = Array.from(body.rows);
    const value = row => {{
      const cell = row.cells[column], text = cell.dataset.sort ?? cell.textContent, number = parseFloat(text);
      return isNaN(number) ? text : number;
    }};
    const up = th.dataset.up !== "1"; th.dataset.up = up ? "1" : "0";
    rows.sort((a, b) => (value(a) > value(b) ? 1 : value(a) < value(b) ? -1 : 0) * (up ? 1 : -1));
    rows.forEach(row => body.appendChild(row));
  }})));
</script></body></html>
"""
