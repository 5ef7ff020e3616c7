"""The phase tracker: engines, firings and runs, behind the narrow interface the wrapper calls.

Engines are tracked by identity and weakly referenced, so no engine is kept alive by its
telemetry. A *firing* is one ``run_callbacks(event)``: the callbacks of one event run back to back,
so a firing starts when the event changes or when the callback that opened the current firing runs
again. Only the tracker changes engine states and runs; the wrapper calls :meth:`enter` before a
callback, :meth:`leave` after the last callback of a firing, and reports durations, spans and slow
calls through :meth:`durations`, :meth:`spanned` and :meth:`slow`.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import semconv as sc
from ..config import process_ranks
from ..hooks import BATCH_START_EVENTS, mode_of
from ..telemetry.propagation import environment_context
from .clock import perf_ns
from .engines import LANE_END, EngineState
from .phases import PhaseMachine
from .predict_runs import PredictSampling
from .quiet_runs import QuietRuns
from .run_lifecycle import RunLifecycle
from .runs import Run
from .slow import report_slow
from .tables import Tables
from .watchdog import watch

if TYPE_CHECKING:
    from ..config import Settings
    from ..telemetry.histograms import BufferedHistogram
    from ..telemetry.providers import Telemetry
    from .report import Report

# Events that start a loop whose batches are counted from 0.
_LOOP_START_EVENTS = frozenset({"on_train_epoch_start", "on_val_start", "on_predict_start"})


class PhaseTracker(PhaseMachine, RunLifecycle, QuietRuns):
    """Maps engines to their :class:`EngineState`, detects firings, and starts and ends runs
    (``run_lifecycle.py``)."""

    calibrate: Callable[[Telemetry], tuple[float, float]] | None = None
    """Measures the unsampled path's costs for the overhead line (set by ``tracing/__init__``, which
    assembles the layer: the wrapper it times imports the tracker)."""

    def __init__(
        self,
        telemetry: Telemetry,
        durations: BufferedHistogram | None = None,
        settings: Settings | None = None,
        calibrate: Callable[[Telemetry], tuple[float, float]] | None = None,
    ) -> None:
        self._telemetry = telemetry
        self._settings = settings or telemetry.settings
        self._limits = self._settings.limits
        self._slow_ns = int(self._settings.slow_threshold * 1e9)
        self._max_spans = self._settings.max_spans
        self._settle_every = max(1, self._limits.batch_window // 4)
        self._environment_context = environment_context()  # a launcher's TRACEPARENT, read once
        self._ranks = process_ranks()  # a DDP worker's rank, local rank and world size
        self._rank = self._ranks.get(sc.ATTR_RANK, 0)
        self._tracer = telemetry.spans  # start_span as the tracer has it (telemetry/spans.py)
        self._durations = durations or telemetry.callback_duration
        self._calibrate = calibrate
        self.states: dict[int, EngineState] = {}  # read by the hot path
        self._phase_buffers: dict[tuple[str, str], list[int]] = {}
        self._trainers: dict[int, weakref.ref[EngineState]] = {}  # id(callbacks dict) -> state
        # Reentrant: an engine's weakref callback (_forget) runs when the collector does: maybe here.
        self._lock = threading.RLock()
        self._anonymous = self._new_state(lambda: None)
        # The unsampled path's own cost per call, measured once (calibration.CallCosts): as a firing
        # of its own, and inside a firing.
        self.fast_call_ns: float | None = None
        self.inner_call_ns: float | None = None
        self.last_report: Report | None = None  # the last table made
        self.last_overhead_ns: float | None = None  # the last run's own overhead (quiet ones too)
        self._predict_sampling = PredictSampling(self._settings)
        self._tables = Tables(self._settings, self._settings.summary and self._rank == 0)  # DDP: rank 0
        self._opening = self._handlers()
        self._start_health()
        try:
            watch(self._settings.watchdog_interval, self)
        except Exception as exc:  # no thread to be had: no watchdog, the rest as ever
            telemetry.report_error(exc)

    # The wrapper's interface ----------------------------------------------------------------

    def enter(self, engine: Any, callback: Any, state: EngineState | None = None) -> EngineState:
        """Before a callback runs: its engine's state (``state`` when the caller looked it up),
        moved on if a new firing starts. The training batch's two firings take a short path."""
        event = callback.event
        if state is None:
            state = self.states.get(id(engine))
            if state is None:  # a dead engine's id may be reused: its weakref callback removed it
                state = self._track(engine)
            elif event == state.event and callback is not state.first:
                return state
        lane = state.armed
        if lane is not None:  # among the unsampled batches of an epoch (batches.py)
            if event == "on_train_batch_start":
                idle = lane.idle
                if state.last_end > idle.start:  # the batch before ran its end event
                    index = state.batch_index + 1
                    if index != lane.next_sampled:
                        # _unsampled_batch_end's work, inlined (the hot path): the idle phase stays
                        # on top of the stack (as long as the lane is armed) for this batch.
                        stamps = lane.stamps
                        stamps.append(idle.start)
                        stamps.append(state.last_end)
                        state.first = callback
                        state.batch_index = index
                        if len(stamps) >= lane.settle_at:
                            self._settle(state)
                            state.threshold_ns = state.batch_slow_ns
                        idle.start = perf_ns()
                        return state
                elif callback is not state.first:
                    return state  # a later callback of this batch's start event
            self._disarm(state)
        quiet = state.quiet  # a quiet predict run's firings (quiet_runs.py); never with a lane armed
        if quiet is not None and self._quiet_firing(state, callback, engine, quiet):
            return state
        now = perf_ns()
        if event == "on_predict_start" and self._quiet_again(state, callback, engine, now):
            return state
        if state.pending is not None:  # a lane's batch to count, or an end event that raised
            self._close_pending(state, state.last_end or now)
        state.previous, state.event, state.first = state.event, event, callback
        if event == "on_train_batch_start" and self._unsampled_batch_start(state, now):
            state.event = state.closer = LANE_END  # armed: see engines.py
            return state
        try:
            state.closer = engine.callbacks.get(event)[-1]
        except Exception:  # no callbacks dict, or not this event in it: the firing's end is unknown
            state.closer = None
        if event == "on_train_batch_end" and state.in_lane_batch():
            state.pending = sc.PHASE_BATCH  # the unsampled batch ends with this firing
            state.threshold_ns = state.batch_slow_ns
            return state
        self._fire(state, callback, engine, now)
        return state

    def leave(self, state: EngineState, callback: Any, end: int, failed: bool = False) -> None:
        """After the last callback of a firing: the firing's end, and the end of the phase that
        ends with it (unless that callback raised: then the engine's next firing ends it)."""
        state.last_end = end
        if state.closer is callback and not failed:
            state.closer = None
            if state.pending is not None:
                self._close_counted(state, end)

    def _close_counted(self, state: EngineState, end: int) -> None:
        """Close the pending phase, its time counted in the run's overhead (up to the table where
        the run ends with it)."""
        if state.quiet is not None:
            self._quiet_close(state, end)
            return
        run = state.run
        if run is not None:
            run.closing_since = end
        self._close_pending(state, end)
        if run is not None and run is state.run:  # a phase inside the run ended
            run.tracking_ns += perf_ns() - end
            run.closing_since = None

    def durations(self, state: EngineState, binding: Any, error_type: str | None = None) -> list[int]:
        """The list this callback's durations in the engine's current run go to."""
        return state.run.buffer(binding, error_type, state.durations)

    def spanned(
        self, state: EngineState, overhead_ns: int, made: bool, called: bool = True, elapsed: int = 0
    ) -> None:
        """Bookkeeping of a call that made (or tried) a span: the budget, the overhead line, and
        the time it accounts for in its phase."""
        top = state.stack[-1] if state.stack else None
        if top is not None:
            top.covered += elapsed
        run = state.run
        if made and run.deferred is not None:
            run.deferred.keep()  # a slow or failed call: its run's trace is kept
        run.spans += made
        run.span_calls += called
        run.span_overhead_ns += overhead_ns
        if overhead_ns > run.worst_overhead_ns:
            run.worst_overhead_ns = overhead_ns

    def slow(
        self,
        callback: Any,
        attributes: dict[str, Any],
        state: EngineState,
        elapsed: int,
        span: Any,
        start: int,
    ) -> None:
        report_slow(self._telemetry, callback, attributes, state, elapsed, span, start)

    # Engines ----------------------------------------------------------------------------------

    def _track(self, engine: Any) -> EngineState:
        key = id(engine)
        try:
            ref = weakref.ref(engine, lambda _, key=key: self._forget(key))
        except TypeError:  # None, or an engine that cannot be weakly referenced
            return self._anonymous
        state = self._new_state(ref)
        with self._lock:
            self.states[key] = state
        return state

    def _new_state(self, ref: Callable[[], Any]) -> EngineState:
        return EngineState(ref, self._slow_ns, self._limits.batch_window)

    def _forget(self, key: int) -> None:
        with self._lock:
            state = self.states.pop(key, None)
            for dict_id, trainer in list(self._trainers.items()):
                if trainer() in (None, state):
                    del self._trainers[dict_id]
        if state is not None:
            self._abort(state, "the engine was garbage collected before its end event")
            for values in state.durations.values():
                self._durations.release(values)

    def close_all(self, reason: str) -> None:
        """End every open phase of every engine with status ERROR (process exit)."""
        with self._lock:
            states = [*self.states.copy().values(), self._anonymous]  # _forget may pop meanwhile
        for state in states:
            self._abort(state, reason)
        try:
            self._tables.flush()  # the short runs' summary, after the tables of the runs just ended
        except Exception as exc:
            self._telemetry.report_error(exc)

    def _trainer_of(self, validator: Any) -> EngineState | None:
        callbacks = getattr(validator, "callbacks", None)
        ref = self._trainers.get(id(callbacks)) if callbacks is not None else None
        trainer = ref() if ref is not None else None
        if trainer is None or getattr(trainer.ref(), "callbacks", None) is not callbacks:
            return None  # gone, or the dict was replaced and its id reused
        return trainer

    # Firings ----------------------------------------------------------------------------------

    def _fire(self, state: EngineState, callback: Any, engine: Any, now: int) -> None:
        """A firing's start, the generic way: the event's handler moves the phases."""
        event = callback.event
        self._settle(state)
        self._trainer_gap(state, event, now)
        try:
            if event in BATCH_START_EVENTS:  # before the batch's phase span, which depends on it
                self._sample(state, event)
            handler = self._opening.get(event)
            if handler is not None:
                handler(state, now)
            if state.run is None:
                mode = callback.mode or mode_of(event, engine)
                state.run = Run(mode, self._durations, self._limits, self._max_spans, implicit=True)
            if event not in BATCH_START_EVENTS:  # after the handler: a new run has a new budget
                self._sample(state, event)
        except Exception as exc:
            self._telemetry.report_error(exc)
        if event in _LOOP_START_EVENTS:  # after its handler: an epoch left for a retry counts its batches
            state.batch_index = -1
        state.context = state.innermost()
        if state.run is not None:  # the firing's phase work (a run's start too) is overhead
            state.run.tracking_ns += perf_ns() - now
