"""Predict runs, which an inference loop starts once per frame: the first few of the process and then
one per interval are traced from their start; the others get a root whose trace is kept only if the
run fails, makes a slow call or lasts as long as a run that gets a table (``spans.DeferredRoot``), and
no other span unless for such a call. Their metrics count every run, traced or not."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from .. import semconv as sc
from .clock import wall
from .engines import Phase
from .results import run_name

if TYPE_CHECKING:
    from ..config import Settings
    from .engines import EngineState


class PredictSampling:
    """Which predict runs are traced from their start (any thread may start one)."""

    def __init__(self, settings: Settings) -> None:
        self.first = settings.predict_traces_first
        self.interval_ns = int(settings.predict_traces_interval * 1e9)
        self.started = 0
        self.last_traced: int | None = None
        self._lock = threading.Lock()

    def traced(self, now: int) -> bool:
        with self._lock:
            self.started += 1
            last = self.last_traced
            if self.started <= self.first or last is None or now - last >= self.interval_ns:
                self.last_traced = now
                return True
            return False


class PredictRuns:
    """Mixed into the phase machine: the predict handlers."""

    _environment_context: Any
    _predict_sampling: PredictSampling
    _ranks: dict[str, int]
    _settings: Any
    _tracer: Any

    def _predict_start(self, state: EngineState, now: int) -> None:
        self._new_run(state, sc.MODE_PREDICT, "a new prediction started before on_predict_end")
        attributes = {**self._ranks, **run_name(state.ref())}
        # A root of its own: no current span (its parent then) and no launcher's TRACEPARENT.
        in_a_span = trace.get_current_span().get_span_context().is_valid
        parent = None if in_a_span else self._environment_context  # None: the current span's child
        its_own_root = not in_a_span and parent is None
        if its_own_root and not self._predict_sampling.traced(now) and self._defer(state, now, attributes):
            return
        self._open(state, sc.PHASE_PREDICT, now, parent, **attributes)

    def _defer(self, state: EngineState, now: int, attributes: dict[str, Any]) -> bool:
        """Open the run's root as a deferred one, with no span budget; False where the tracer's own
        sampler decides roots (then every run is traced as it decides)."""
        attributes[sc.ATTR_PHASE] = sc.PHASE_PREDICT
        keep_after_ns = int(self._settings.table_min_duration * 1e9)
        root = self._tracer.start_deferred_root(sc.PHASE_PREDICT, attributes, wall(now), keep_after_ns)
        if root is None:
            return False
        run = state.run
        run.deferred, run.spans, run.span_limit, run.max_spans = root, 1, 0, 0  # no sampled spans
        state.stack.append(Phase(sc.PHASE_PREDICT, root, None, now, state.path_of(sc.PHASE_PREDICT)))
        return True

    def _predict_batch_start(self, state: EngineState, now: int) -> None:
        if state.top(sc.PHASE_PREDICT_BATCH):
            self._abort_top(state, now, "predict batch did not end before the next one started")
        self._open(state, sc.PHASE_PREDICT_BATCH, now, state.innermost())
