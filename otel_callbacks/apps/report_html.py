"""The report as one self-contained HTML file: Plotly's offline bundle inlined, no network request.

Per run: its answer (report_answer.py), its attributes, a sweep's table (report_tables.py), a
waterfall of the trace (one lane per depth of the tree, zoom and pan, hover for a span, click for its
attributes, events and status), the slow and failed invocations linked to their place in the
waterfall, the phase breakdown and the plots (report_plots.py); then the callbacks' table.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from typing import Any

from . import report_answer, report_plots, report_tables
from .report import Report, RunView

_COLORS = {"phase": "#4c78a8", "callback": "#9ecae9", "slow": "#f58518", "error": "#e45756"}
_CONFIG = {"displaylogo": False, "responsive": True, "showLink": False}


def render(report: Report, comparison: str = "") -> str:
    """The page; ``comparison``: a before-and-after table (report_compare.py) that opens it."""
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    figures: list[tuple[str, Any]] = []
    details: dict[str, list[dict[str, Any]]] = {}
    sections = []
    for index, run in enumerate(report.runs):
        key = f"run{index}"
        details[key] = [_detail(span) for span in run.spans]
        plots = report_plots.plots(run)
        figures.append((f"{key}-waterfall", _waterfall(run)))
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


def _kind(span: Any) -> str:
    if span.status:
        return "error"
    if span.slow:
        return "slow"
    return "phase" if span.is_phase else "callback"


def _lanes(run: RunView) -> list[str]:
    """A label per depth: the phases most often found there."""
    names: dict[int, Counter] = {}
    for span in run.spans:
        names.setdefault(span.depth, Counter())[span.name if span.is_phase else "callbacks"] += 1
    return [f"{depth}: " + " · ".join(n for n, _ in names[depth].most_common(3)) for depth in sorted(names)]


def _waterfall(run: RunView) -> Any:
    import plotly.graph_objects as go

    lanes = _lanes(run)
    figure = go.Figure()
    for kind, color in _COLORS.items():
        chosen = [(i, s) for i, s in enumerate(run.spans) if _kind(s) == kind]
        if not chosen:
            continue
        figure.add_trace(
            go.Bar(
                name=kind,
                orientation="h",
                base=[s.start_ms for _, s in chosen],
                x=[max(s.duration_ms, 0.001) for _, s in chosen],
                y=[lanes[s.depth] for _, s in chosen],
                customdata=[[i, s.name, round(s.duration_ms, 3)] for i, s in chosen],
                marker={"color": color, "line": {"width": 0}},
                hovertemplate="%{customdata[1]}<br>%{customdata[2]} ms<extra>" + kind + "</extra>",
            )
        )
    figure.update_layout(
        barmode="overlay",
        height=120 + 45 * len(lanes),
        margin={"l": 10, "r": 10, "t": 30, "b": 30},
        xaxis={"title": "ms from the run's start", "rangeslider": {"visible": False}},
        yaxis={"autorange": "reversed", "categoryorder": "array", "categoryarray": lanes, "automargin": True},
        dragmode="zoom",
        legend={"orientation": "h", "y": 1.08},
    )
    return figure


def _section(key: str, run: RunView, plots: set[str]) -> str:
    attributes = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in run.attributes.items()
    )
    phases = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{count}</td><td>{total / 1e3:.3f}</td>"
        f"<td>{total / count:.3f}</td><td>{100 * total / max(run.duration_ms, 1e-9):.1f}</td></tr>"
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
<h3>Waterfall <small>(drag to zoom, double-click to reset, click a bar for its details)</small></h3>
<div id="{key}-waterfall" class="waterfall"></div>
<pre id="{key}-detail" class="detail">click a span</pre>
<h3>Slow and failed</h3><ul class="noteworthy">{notes}</ul>
<h3>Phases</h3>
<table class="sortable phases"><thead><tr><th>phase</th><th>count</th><th>total s</th><th>mean ms</th>
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
function focusSpan(run, index, margin = 2) {{
  const span = DETAILS[run][index];
  const pad = Math.max(span.duration_ms * margin, 1);
  const range = [span.start_ms - pad, span.start_ms + span.duration_ms + pad];
  Plotly.relayout(run + "-waterfall", {{"xaxis.range": range}});
  document.getElementById(run + "-detail").textContent = JSON.stringify(span, null, 2);
  document.getElementById(run + "-waterfall").scrollIntoView();
  return false;
}}
{scripts}
document.querySelectorAll(".waterfall").forEach(div => div.on("plotly_click", event => {{
  const run = div.id.replace("-waterfall", "");
  const index = event.points[0].customdata[0];
  document.getElementById(run + "-detail").textContent = JSON.stringify(DETAILS[run][index], null, 2);
}}));
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
