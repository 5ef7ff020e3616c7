"""Predict runs, which an inference loop starts once per frame: the first few of the process and then
one per interval are traced from their start; the others are quiet runs (``quiet_runs.py``), which
get a root only if the run fails, makes a slow call or lasts as long as a run that gets a table (a
``spans.DeferredRoot``, started back when the run did), and no other span unless for such a call.
Their metrics count every run, traced or not."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from .. import semconv as sc
from ..telemetry.propagation import current_context
from .results import run_name

if TYPE_CHECKING:
    from ..config import Settings
    from .engines import EngineState


_UNENDED = "a new prediction started before on_predict_end"


class PredictSampling:
    """Which predict runs are traced from their start (any thread may start one)."""

    def __init__(self, settings: Settings) -> None:
        self.first = settings.predict_traces_first
        self.interval_ns = int(settings.predict_traces_interval * 1e9)
        self.started = 0
        self.last_traced: int | None = None
        self._lock = threading.Lock()

    def due(self, now: int) -> bool:
        """Whether a run starting now would be traced (no run counted)."""
        last = self.last_traced
        return self.started < self.first or last is None or now - last >= self.interval_ns

    def traced(self, now: int) -> bool:
        """Count a run starting now; whether it is traced."""
        with self._lock:
            traced = self.due(now)
            self.started += 1
            if traced:
                self.last_traced = now
            return traced


class PredictRuns:
    """Mixed into the phase machine: the predict handlers."""

    _environment_context: Any
    _predict_sampling: PredictSampling
    _ranks: dict[str, int]
    _tracer: Any

    def _is_quiet(self, now: int) -> bool:
        """Whether a predict run starting now is quiet: a root that can wait (``_can_wait``), and
        one sampling passes over."""
        return self._can_wait() and not self._predict_sampling.traced(now)

    def _can_wait(self) -> bool:
        """Whether a run starting now may have its root made later (a quiet run): a root of its own
        (no current span, no launcher's TRACEPARENT), from a tracer that can defer roots."""
        if self._environment_context is not None:
            return False
        current = current_context()  # mostly empty in a loop: the span lookup skipped
        if current and trace.get_current_span(current).get_span_context().is_valid:
            return False
        return self._tracer.defers_roots()

    def _predict_start(self, state: EngineState, now: int) -> None:
        if self._is_quiet(now):
            if state.stack or state.run is not None:
                self._abort(state, _UNENDED)
            self._quiet_start(state, now)  # quiet_runs.py
            return
        self._new_run(state, sc.MODE_PREDICT, _UNENDED)
        in_a_span = trace.get_current_span().get_span_context().is_valid
        parent = None if in_a_span else self._environment_context  # None: the current span's child
        self._open(state, sc.PHASE_PREDICT, now, parent, **self._ranks, **run_name(state.ref()))

    def _predict_batch_start(self, state: EngineState, now: int) -> None:
        if state.top(sc.PHASE_PREDICT_BATCH):
            self._abort_top(state, now, "predict batch did not end before the next one started")
        self._open(state, sc.PHASE_PREDICT_BATCH, now, state.innermost())
