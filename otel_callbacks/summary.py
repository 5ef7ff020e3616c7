"""The end-of-run timing table, in the spirit of Lightning's SimpleProfiler report."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import semconv

logger = logging.getLogger(semconv.LOGGER_NAME)

RESERVOIR = 10_000  # durations kept per callback and run for the p95; exact below this


class CallbackStats:
    """Calls, total and a p95 sample of one callback in one run, fed from the drained buffers."""

    __slots__ = ("calls", "errors", "reservoir", "total_ns")

    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0
        self.total_ns = 0
        self.reservoir: list[int] = []

    def add(self, values_ns: Sequence[int], failed: bool = False) -> None:
        for ns in values_ns:
            self.calls += 1
            if len(self.reservoir) < RESERVOIR:
                self.reservoir.append(ns)
            else:  # Algorithm R: every value has the same chance to stay
                slot = random.randrange(self.calls)
                if slot < RESERVOIR:
                    self.reservoir[slot] = ns
        self.total_ns += sum(values_ns)
        if failed:
            self.errors += len(values_ns)

    @property
    def mean_ns(self) -> float:
        return self.total_ns / self.calls if self.calls else 0.0

    @property
    def p95_ns(self) -> int:
        """Nearest-rank 95th percentile."""
        if not self.reservoir:
            return 0
        ordered = sorted(self.reservoir)
        return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


@dataclass
class Report:
    """Everything the table shows; tests read the numbers from here, users read the text."""

    mode: str
    run_ns: int
    callbacks: dict[tuple[str, str], CallbackStats]
    phases: dict[str, list[int]]  # phase -> [count, total ns]
    overhead_ns: float
    worst_overhead_ns: int = 0
    failures: list[str] = field(default_factory=list)

    def rows(self) -> list[tuple[str, str, CallbackStats]]:
        ordered = sorted(self.callbacks.items(), key=lambda item: -item[1].total_ns)
        return [(event, callback, stats) for (event, callback), stats in ordered if stats.calls]

    def render(self) -> str:
        run = max(self.run_ns, 1)
        rows = self.rows()
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
        if self.phases:
            lines.append("phase breakdown:")
            for phase, (count, total) in sorted(self.phases.items(), key=lambda item: -item[1][1]):
                lines.append(f"  {phase:<16} {count:>7} x  {total / 1e9:>9.3f} s  {100 * total / run:>5.1f}%")
        lines.append(
            f"instrumentation overhead: {self.overhead_ns / 1e6:.3f} ms "
            f"({100 * self.overhead_ns / run:.3f}% of the run), "
            f"worst single call {self.worst_overhead_ns / 1e3:.1f} us"
        )
        lines.extend(f"not closed normally: {failure}" for failure in self.failures)
        return "\n".join(lines)

    def emit(self) -> None:
        text = self.render()
        print(text, flush=True)
        logger.info("%s", text)
