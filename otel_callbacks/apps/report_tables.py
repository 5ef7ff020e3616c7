"""The report's tables: callbacks by total time (Ultralytics' no-op defaults on one line, durations
in readable units, a p95 that is a histogram bucket's bound said as such) and a sweep's steps."""

from __future__ import annotations

import html
from typing import Any

from .. import semconv as sc
from .report import CallbackRow, Report, RunView, SweepRow, sweep


def duration(seconds: float) -> str:
    """``< 1 us``, ``850 us``, ``3.2 ms``, ``1.25 s``, ``2 min 3 s``, ``5 h 12 min``."""
    if 0 < seconds < 1e-6:
        return "< 1 us"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    if seconds < 119.5:
        return f"{seconds:.3g} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 120:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def p95(row: CallbackRow) -> str:
    """The bound of the bucket that holds the 95th percentile: under the first bound, or at most one."""
    if not row.calls or not row.bounds:
        return ""
    bound = row.p95_ms / 1e3
    if bound == float("inf"):  # the overflow bucket
        return f"> {duration(row.bounds[-1])}"
    return f"< {duration(bound)}" if bound <= row.bounds[0] else f"<= {duration(bound)}"


def folded(rows: list[CallbackRow]) -> list[CallbackRow]:
    """Ultralytics' no-op default hooks as one row (they cost calls, never time worth a row each)."""
    defaults = [r for r in rows if r.integration == sc.INTEGRATION_DEFAULT]
    if len(defaults) < 2:
        return rows
    line = CallbackRow("", "", f"Ultralytics' no-op default hooks ({len(defaults)})", sc.INTEGRATION_DEFAULT)
    line.calls = sum(r.calls for r in defaults)
    line.total_s = sum(r.total_s for r in defaults)
    line.errors = sum(r.errors for r in defaults)
    if all(r.bounds == defaults[0].bounds for r in defaults):  # (the contract's buckets: always)
        line.bounds = defaults[0].bounds
        line.buckets = [sum(counts) for counts in zip(*(r.buckets for r in defaults), strict=True)]
    others = [r for r in rows if r.integration != sc.INTEGRATION_DEFAULT]
    return sorted([*others, line], key=lambda r: -r.total_s)


def callback_table(report: Report) -> str:
    rows = "".join(_callback_row(row) for row in folded(report.callbacks))
    return (
        "<table class='sortable callbacks'><thead><tr><th>callback</th><th>event</th><th>mode</th>"
        "<th>integration</th><th>calls</th><th>total</th><th>mean</th><th>p95 (histogram bucket)</th>"
        f"<th>errors</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _callback_row(row: CallbackRow) -> str:
    mean = row.total_s / row.calls if row.calls else 0.0
    cells = [(row.callback, None), (row.event, None), (row.mode, None), (row.integration, None),
             (str(row.calls), row.calls), (duration(row.total_s), row.total_s), (duration(mean), mean),
             (p95(row), row.p95_ms), (str(row.errors), row.errors)]  # fmt: skip
    return "<tr>" + "".join(cell(text, sort) for text, sort in cells) + "</tr>"


def cell(text: str, sort: Any = None) -> str:
    """A cell; ``sort``: the value the page's column sort uses instead of the text."""
    key = "" if sort is None else f" data-sort='{sort}'"
    return f"<td{key}>{html.escape(text)}</td>"


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def sweep_table(key: str, run: RunView) -> str:
    found = sweep(run)
    if found is None:
        return ""
    head = "".join(f"<th>{html.escape(name)}</th>" for name in found.varied)
    rows = "".join(_sweep_row(key, row, found.varied, best=n == 0) for n, row in enumerate(found.rows))
    return (
        f"<h3>Sweep <small>(best first; click a row for its place in the trace)</small></h3>"
        f"<table class='sortable sweep'><thead><tr><th>step</th><th>{html.escape(found.metric)}</th>"
        f"<th>status</th><th>duration s</th><th>where the time went</th>{head}</tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _sweep_row(key: str, row: SweepRow, varied: list[str], best: bool) -> str:
    marked = " class='best'" if best and row.score is not None else ""
    went = " · ".join(f"{name} {share:.0f}%" for name, share in row.time_went)
    score = "" if row.score is None else _value(row.score)
    cells = [row.label, score, row.status, f"{row.duration_ms / 1e3:.1f}", went]
    cells += [_value(row.hyperparameters.get(name, "")) for name in varied]
    tds = "".join(f"<td>{html.escape(cell)}</td>" for cell in cells)
    return f"<tr onclick='focusSpan(\"{key}\", {row.index})'{marked}>{tds}</tr>"
