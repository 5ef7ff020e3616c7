"""Where each run's timing table goes: printed, or, for a short predict, val or export run (an
inference loop calls ``model(frame)`` thousands of times), into one summary of the short runs by kind,
printed at most once a summary interval and at process exit."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from .. import semconv as sc
from .clock import perf_ns
from .report import Report, emit
from .runs import CallbackStats

if TYPE_CHECKING:
    from ..config import Settings


class ShortRun:
    """The short runs of one kind since the last summary: count, failures and a p95 sample (the
    table's reservoir), and the slowest."""

    def __init__(self, reservoir_size: int) -> None:
        self.durations = CallbackStats(reservoir_size)
        self.slowest_ns = 0

    def add(self, run_ns: int, failed: bool) -> None:
        self.durations.add([run_ns], failed=failed)
        self.slowest_ns = max(self.slowest_ns, run_ns)

    def add_all(self, runs_ns: list[int]) -> None:
        """Runs that ended as they should."""
        self.durations.add(runs_ns)
        self.slowest_ns = max(self.slowest_ns, *runs_ns)


class Tables:
    """Shows each finished run's table, where this process shows them at all (``show``)."""

    def __init__(self, settings: Settings, shows: bool) -> None:
        self.shows = shows  # OTEL_CALLBACKS_SUMMARY and, in DDP, rank 0 (as Ultralytics prints)
        self.min_ns = int(settings.table_min_duration * 1e9)
        self.interval_ns = int(settings.summary_interval * 1e9)
        self.reservoir_size = settings.limits.reservoir_size
        self.fold_at = settings.limits.buffer_limit
        self.short: dict[str, ShortRun] = {}
        self._quiet: list[int] = []  # quiet runs' durations not yet in ``short``
        self.since, self.since_wall = perf_ns(), time.time()
        self._lock = threading.Lock()  # runs end on any thread

    def show(self, report: Report) -> None:
        if not self.shows:
            return
        if report.mode == sc.MODE_TRAIN or report.run_ns >= self.min_ns:
            emit(report.render())
        else:
            self.short_run(report.mode, report.run_ns, bool(report.failures))

    def short_run(self, mode: str, run_ns: int, failed: bool = False) -> None:
        """A run under the table's duration: into the summary."""
        if not self.shows:
            return
        with self._lock:
            self._kind(mode).add(run_ns, failed)
            due = perf_ns() - self.since >= self.interval_ns
        if due:
            self.flush()

    def quiet_run(self, run_ns: int) -> None:
        """A quiet predict run (``quiet_runs.py``), the commonest short run: noted in a list that goes
        into the summary when it is due or the list holds ``Limits.buffer_limit`` of them."""
        quiet = self._quiet
        quiet.append(run_ns)
        if perf_ns() - self.since >= self.interval_ns:
            self.flush()
        elif len(quiet) >= self.fold_at:
            self._fold_quiet()

    def _fold_quiet(self) -> None:
        with self._lock:
            quiet = self._quiet
            values = quiet[:]
            del quiet[: len(values)]  # appends made meanwhile stay for the next fold
            if values and self.shows:
                self._kind(sc.MODE_PREDICT).add_all(values)

    def _kind(self, mode: str) -> ShortRun:
        kind = self.short.get(mode)
        if kind is None:
            kind = self.short[mode] = ShortRun(self.reservoir_size)
        return kind

    def flush(self) -> None:
        """Print the summary of the short runs since the last one, if there were any."""
        self._fold_quiet()
        with self._lock:
            short, since = self.short, self.since_wall
            self.short, self.since, self.since_wall = {}, perf_ns(), time.time()
        if short:
            emit(render_short_runs(short, since, self.min_ns))


def render_short_runs(short: dict[str, ShortRun], since: float, min_ns: int) -> str:
    runs = sum(kind.durations.calls for kind in short.values())
    lines = [
        f"otel_callbacks: {runs} short runs since {time.strftime('%H:%M:%S', time.localtime(since))} "
        f"(under {min_ns / 1e9:g} s each, OTEL_CALLBACKS_TABLE_MIN_DURATION: no table of their own)",
        f"  {'kind':<8} {'runs':>7}  {'mean ms':>9}  {'p95 ms':>9}  {'slowest ms':>10}  {'failures':>8}",
    ]
    for mode, kind in sorted(short.items()):
        stats = kind.durations
        lines.append(
            f"  {mode:<8} {stats.calls:>7}  {stats.mean_ns / 1e6:>9.3f}  {stats.p95_ns / 1e6:>9.3f}  "
            f"{kind.slowest_ns / 1e6:>10.3f}  {stats.errors:>8}"
        )
    return "\n".join(lines)
