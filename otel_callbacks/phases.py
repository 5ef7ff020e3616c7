"""Hook pairs -> phase spans, per engine: the trace tree of a run, fed by the wrapped callbacks.

Engines (trainer, validator, predictor, exporter) are tracked by identity and weakly referenced,
so no engine is kept alive by its telemetry. A *firing* is one ``run_callbacks(event)``: the
callbacks of one event run back to back, so a firing starts when the event changes or when the
callback that opened the current firing runs again. Each firing start moves the engine's phase
stack; a phase ends after its end event's callbacks (they are its children), either right after the
last of them or, when that one raised, when the engine's next firing starts.

Phase spans are never attached to the context: callback spans name their parent explicitly, so
nothing the user's program does later can become a child of a training span.
"""

from __future__ import annotations

import statistics
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from . import semconv as sc
from .hooks import BATCH_EVENTS, BATCH_START_EVENTS, mode_of
from .summary import CallbackStats, Report

if TYPE_CHECKING:
    from opentelemetry.context import Context

    from .config import Limits, Settings
    from .histograms import BufferedHistogram
    from .telemetry import Telemetry
    from .timing import InstrumentedCallback

_perf_ns = time.perf_counter_ns

# Events that start a loop whose batches are counted from 0.
_LOOP_START_EVENTS = frozenset({"on_train_epoch_start", "on_val_start", "on_predict_start"})
# Phases that span a whole run (val only when it is not inside a training).
_RUN_PHASES = frozenset({sc.PHASE_TRAIN, sc.PHASE_VAL, sc.PHASE_PREDICT, sc.PHASE_EXPORT})
# The relative threshold never goes below this: microsecond batches would flag scheduling noise.
_RELATIVE_FLOOR_NS = 1_000_000


class Phase:
    __slots__ = ("context", "name", "span", "start")

    def __init__(self, name: str, span: Any, parent: Context | None, start: int) -> None:
        self.name = name
        self.span = span
        self.context = trace.set_span_in_context(span, parent) if span is not None else parent
        self.start = start


class Run:
    """One train / val / predict / export run: what its timing table and its buffers need."""

    def __init__(
        self, mode: str, durations: BufferedHistogram, limits: Limits, implicit: bool = False
    ) -> None:
        sync_clock()
        self.mode = mode
        self.limits = limits
        self.implicit = implicit  # callbacks fired outside a run's start and end events: no table
        self.start = _perf_ns()
        self.durations = durations
        self.callbacks: dict[tuple[str, str], CallbackStats] = {}
        self.buffers: dict[tuple[int, str | None], list[int]] = {}
        self.phases: dict[tuple[str, ...], list[int]] = {}  # path under the run's phase -> count, ns
        self.warned: set[tuple[str, str]] = set()
        self.failures: list[str] = []
        self.failures_dropped = 0
        self.spans = 0  # spans made for this run: sampled ones stop at Settings.max_spans
        self.span_overhead_ns = 0
        self.span_calls = 0
        self.worst_overhead_ns = 0  # the costliest single call with a span, telemetry only
        self.members: list[weakref.ref[EngineState]] = []  # validators that joined this run

    def buffer(self, binding: Any, error_type: str | None = None) -> list[int]:
        """The list one callback's durations in this run go to (per ``error.type``)."""
        key = (id(binding), error_type)
        values = self.buffers.get(key)
        if values is None:
            callback = binding.attributes[sc.ATTR_CALLBACK]
            stats = self.callbacks.get((binding.attributes[sc.ATTR_EVENT], callback))
            if stats is None:
                stats = CallbackStats(self.limits.reservoir_size)
                self.callbacks[binding.attributes[sc.ATTR_EVENT], callback] = stats
            attributes = binding.attributes
            if error_type is not None:
                attributes = {**attributes, sc.ATTR_ERROR_TYPE: error_type}
            sink = _FailedSink(stats) if error_type else stats
            values = self.buffers[key] = self.durations.buffer(attributes, sink)
        return values

    def fail(self, reason: str) -> None:
        if len(self.failures) < self.limits.failures:
            self.failures.append(reason)
        else:
            self.failures_dropped += 1

    def add_phase(self, path: tuple[str, ...], elapsed_ns: int) -> None:
        totals = self.phases.setdefault(path, [0, 0])
        totals[0] += 1
        totals[1] += elapsed_ns

    def finish(self, end: int, fast_call_ns: float) -> Report:
        for values in self.buffers.values():
            self.durations.release(values)
        self.buffers.clear()
        calls = sum(stats.calls for stats in self.callbacks.values())
        overhead = self.span_overhead_ns + max(0, calls - self.span_calls) * fast_call_ns
        return Report(
            self.mode,
            end - self.start,
            self.callbacks,
            self.phases,
            overhead,
            self.worst_overhead_ns,
            self.failures,
            self.failures_dropped,
        )


