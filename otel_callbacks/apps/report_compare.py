"""Two runs side by side (``otel-callbacks report BEFORE AFTER``): the total and per-epoch time and
the instrumentation's own, then each phase's and callback's mean before and after, what changed most
first, and whether each change is beyond the runs' noise.

A change is beyond noise where the means differ by more than ``Z`` standard errors (Welch's, from each
run's own spread: the epoch spans, the phase and callback histograms, whose values are taken at their
bucket's middle with the bucket's own width as spread) and by more than ``DRIFT`` of the mean before
(two runs of the same training differ by that much in one process and the next: warm caches, the
machine's other work). A quantity seen once in a run (the run's total) has no spread to judge by.
"""

from __future__ import annotations

import html
import math
import statistics
from dataclasses import dataclass

from .. import semconv as sc
from .report import CallbackRow, Report, RunView
from .report_tables import cell, duration, folded

Z = 3.0
DRIFT = 0.1


@dataclass(frozen=True)
class Sample:
    """What a run says of one quantity: how many values, their mean and variance (seconds)."""

    n: int
    mean: float
    var: float

    @classmethod
    def of(cls, values: list[float]) -> Sample:
        return cls(
            len(values), statistics.fmean(values), statistics.variance(values) if len(values) > 1 else 0.0
        )

    @classmethod
    def of_histogram(cls, row: CallbackRow) -> Sample:
        mean = row.total_s / row.calls
        edges = [0.0, *row.bounds]
        var = 0.0
        for index, count in enumerate(row.buckets):
            if not count:
                continue
            low = edges[index]
            high = edges[index + 1] if index + 1 < len(edges) else low  # the last bucket: its lower bound
            middle = (low + high) / 2
            var += count * ((middle - mean) ** 2 + (high - low) ** 2 / 12)
        return cls(row.calls, mean, var / row.calls)


@dataclass
class Change:
    what: str  # "run", "epoch", "phase", "callback"
    name: str
    before: Sample | None
    after: Sample | None

    @property
    def ratio(self) -> float | None:
        return self.after.mean / self.before.mean if self.before and self.after and self.before.mean else None

    @property
    def noise(self) -> float | None:
        """The change a difference must exceed to be beyond noise (s); None: no spread to judge by."""
        a, b = self.before, self.after
        if a is None or b is None or a.n < 2 or b.n < 2:
            return None
        return max(Z * math.sqrt(a.var / a.n + b.var / b.n), DRIFT * a.mean)

    @property
    def significant(self) -> bool:
        noise = self.noise
        return noise is not None and abs(self.after.mean - self.before.mean) > noise


def _main_run(report: Report) -> RunView | None:
    """The run a file is about: its training, else its first run."""
    return next((r for r in report.runs if r.name == sc.PHASE_TRAIN), report.runs[0] if report.runs else None)


def _phases(report: Report, run: RunView) -> dict[str, Sample]:
    """Each phase but the run's own and the epoch's (the first rows say those): every batch and wait
    from the metrics where the file has them, else the spans (sampled)."""
    durations: dict[str, list[float]] = {}
    for span in run.spans:
        if span.is_phase and span.name not in (run.name, sc.PHASE_EPOCH):
            durations.setdefault(span.name, []).append(span.duration_ms / 1e3)
    samples = {name: Sample.of(values) for name, values in durations.items()}
    for (mode, phase), row in report.phases.items():
        if mode == run.name and phase in samples and row.calls:  # (a run is named by its mode)
            samples[phase] = Sample.of_histogram(row)
    return samples


def _callbacks(report: Report) -> dict[str, Sample]:
    """Each callback over the file's runs, Ultralytics' no-op defaults as one line."""
    rows = [row for row in folded(report.callbacks) if row.calls]
    return {f"{r.event} {r.callback}".strip(): _callback_sample(r) for r in rows}


def _callback_sample(row: CallbackRow) -> Sample:
    if row.buckets:
        return Sample.of_histogram(row)
    return Sample(1, row.total_s / row.calls, 0.0)  # no buckets: no spread to judge by


