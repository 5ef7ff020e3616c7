"""Two runs side by side (``otel-callbacks report BEFORE AFTER``): the total and per-epoch time and
the instrumentation's own, then each phase's and callback's mean before and after, what changed most
first."""

from __future__ import annotations

import html
import statistics
from dataclasses import dataclass

from .. import semconv as sc
from .report import Report, RunView
from .report_tables import cell, duration, folded


@dataclass
class Change:
    what: str  # "run", "epoch", "phase", "callback"
    name: str
    before: float | None  # seconds
    after: float | None

    @property
    def ratio(self) -> float | None:
        return self.after / self.before if self.before and self.after is not None else None


def _main_run(report: Report) -> RunView | None:
    """The run a file is about: its training, else its first run."""
    return next((r for r in report.runs if r.name == sc.PHASE_TRAIN), report.runs[0] if report.runs else None)


def _phase_means(run: RunView) -> dict[str, float]:
    """Each phase's mean but the run's own and the epoch's (the first rows say those)."""
    return {
        name: total / count / 1e3
        for name, (count, total) in run.phase_counts().items()
        if count and name not in (run.name, sc.PHASE_EPOCH)
    }


def _callback_means(report: Report) -> dict[str, float]:
    """Each callback's mean over the file's runs, Ultralytics' no-op defaults as one line."""
    rows = folded(report.callbacks)
    return {f"{r.event} {r.callback}".strip(): r.total_s / r.calls for r in rows if r.calls}


def compare(before: Report, after: Report) -> list[Change] | None:
    """The changes between the two files' main runs, biggest first (None: one has no run)."""
    first, second = _main_run(before), _main_run(after)
    if first is None or second is None:
        return None
    epochs = [[s.duration_ms / 1e3 for s in run.epochs()] for run in (first, second)]
    changes = [Change("run", f"{first.name} run, total", first.duration_ms / 1e3, second.duration_ms / 1e3)]
    if all(epochs):
        changes.append(Change("run", "epoch, mean", statistics.mean(epochs[0]), statistics.mean(epochs[1])))
    overheads = [run.overhead_s() for run in (first, second)]
    if overheads != [None, None]:
        changes.append(Change("run", "otel-callbacks' own time", *overheads))
    for what, old, new in (
        ("phase", _phase_means(first), _phase_means(second)),
        ("callback", _callback_means(before), _callback_means(after)),
    ):
        changes += [Change(what, name, old.get(name), new.get(name)) for name in dict.fromkeys([*old, *new])]
    head = [c for c in changes if c.what == "run"]
    rest = sorted(
        (c for c in changes if c.what != "run"), key=lambda c: -abs((c.after or 0.0) - (c.before or 0.0))
    )
    return head + rest


def comparison_table(changes: list[Change], before: str, after: str) -> str:
    rows = "".join(_row(c) for c in changes)
    return (
        f"<section class='compare'><h2>Before and after <small>{html.escape(before)} -> {html.escape(after)}"
        "</small></h2><table class='sortable compare'><thead><tr><th>what</th><th>name</th><th>before</th>"
        f"<th>after</th><th>change</th></tr></thead><tbody>{rows}</tbody></table></section>"
    )


def _row(change: Change) -> str:
    ratio = change.ratio
    delta = (change.after or 0.0) - (change.before or 0.0)
    if change.before is None or change.after is None:
        said = "only after" if change.before is None else "only before"
    elif abs(delta) < 1e-6:
        said = "same"
    else:
        said = f"{'+' if delta >= 0 else '-'}{duration(abs(delta))}" + (f" ({ratio:.2f}x)" if ratio else "")
    before = "" if change.before is None else duration(change.before)
    after = "" if change.after is None else duration(change.after)
    cells = [
        (change.what, None),
        (change.name, None),
        (before, change.before),
        (after, change.after),
        (said, delta),
    ]
    return "<tr>" + "".join(cell(text, sort) for text, sort in cells) + "</tr>"