class _FailedSink:
    __slots__ = ("stats",)

    def __init__(self, stats: CallbackStats) -> None:
        self.stats = stats

    def add(self, values: list[int]) -> None:
        self.stats.add(values, failed=True)


class EngineState:
    """What the hot path reads about one engine: kept small and flat on purpose."""

    __slots__ = (
        "__weakref__",
        "batch_index",
        "batch_slow_ns",
        "batch_times",
        "closer",
        "context",
        "event",
        "first",
        "last_end",
        "parent",
        "pending",
        "previous",
        "ref",
        "run",
        "sampled",
        "slow_ns",
        "stack",
        "threshold_ns",
    )

    def __init__(self, ref: Callable[[], Any], slow_ns: int, batch_window: int) -> None:
        self.ref = ref
        self.event: str | None = None
        self.previous: str | None = None  # the event of the firing before this one
        self.first: InstrumentedCallback | None = None  # the callback that opened the firing
        self.closer: InstrumentedCallback | None = None  # the last callback of an end event
        self.pending: str | None = None  # the phase that ends with the current firing
        self.batch_index = -1
        self.sampled = True
        self.slow_ns = slow_ns
        self.batch_slow_ns = slow_ns
        self.threshold_ns = slow_ns  # the slow threshold of the current firing's event
        self.batch_times: deque[int] = deque(maxlen=batch_window)
        self.stack: list[Phase] = []
        self.context: Context | None = None  # the parent of callback spans; None: the caller's
        self.parent: EngineState | None = None  # the trainer a validator works for
        self.run: Run | None = None
        self.last_end = 0  # perf_counter_ns when the engine's last callback returned

    @property
    def epoch(self) -> int | None:
        """The epoch as Ultralytics shows it (``1/3``) and results.csv counts it: from 1."""
        engine = self.parent.ref() if self.parent is not None else self.ref()
        epoch = getattr(engine, "epoch", None)
        return epoch + 1 if isinstance(epoch, int) else None

    def top(self, name: str) -> bool:
        return bool(self.stack) and self.stack[-1].name == name

    def ancestors(self) -> tuple[str, ...]:
        """The open phases below the run's own phase (a validator's include its trainer's)."""
        names = [phase.name for phase in self.stack]
        if self.parent is not None:
            names = [phase.name for phase in self.parent.stack] + names
        return tuple(names[1:] if names and names[0] in _RUN_PHASES else names)

    def innermost(self) -> Context | None:
        """The context of the innermost open phase: the parent of what starts now."""
        return self.stack[-1].context if self.stack else None


