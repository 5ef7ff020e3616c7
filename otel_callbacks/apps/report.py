"""``otel-callbacks report``: the runs in OTLP/JSON-lines files, as the numbers a page shows.

Reads what the embedded default (or a collector's file exporter) wrote, with the ``send`` rules for
bad input, and turns each trace into a :class:`RunView`: its spans laid out by depth, its phases,
its slow and failed invocations and its epochs. :mod:`.report_html` draws them.
"""

from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import semconv as sc
from ..telemetry import otlp_file
from .send import metrics_data, spans

_RUN_KEYS = ("task", "model", "data", "epochs", "batch.size", "imgsz", "device")


@dataclass
class SpanView:
    name: str
    start_ms: float  # from the run's start
    duration_ms: float
    depth: int
    attributes: dict[str, Any]
    events: list[dict[str, Any]]
    status: str  # "", or "ERROR: message"

    @property
    def is_phase(self) -> bool:
        return sc.ATTR_PHASE in self.attributes

    @property
    def slow(self) -> bool:
        return any(e["name"] == sc.EVENT_SLOW_CALLBACK for e in self.events)


@dataclass
class RunView:
    name: str  # the root's name: train, val, predict, export
    service: str
    started: int  # ns since the epoch
    duration_ms: float
    attributes: dict[str, Any]  # the run's own (task, model, data, ...)
    spans: list[SpanView]

    def phase_counts(self) -> dict[str, tuple[int, float]]:
        """Phase name -> (count, total ms), in the order phases first appear."""
        totals: dict[str, list[float]] = {}
        for span in self.spans:
            if span.is_phase:
                entry = totals.setdefault(span.name, [0, 0.0])
                entry[0] += 1
                entry[1] += span.duration_ms
        return {name: (int(count), total) for name, (count, total) in totals.items()}

    def noteworthy(self) -> list[tuple[int, SpanView]]:
        """Slow and failed invocations (and failed phases), by index in ``spans``."""
        return [(i, s) for i, s in enumerate(self.spans) if s.slow or s.status]

    def epochs(self) -> list[SpanView]:
        return [s for s in self.spans if s.is_phase and s.name == sc.PHASE_EPOCH]

    def overhead_s(self) -> float | None:
        """Seconds otel_callbacks spent in the run: its root's figure, measured as the run ended
        (none after a SIGKILL)."""
        value = self.spans[0].attributes.get(sc.ATTR_OVERHEAD) if self.spans else None
        return float(value) if isinstance(value, (int, float)) else None

    def series(self, phase: str) -> list[SpanView]:
        return [s for s in self.spans if s.is_phase and s.name == phase]


@dataclass
class SweepRow:
    """One iteration (``model.tune()``) or trial (Ray Tune) of a sweep."""

    index: int  # its span's, in RunView.spans
    label: str  # the iteration's number or the trial's id
    score: float | None  # the result the sweep ranks by
    status: str
    hyperparameters: dict[str, Any]
    duration_ms: float
    time_went: list[tuple[str, float]]  # the largest shares of its time not spent in a child span


@dataclass
class Sweep:
    metric: str
    rows: list[SweepRow]  # best first; those without a score last, in order
    varied: list[str]  # the hyperparameters whose values differ between rows


OUTSIDE_TRAINING = "outside the training"  # a sweep step's own time: launch, start-up, bookkeeping
_SWEEP_STEPS = (sc.PHASE_ITERATION, sc.PHASE_TRIAL)
_LAUNCHES = (*_SWEEP_STEPS, sc.PHASE_MULTITRAIN)


def sweep(run: RunView) -> Sweep | None:
    """A ``tune`` run's iterations or trials as rows, best first (None for other runs)."""
    if run.name != sc.PHASE_TUNE:
        return None
    metric = str(run.spans[0].attributes.get(sc.ATTR_TUNE_METRIC, "fitness"))
    rows = []
    for index, span in enumerate(run.spans):
        if span.depth != 1 or span.name not in _SWEEP_STEPS:
            continue
        a = span.attributes
        score = None if span.status else a.get(sc.result_attribute(metric))  # a failed one's is no result
        score = score if isinstance(score, (int, float)) and math.isfinite(score) else None
        label = a.get(sc.ATTR_TUNE_ITERATION, a.get(sc.ATTR_TRIAL_ID, index))
        status = span.status or str(a.get(sc.ATTR_TRIAL_STATUS, "OK"))
        hyp = {
            k[len(sc.HYPERPARAMETER_PREFIX) :]: v
            for k, v in a.items()
            if k.startswith(sc.HYPERPARAMETER_PREFIX)
        }
        own = own_times(run.spans, index)
        went = [(name, 100 * ms / max(span.duration_ms, 1e-9)) for name, ms in own.most_common(3)]
        rows.append(SweepRow(index, str(label), score, status, hyp, span.duration_ms, went))
    rows.sort(key=lambda r: (r.score is None, -(r.score or 0.0)))
    names = dict.fromkeys(k for r in rows for k in r.hyperparameters)
    varied = [k for k in names if len({repr(r.hyperparameters.get(k)) for r in rows}) > 1]
    return Sweep(metric, rows, varied)


