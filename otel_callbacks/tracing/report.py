"""The end-of-run timing table, in the spirit of Lightning's SimpleProfiler report: the numbers
(:class:`Report`, which tests read) and their text (which people read)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import semconv

if TYPE_CHECKING:
    from .runs import CallbackStats
    from .verdicts import Verdict

logger = logging.getLogger(semconv.LOGGER_NAME)

FAST_NS = 100_000  # callbacks whose mean is under 0.1 ms share one line of the table


@dataclass
class Report:
    """Everything the table shows; tests read the numbers from here, users read the text."""

    mode: str
    run_ns: int
    callbacks: dict[tuple[str, str], CallbackStats]
    phases: dict[tuple[str, ...], list[int]]  # path below the run's own phase -> [count, total ns]
    overhead_ns: float | None  # None: not measured (the telemetry was replaced first)
    worst_overhead_ns: int = 0
    failures: list[str] = field(default_factory=list)
    failures_dropped: int = 0  # reasons past Limits.failures, counted only
    verdict: Verdict | None = None  # a training's: what bounds it (verdicts.py)

    def rows(self) -> list[tuple[str, str, CallbackStats]]:
        ordered = sorted(self.callbacks.items(), key=lambda item: -item[1].total_ns)
        return [(event, callback, stats) for (event, callback), stats in ordered if stats.calls]

    def render(self) -> str:
        run = max(self.run_ns, 1)
        rows = [row for row in self.rows() if row[2].mean_ns >= FAST_NS]
        fast = [row[2] for row in self.rows() if row[2].mean_ns < FAST_NS]
        width = max([len("callback"), *(len(c) for _, c, _ in rows)])
        ewidth = max([len("event"), *(len(e) for e, _, _ in rows)])
        lines = [
            f"otel_callbacks: {self.mode} run took {self.run_ns / 1e9:.3f} s",
            f"{'event':<{ewidth}}  {'callback':<{width}}  {'calls':>7}  {'mean ms':>9}  "
            f"{'p95 ms':>9}  {'total s':>9}  {'% run':>6}",
        ]
        for event, callback, stats in rows:
            lines.append(
                f"{event:<{ewidth}}  {callback:<{width}}  {stats.calls:>7}  {stats.mean_ns / 1e6:>9.3f}  "
                f"{stats.p95_ns / 1e6:>9.3f}  {stats.total_ns / 1e9:>9.3f}  "
                f"{100 * stats.total_ns / run:>5.1f}%"
            )
        if fast:
            total = sum(s.total_ns for s in fast)
            lines.append(
                f"{len(fast)} more callbacks with a mean under {FAST_NS / 1e6:g} ms: "
                f"{sum(s.calls for s in fast)} calls, {total / 1e9:.3f} s, "
                f"{100 * total / run:.1f}% of the run"
            )
        lines += _phase_lines(self.mode, self.run_ns, self.phases)
        if self.verdict is not None:
            lines.append(f"bound by {self.verdict.bound_by}: {self.verdict.reason}")
        if self.overhead_ns is None:
            lines.append("instrumentation overhead: not measured (the telemetry was replaced first)")
        else:
            lines.append(
                f"instrumentation overhead: {self.overhead_ns / 1e6:.3f} ms "
                f"({100 * self.overhead_ns / run:.3f}% of the run): time spent in otel_callbacks on the "
                "caller's thread, around the callbacks and opening and closing the run and its phases "
                "(not counted: making this table, and ending the run's root span after it), measured in "
                f"this process; the costliest single call added {self.worst_overhead_ns / 1e3:.1f} us "
                "(one that made a span)"
            )
        lines.extend(f"not closed normally: {failure}" for failure in self.failures)
        if self.failures_dropped:
            lines.append(f"not closed normally: {self.failures_dropped} more")
        return "\n".join(lines)


def emit(text: str) -> None:
    """A table, once: through logging where the application shows this logger's INFO, else printed."""
    if logger.isEnabledFor(logging.INFO) and logger.hasHandlers():
        logger.info("%s", text)
    else:
        print(text, flush=True)


def _phase_lines(mode: str, run_ns: int, phases: dict[tuple[str, ...], list[int]]) -> list[str]:
    """The phases as a tree under the run: count, total, mean and share of the run, with the time
    no phase of a level covers on a line of its own, so that each level's shares add up."""
    tree: dict[tuple[str, ...], list[int]] = {(): [1, run_ns]}
    for path in phases:
        for depth in range(1, len(path)):
            tree.setdefault(path[:depth], [0, 0])
        tree[path] = phases[path]
    run = max(run_ns, 1)
    lines = [
        "phase breakdown:",
        f"  {'phase':<22} {'count':>7}  {'total s':>9}  {'mean ms':>9}  {'% run':>6}",
    ]

    def line(label: str, depth: int, count: int | None, total: int) -> str:
        mean = f"{total / count / 1e6:>9.3f}" if count else f"{'':>9}"
        counted = f"{count:>7}" if count is not None else f"{'':>7}"
        return (
            f"  {'  ' * depth + label:<22} {counted}  {total / 1e9:>9.3f}  {mean}  {100 * total / run:>5.1f}%"
        )

    def walk(path: tuple[str, ...]) -> None:
        children = [p for p in tree if len(p) == len(path) + 1 and p[: len(path)] == path]
        count, total = tree[path]
        lines.append(line(path[-1] if path else mode, len(path), count or None, total))
        for child in children:
            walk(child)
        if children:
            rest = total - sum(tree[c][1] for c in children)
            if rest > 0:
                lines.append(line("(no phase)", len(path) + 1, None, rest))

    walk(())
    return lines
