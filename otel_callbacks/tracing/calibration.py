"""The unsampled path's own cost, measured once per tracker for the timing table's overhead line."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, NamedTuple

from opentelemetry.metrics import NoOpHistogram

from ..telemetry.histograms import BufferedHistogram
from ..telemetry.providers import Telemetry
from .clock import perf_ns
from .tracker import PhaseTracker
from .wrapper import InstrumentedCallback, _Binding


class CallCosts(NamedTuple):
    """What an unsampled call adds, in ns: as a firing of its own (a training's unsampled batch,
    whose firings nothing times), and inside a firing (a quiet predict run, whose firings and
    closes are timed as they happen: counting them again per call would count them twice)."""

    firing_ns: float
    call_ns: float


def _probe(engine: Any) -> None:
    """The no-op that :func:`fast_path_costs` times."""


class _ProbeEngine:
    pass


def fast_path_costs(tel: Telemetry, calls: int = 2000) -> CallCosts:
    """The unsampled path's own costs per call (``CallCosts``), measured here on a no-op callback.

    Runs against a private phase tracker and a scratch histogram, so nothing it does is exported.
    """
    scratch = BufferedHistogram(NoOpHistogram("probe"))
    tracker = PhaseTracker(tel, scratch, replace(tel.settings, summary=False))
    probe = InstrumentedCallback(_probe, "on_train_batch_end")
    probe._binding = _Binding(probe, tel, tracker)
    engine = _ProbeEngine()
    state = tracker.enter(engine, probe)
    state.sampled, state.batch_slow_ns, state.threshold_ns = False, 1 << 62, 1 << 62
    firing = _timed(lambda: probe(engine), calls)  # each call opens a firing and closes it
    state.first = state.closer = _ProbeEngine  # another callback opens the firing and closes it
    inner = _timed(lambda: probe(engine), calls)
    bare = _timed(lambda: _probe(engine), calls)  # last, warm as the others
    return CallCosts(max(0.0, (firing - bare) / calls), max(0.0, (inner - bare) / calls))


def _timed(call: Any, calls: int) -> int:
    start = perf_ns()
    for _ in range(calls):
        call()
    return perf_ns() - start