def own_times(spans: list[SpanView], first: int) -> Counter:
    """Over the subtree of ``spans[first]``: each name's time not spent in a child span (callbacks
    together, the launching spans' as OUTSIDE_TRAINING), so that the values add up to its duration."""
    top = spans[first].depth
    last = first + 1
    while last < len(spans) and spans[last].depth > top:
        last += 1
    in_children = [0.0] * (last - first)
    parents: dict[int, int] = {}  # depth -> the latest span seen there (spans are depth first)
    for index in range(first, last):
        depth = spans[index].depth
        parents[depth] = index
        if depth > top:
            in_children[parents[depth - 1] - first] += spans[index].duration_ms
    own: Counter = Counter()
    for index in range(first, last):
        span = spans[index]
        name = span.name if span.is_phase else "callbacks"
        name = OUTSIDE_TRAINING if name in _LAUNCHES else name
        own[name] += max(span.duration_ms - in_children[index - first], 0.0)
    return own


@dataclass
class CallbackRow:
    mode: str
    event: str
    callback: str
    integration: str
    calls: int = 0
    total_s: float = 0.0
    errors: int = 0
    buckets: list[int] = field(default_factory=list)
    bounds: list[float] = field(default_factory=list)

    @property
    def p95_ms(self) -> float:
        """The upper bound of the bucket that holds the 95th percentile (histograms keep no values)."""
        seen, target = 0, 0.95 * sum(self.buckets)
        for index, count in enumerate(self.buckets):
            seen += count
            if count and seen >= target:
                return 1e3 * (self.bounds[index] if index < len(self.bounds) else float("inf"))
        return 0.0


@dataclass
class Report:
    runs: list[RunView]
    callbacks: list[CallbackRow]
    files: list[str]
    bad_lines: list[str]
    # ultralytics.phase.duration by (mode, phase): every batch and wait, sampled or not (as CallbackRow:
    # event "", callback the phase's name)
    phases: dict[tuple[str, str], CallbackRow] = field(default_factory=dict)


def read(paths: Iterable[str | os.PathLike[str]]) -> Report:
    """Every good line of the files; bad ones listed as ``FILE:LINE: what is wrong``."""
    bad_lines: list[str] = []
    by_trace: dict[int, list[Any]] = defaultdict(list)
    rows: dict[tuple[str, ...], CallbackRow] = {}
    phases: dict[tuple[str, ...], CallbackRow] = {}
    files = [str(p) for p in paths]
    for path in files:
        for request in otlp_file.read_file(path, bad_lines):
            if hasattr(request, "resource_spans"):
                for span in spans(request):
                    by_trace[span.context.trace_id].append(span)
            else:
                _add_points(rows, phases, metrics_data(request))
    runs = sorted((run for trace in by_trace.values() for run in _runs(trace)), key=lambda r: r.started)
    ordered = sorted(rows.values(), key=lambda r: -r.total_s)
    return Report(runs, ordered, files, bad_lines, {(k[0], k[2]): row for k, row in phases.items()})


def _runs(trace: list[Any]) -> list[RunView]:
    ids = {s.context.span_id for s in trace}
    children: dict[int | None, list[Any]] = defaultdict(list)
    for span in trace:
        parent = span.parent.span_id if span.parent is not None and span.parent.span_id in ids else None
        children[parent].append(span)
    return [_run(root, children) for root in sorted(children[None], key=lambda s: s.start_time)]


def _run(root: Any, children: dict[int | None, list[Any]]) -> RunView:
    views: list[SpanView] = []
    stack = [(root, 0)]
    while stack:  # depth first, children in time order
        span, depth = stack.pop()
        status = span.status
        views.append(
            SpanView(
                span.name,
                (span.start_time - root.start_time) / 1e6,
                (span.end_time - span.start_time) / 1e6,
                depth,
                dict(span.attributes),
                [{"name": e.name, **dict(e.attributes)} for e in span.events],
                f"ERROR: {status.description or ''}" if status.status_code.name == "ERROR" else "",
            )
        )
        stack.extend(
            (c, depth + 1) for c in sorted(children[span.context.span_id], key=lambda s: -s.start_time)
        )
    attributes = {k: v for k in _RUN_KEYS if (v := root.attributes.get(f"ultralytics.{k}")) is not None}
    service = str(root.resource.attributes.get("service.name", ""))
    return RunView(
        root.name, service, root.start_time, (root.end_time - root.start_time) / 1e6, attributes, views
    )


def _add_points(
    rows: dict[tuple[str, ...], CallbackRow], phases: dict[tuple[str, ...], CallbackRow], data: Any
) -> None:
    """The duration histograms' points: callbacks' into ``rows``, phases' into ``phases``."""
    keys = {
        sc.METRIC_CALLBACK_DURATION: (rows, (sc.ATTR_MODE, sc.ATTR_EVENT, sc.ATTR_CALLBACK)),
        sc.METRIC_PHASE_DURATION: (phases, (sc.ATTR_MODE, "", sc.ATTR_PHASE)),
    }
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name not in keys:
                    continue
                rows, names = keys[metric.name]
                for point in metric.data.data_points:
                    a = point.attributes
                    key = tuple(str(a.get(k, "")) for k in names)
                    row = rows.get(key)
                    if row is None:
                        row = rows[key] = CallbackRow(*key, str(a.get(sc.ATTR_INTEGRATION, "")))
                        row.bounds = list(point.explicit_bounds)
                        row.buckets = [0] * len(point.bucket_counts)
                    row.calls += point.count
                    row.total_s += point.sum
                    row.errors += point.count if a.get(sc.ATTR_ERROR_TYPE) else 0
                    row.buckets = [x + y for x, y in zip(row.buckets, point.bucket_counts, strict=False)]


def count_by_name(report: Report) -> Counter:
    """Phase spans by name over every run (what a test compares with the file)."""
    return Counter(s.name for run in report.runs for s in run.spans if s.is_phase)