def compare(before: Report, after: Report) -> list[Change] | None:
    """The changes between the two files' main runs, biggest first (None: one has no run)."""
    first, second = _main_run(before), _main_run(after)
    if first is None or second is None:
        return None
    totals = [Sample(1, run.duration_ms / 1e3, 0.0) for run in (first, second)]
    changes = [Change("run", f"{first.name} run, total", *totals)]
    epochs = [[s.duration_ms / 1e3 for s in run.epochs()] for run in (first, second)]
    if all(epochs):
        changes.append(Change("epoch", "epoch, mean", Sample.of(epochs[0]), Sample.of(epochs[1])))
    overheads = [run.overhead_s() for run in (first, second)]
    if overheads != [None, None]:
        own = [None if o is None else Sample(1, o, 0.0) for o in overheads]
        changes.append(Change("run", "otel-callbacks' own time", *own))
    for what, old, new in (
        ("phase", _phases(before, first), _phases(after, second)),
        ("callback", _callbacks(before), _callbacks(after)),
    ):
        changes += [Change(what, name, old.get(name), new.get(name)) for name in dict.fromkeys([*old, *new])]
    head = [c for c in changes if c.what in ("run", "epoch")]
    rest = sorted((c for c in changes if c.what not in ("run", "epoch")), key=lambda c: -abs(_delta(c)))
    return head + rest


def _delta(change: Change) -> float:
    return (change.after.mean if change.after else 0.0) - (change.before.mean if change.before else 0.0)


def gated(changes: list[Change]) -> list[Change]:
    """What ``--fail-if-slower`` looks at: the epoch and the phases (the step among them)."""
    return [c for c in changes if c.what in ("epoch", "phase")]


def slower(changes: list[Change], percent: float) -> list[Change]:
    """The epoch and the phases that got slower beyond noise and ``percent``."""
    return [
        c
        for c in gated(changes)
        if c.significant and c.before.mean > 0 and c.after.mean > c.before.mean * (1 + percent / 100)
    ]


def said(change: Change) -> str:
    """One line naming a change: ``batch, mean: 12.3 ms -> 16.1 ms (+31%, beyond noise of 1.2 ms)``."""
    before, after = change.before.mean, change.after.mean
    name = change.name if change.what == "epoch" else f"{change.name} ({change.what}), mean"
    return (
        f"{name}: {duration(before)} -> {duration(after)} ({100 * (after / before - 1):+.0f}%, beyond noise "
        f"of {duration(change.noise)})"
    )


def comparison_table(changes: list[Change], before: str, after: str) -> str:
    rows = "".join(_row(c) for c in changes)
    beyond = [c for c in changes if c.significant]
    unjudged = sum(c.noise is None for c in changes)
    verdict = (
        f"{len(beyond)} change(s) beyond noise"
        if beyond
        else "no significant change: every difference judged is within the runs' noise"
    ) + (f"; {unjudged} row(s) with too few values to judge by" if unjudged else "")
    return (
        f"<section class='compare'><h2>Before and after <small>{html.escape(before)} -> {html.escape(after)}"
        f"</small></h2><p class='noise'>{html.escape(verdict)}</p><table class='sortable compare'><thead><tr>"
        "<th>what</th><th>name</th><th>before</th><th>after</th><th>change</th><th>beyond noise?</th></tr>"
        f"</thead><tbody>{rows}</tbody></table></section>"
    )


def _row(change: Change) -> str:
    ratio = change.ratio
    delta = _delta(change)
    if change.before is None or change.after is None:
        said = "only after" if change.before is None else "only before"
    elif abs(delta) < 1e-6:
        said = "same"
    else:
        said = f"{'+' if delta >= 0 else '-'}{duration(abs(delta))}" + (f" ({ratio:.2f}x)" if ratio else "")
    noise = change.noise
    if noise is None:
        judged = "too few values to judge by" if change.before and change.after else ""
    else:
        judged = f"{'yes' if change.significant else 'no'} (noise {duration(noise)})"
    before = "" if change.before is None else duration(change.before.mean)
    after = "" if change.after is None else duration(change.after.mean)
    cells = [
        (change.what, None),
        (change.name, None),
        (before, change.before.mean if change.before else None),
        (after, change.after.mean if change.after else None),
        (said, delta),
        (judged, None),
    ]
    return "<tr>" + "".join(cell(text, sort) for text, sort in cells) + "</tr>"