class PhaseTracker:
    """Maps engines to their :class:`EngineState` and moves their phases on each new firing."""

    def __init__(
        self,
        telemetry: Telemetry,
        durations: BufferedHistogram | None = None,
        settings: Settings | None = None,
    ) -> None:
        self._telemetry = telemetry
        self._settings = settings or telemetry.settings
        self._tracer = telemetry.tracer
        self._durations = durations or telemetry.callback_duration
        self.states: dict[int, EngineState] = {}  # read by the hot path
        self._phase_buffers: dict[tuple[str, str], list[int]] = {}
        self._trainers: dict[int, weakref.ref[EngineState]] = {}  # id(callbacks dict) -> state
        # Reentrant: an engine's weakref callback (_forget) runs whenever the garbage collector
        # does, which can be inside any block that holds this lock, on the same thread.
        self._lock = threading.RLock()
        self._limits = self._settings.limits
        self._anonymous = self._new_state(lambda: None)
        self.fast_call_ns = 0.0  # the unsampled path's own cost, measured once per tracker
        self.last_report: Report | None = None
        self._opening: dict[str, Callable[[EngineState, int], None]] = {
            "on_pretrain_routine_start": self._train_start,
            "on_pretrain_routine_end": lambda s, now: self._end(s, sc.PHASE_SETUP),
            "on_train_epoch_start": self._epoch_start,
            "on_train_batch_start": self._batch_start,
            "on_train_batch_end": lambda s, now: self._end(s, sc.PHASE_BATCH),
            "on_fit_epoch_end": self._fit_epoch_end,
            "teardown": self._teardown,
            "on_val_start": self._val_start,
            "on_val_end": lambda s, now: self._end(s, sc.PHASE_VAL),
            "on_predict_start": self._predict_start,
            "on_predict_batch_start": self._predict_batch_start,
            "on_predict_batch_end": lambda s, now: self._end(s, sc.PHASE_PREDICT_BATCH),
            "on_predict_end": lambda s, now: self._end(s, sc.PHASE_PREDICT),
            "on_export_start": self._export_start,
            "on_export_end": lambda s, now: self._end(s, sc.PHASE_EXPORT),
        }

    # Called by every wrapped callback ---------------------------------------------------

    def enter(self, engine: Any, callback: InstrumentedCallback) -> EngineState:
        """Before a callback runs: its engine's state, moved on if a new firing starts."""
        state = self.states.get(id(engine))
        if state is None:  # a dead engine's id may be reused: its weakref callback removed it
            state = self._track(engine)
        if callback.event != state.event or callback is state.first:
            self._fire(state, callback, engine)
        return state

    def closed_firing(self, state: EngineState) -> None:
        """After the last callback of an end event: end its phase now."""
        state.closer = None
        if state.pending is not None:
            self._close_pending(state, state.last_end)

    # Engines ----------------------------------------------------------------------------

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
        return EngineState(ref, self._telemetry.slow_ns, self._limits.batch_window)

    def _forget(self, key: int) -> None:
        with self._lock:
            state = self.states.pop(key, None)
            for dict_id, trainer in list(self._trainers.items()):
                if trainer() in (None, state):
                    del self._trainers[dict_id]
        if state is not None:
            self._abort(state, "the engine was garbage collected before its end event")

    def close_all(self, reason: str) -> None:
        """End every open phase of every engine with status ERROR (process exit)."""
        with self._lock:
            states = [*self.states.copy().values(), self._anonymous]  # _forget may pop meanwhile
        for state in states:
            self._abort(state, reason)

    # Firings ----------------------------------------------------------------------------

    def _fire(self, state: EngineState, callback: InstrumentedCallback, engine: Any) -> None:
        now = _perf_ns()
        if state.pending is not None:  # the previous end event's last callback raised
            self._close_pending(state, state.last_end or now)
        event = callback.event
        state.previous, state.event = state.event, event
        state.first = callback
        state.closer = None
        if event in _LOOP_START_EVENTS:
            state.batch_index = -1
        try:
            if event in BATCH_START_EVENTS:  # before the batch's phase span, which depends on it
                self._sample(state, event)
            handler = self._opening.get(event)
            if handler is not None:
                handler(state, now)
            if state.run is None:
                mode = callback.mode or mode_of(event, engine)
                state.run = Run(mode, self._durations, self._limits, implicit=True)
            if event not in BATCH_START_EVENTS:  # after the handler: a new run has a new budget
                self._sample(state, event)
            if state.pending is not None:
                callbacks = getattr(engine, "callbacks", None)
                listed = callbacks.get(event) if isinstance(callbacks, dict) else None
                state.closer = listed[-1] if listed else None
        except Exception as exc:
            self._telemetry.report_error(exc)
        state.context = state.innermost()

    def _sample(self, state: EngineState, event: str) -> None:
        """Spans for this firing? Batch events by their batch's index, all within the run's budget."""
        run = state.run
        within_budget = run is None or run.spans < self._settings.max_spans
        if event in BATCH_START_EVENTS:
            state.batch_index += 1
            state.sampled = within_budget and self._settings.samples_batch(state.batch_index)
        elif event not in BATCH_EVENTS:  # the other batch events follow their batch's start
            state.sampled = within_budget
        state.threshold_ns = state.batch_slow_ns if event in BATCH_EVENTS else state.slow_ns

    # Phases -----------------------------------------------------------------------------

    def _open(
        self, state: EngineState, name: str, now: int, parent: Context | None, **attributes: Any
    ) -> None:
        span = None
        if name not in (sc.PHASE_BATCH, sc.PHASE_PREDICT_BATCH) or state.sampled:
            attributes[sc.ATTR_PHASE] = name
            span = self._tracer.start_span(name, context=parent, attributes=attributes, start_time=wall(now))
            if state.run is not None:
                state.run.spans += 1
        state.stack.append(Phase(name, span, parent, now))

    def _end(self, state: EngineState, name: str) -> None:
        if any(phase.name == name for phase in state.stack):
            state.pending = name

    def _close_pending(self, state: EngineState, end: int) -> None:
        name, state.pending = state.pending, None
        while state.stack:
            phase = state.stack.pop()
            if phase.name == name:
                self._finish(state, phase, end)
                break
            self._finish(state, phase, end, f"{phase.name} never reached its end event before {name} ended")
        if not state.stack and name in _RUN_PHASES and state.parent is None:
            self._finish_run(state, end)
        elif state.parent is not None and name == sc.PHASE_VAL:
            state.run = None  # the validator's next val may belong to another epoch or run

    def _finish(self, state: EngineState, phase: Phase, end: int, error: str | None = None) -> None:
        elapsed = end - phase.start
        if phase.name != sc.PHASE_TRAIN or error is None:
            self._record_phase(state, phase.name, elapsed)
        if phase.name in (sc.PHASE_BATCH, sc.PHASE_PREDICT_BATCH) and elapsed > 0:
            self._batch_time(state, elapsed)
        if error is not None and state.run is not None:
            state.run.fail(error)
        if phase.span is None:
            return
        failures = state.run.failures if state.run is not None else []
        if error is not None:
            phase.span.set_status(Status(StatusCode.ERROR, error))
        elif failures and phase.name in (sc.PHASE_TRAIN, sc.PHASE_PREDICT, sc.PHASE_EXPORT):
            phase.span.set_status(Status(StatusCode.ERROR, failures[0]))
        phase.span.end(end_time=wall(end))

    def _record_phase(self, state: EngineState, name: str, elapsed_ns: int) -> None:
        mode = state.run.mode if state.run is not None else sc.MODE_TRAIN
        buffer = self._phase_buffers.get((name, mode))
        if buffer is None:
            attributes = {sc.ATTR_PHASE: name, sc.ATTR_MODE: mode}
            buffer = self._phase_buffers[name, mode] = self._telemetry.phase_duration.buffer(attributes)
        buffer.append(elapsed_ns)
        if len(buffer) >= self._limits.buffer_limit:
            self._telemetry.phase_duration.fold(buffer)
        if state.run is not None and not (name in _RUN_PHASES and state.parent is None):
            state.run.add_phase((*state.ancestors(), name), elapsed_ns)  # the run's own span: its total

    def _batch_time(self, state: EngineState, elapsed: int) -> None:
        times = state.batch_times
        times.append(elapsed)
        fraction = self._settings.slow_batch_fraction
        window = self._limits.batch_window
        if (
            fraction
            and len(times) >= self._limits.batch_min
            and (len(times) < window or not state.batch_index % max(1, window // 4))
        ):
            relative = max(_RELATIVE_FLOOR_NS, int(fraction * statistics.median(times)))
            state.batch_slow_ns = min(state.slow_ns, relative)

    def _abort(self, state: EngineState, reason: str) -> None:
        """End whatever is open with status ERROR and the reason; finish the run."""
        try:
            state.pending = None
            end = state.last_end or _perf_ns()
            while state.stack:
                self._finish(state, state.stack.pop(), end, reason)
            if state.run is not None and state.parent is None:
                self._finish_run(state, end)
            state.run = None
        except Exception as exc:
            self._telemetry.report_error(exc)

    def _finish_run(self, state: EngineState, end: int) -> None:
        run, state.run = state.run, None
        state.batch_times.clear()
        state.batch_slow_ns = state.slow_ns
        if run is None:
            return
        for member in run.members:  # a validator still inside the run (the training raised)
            other = member()
            if other is not None and other is not state:
                self._abort(other, "the training ended during this validation")
        if run.implicit:  # no table: release its buffers, skip measuring the overhead
            run.finish(end, 0.0)
            return
        if not self.fast_call_ns:
            from .timing import fast_path_cost_ns

            self.fast_call_ns = fast_path_cost_ns(self._telemetry)
        report = run.finish(end, self.fast_call_ns)
        if self._settings.summary:
            report.emit()
        self.last_report = report

    # Opening events ---------------------------------------------------------------------

    def _new_run(self, state: EngineState, mode: str, reason: str) -> None:
        if state.stack or state.run is not None:
            self._abort(state, reason)
        state.run = Run(mode, self._durations, self._limits)

    def _train_start(self, state: EngineState, now: int) -> None:
        self._new_run(state, sc.MODE_TRAIN, "a new training started on the same trainer")
        trainer = state.ref()
        callbacks = getattr(trainer, "callbacks", None)
        if callbacks is not None:
            with self._lock:
                self._trainers[id(callbacks)] = weakref.ref(state)
        self._open(state, sc.PHASE_TRAIN, now, None, **_run_attributes(trainer))
        self._open(state, sc.PHASE_SETUP, now, state.innermost())

    def _epoch_start(self, state: EngineState, now: int) -> None:
        if state.top(sc.PHASE_EPOCH):
            self._abort_top(state, now, "epoch did not end before the next one started")
        parent = state.innermost()
        epoch = state.epoch
        self._open(
            state, sc.PHASE_EPOCH, now, parent, **({sc.ATTR_EPOCH: epoch} if epoch is not None else {})
        )

    def _batch_start(self, state: EngineState, now: int) -> None:
        if state.top(sc.PHASE_BATCH):  # a batch whose end event never fired
            self._abort_top(state, now, "batch did not end before the next one started")
        parent = state.innermost()
        if state.previous in ("on_train_batch_end", "on_train_epoch_start") and state.last_end:
            # Between the previous batch's last callback and this batch: waiting for the dataloader.
            self._record_phase(state, sc.PHASE_DATALOADER, now - state.last_end)
            if state.sampled:
                self._tracer.start_span(
                    sc.PHASE_DATALOADER,
                    context=parent,
                    attributes={sc.ATTR_PHASE: sc.PHASE_DATALOADER},
                    start_time=wall(state.last_end),
                ).end(end_time=wall(now))
                if state.run is not None:
                    state.run.spans += 1
        self._open(state, sc.PHASE_BATCH, now, parent)

    def _abort_top(self, state: EngineState, now: int, reason: str) -> None:
        self._finish(state, state.stack.pop(), state.last_end or now, reason)

    def _teardown(self, state: EngineState, now: int) -> None:
        """Ultralytics runs teardown in a ``finally``: whatever is still open did not finish."""
        if not any(phase.name == sc.PHASE_TRAIN for phase in state.stack):
            return
        while not state.top(sc.PHASE_TRAIN):
            phase = state.stack[-1]
            self._abort_top(state, now, f"{phase.name} never reached its end event before teardown")
        state.pending = sc.PHASE_TRAIN

    def _fit_epoch_end(self, state: EngineState, now: int) -> None:
        if state.top(sc.PHASE_FINAL_EVAL):
            state.pending = sc.PHASE_FINAL_EVAL
        elif state.top(sc.PHASE_EPOCH):
            state.pending = sc.PHASE_EPOCH

    def _val_start(self, state: EngineState, now: int) -> None:
        validator = state.ref()
        trainer = self._trainer_of(validator)
        if state.stack:
            self._abort(state, "a new validation started before on_val_end")
        if trainer is None or trainer.run is None:
            state.parent = None
            self._new_run(state, sc.MODE_VAL, "a new validation started before on_val_end")
            self._open(state, sc.PHASE_VAL, now, None)
            return
        state.parent, state.run = trainer, trainer.run
        trainer.run.members.append(weakref.ref(state))
        if not trainer.top(sc.PHASE_EPOCH) and not trainer.top(sc.PHASE_FINAL_EVAL):
            # Validation after the last epoch: Ultralytics' final evaluation of best.pt.
            parent = trainer.innermost()
            self._open(trainer, sc.PHASE_FINAL_EVAL, now, parent)
            trainer.context = trainer.innermost()
        state.batch_slow_ns = trainer.batch_slow_ns
        epoch = state.epoch
        attributes = {sc.ATTR_EPOCH: epoch} if epoch is not None else {}
        self._open(state, sc.PHASE_VAL, now, trainer.innermost(), **attributes)

    def _trainer_of(self, validator: Any) -> EngineState | None:
        callbacks = getattr(validator, "callbacks", None)
        ref = self._trainers.get(id(callbacks)) if callbacks is not None else None
        trainer = ref() if ref is not None else None
        if trainer is None or trainer.ref() is None:
            return None
        if getattr(trainer.ref(), "callbacks", None) is not callbacks:
            return None  # the dict was replaced and its id reused
        return trainer

    def _predict_start(self, state: EngineState, now: int) -> None:
        self._new_run(state, sc.MODE_PREDICT, "a new prediction started before on_predict_end")
        self._open(state, sc.PHASE_PREDICT, now, None)

    def _predict_batch_start(self, state: EngineState, now: int) -> None:
        if state.top(sc.PHASE_PREDICT_BATCH):
            self._abort_top(state, now, "predict batch did not end before the next one started")
        parent = state.innermost()
        self._open(state, sc.PHASE_PREDICT_BATCH, now, parent)

    def _export_start(self, state: EngineState, now: int) -> None:
        self._new_run(
            state, sc.MODE_EXPORT, "a new export started before on_export_end (the previous one failed)"
        )
        self._open(state, sc.PHASE_EXPORT, now, None)


_clock_offset = time.time_ns() - _perf_ns()


def sync_clock() -> None:
    """Re-read the wall clock's offset from perf_counter (at each run start, so NTP steps between
    runs are followed while the spans of one run stay ordered exactly as perf_counter saw them)."""
    global _clock_offset
    _clock_offset = time.time_ns() - _perf_ns()


def wall(perf_ns: int) -> int:
    """A perf_counter_ns reading as wall-clock ns since the epoch, for span times."""
    return perf_ns + _clock_offset


def _run_attributes(trainer: Any) -> dict[str, Any]:
    args = getattr(trainer, "args", None)
    attributes: dict[str, Any] = {}
    for name, key in sc.RUN_ATTRIBUTES.items():
        value = getattr(args, name, None)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, (int, float)):
            attributes[key] = value
        elif isinstance(value, str) and value:
            attributes[key] = (
                value.replace("\\", "/").rsplit("/", 1)[-1] if name in ("model", "data") else value
            )
    return attributes
