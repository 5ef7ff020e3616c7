"""The unsampled path's own cost, measured once per tracker for the timing table's overhead line."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from opentelemetry.metrics import NoOpHistogram

from ..telemetry.histograms import BufferedHistogram
from ..telemetry.providers import Telemetry
from .clock import perf_ns
from .tracker import PhaseTracker
from .wrapper import InstrumentedCallback, _Binding


def _probe(engine: Any) -> None:
    """The no-op that :func:`fast_path_cost_ns` times."""


class _ProbeEngine:
    pass


def fast_path_cost_ns(tel: Telemetry, calls: int = 2000) -> float:
    """The unsampled per-batch path's own cost per call, measured here on a no-op callback.

    Runs against a private phase tracker and a scratch histogram, so nothing it does is exported.
    """
    scratch = BufferedHistogram(NoOpHistogram("probe"))
    tracker = PhaseTracker(tel, scratch, replace(tel.settings, summary=False))
    probe = InstrumentedCallback(_probe, "on_train_batch_end")
    probe._binding = _Binding(probe, tel, tracker)
    engine = _ProbeEngine()
    state = tracker.enter(engine, probe)
    state.sampled, state.batch_slow_ns, state.threshold_ns = False, 1 << 62, 1 << 62
    start = perf_ns()
    for _ in range(calls):
        probe(engine)
    instrumented = perf_ns() - start
    start = perf_ns()
    for _ in range(calls):
        _probe(engine)
    bare = perf_ns() - start
    return max(0.0, (instrumented - bare) / calls)
