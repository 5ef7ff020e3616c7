"""Quiet predict runs: the short path of the runs of an inference loop that sampling passed over.

An inference loop makes a predict run per frame (``model(frame)``), and most of them are not traced
(``predict_runs.py``); the generic path would still make each a run, phases and duration lists of its
own. A quiet run notes its start and its batch's in one object that its engine reuses
(:class:`QuietRun`), which stands in for the run where the wrapper and a firing read one: its
callbacks' durations go to the engine's lists (the values a collection drains meanwhile are kept for
it), its phases' to the metric buffers, and a run that ends as it should leaves a line in the short
runs' summary and nothing else.

Anything else *materializes* the run first (:meth:`QuietRuns.materialize`): a slow or failed call, a
firing of another event, a batch left open, an abort, the run reaching the table's duration. It then
becomes what the generic path makes of a run that sampling passed over, as if it had been so from its
start: a deferred root started when the run did, its open phases, its calls in its table's statistics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry.context import Context

from .. import semconv as sc
from ..telemetry.spans import DeferredRoot
from .clock import perf_ns, wall
from .engines import Phase
from .results import run_name
from .runs import CallbackStats, Run, duration_list

if TYPE_CHECKING:
    from ..telemetry.histograms import BufferedHistogram
    from .engines import EngineState

# The firings a quiet run expects after its start, outside a batch and inside one; any other
# materializes it.
_BATCH_START, _BATCH_END, _END = "on_predict_batch_start", "on_predict_batch_end", "on_predict_end"
_OUTSIDE = frozenset({_BATCH_START, _END})
_INSIDE = frozenset({"on_predict_postprocess_end", _BATCH_END})


class QuietRun:
    """What the wrapper and a firing read of a run, for the quiet runs of one engine in turn."""

    implicit = False
    mode = sc.MODE_PREDICT
    spans = span_limit = 0  # no sampled spans

    __slots__ = (
        "_durations",
        "_pooled",
        "_reservoir_size",
        "_sources",
        "_version",
        "batch_ns",
        "batch_start",
        "batches",
        "calls",
        "closing_since",
        "phase_buffers",
        "start",
        "stats",
        "tracking_ns",
    )

    def __init__(self, durations: BufferedHistogram, reservoir_size: int) -> None:
        self._durations = durations
        self._reservoir_size = reservoir_size
        # By (event, callback): the sinks of the engine's duration lists, the run's table statistics
        # should it materialize.
        self.stats: dict[tuple[str, str], CallbackStats] = {}
        self.phase_buffers: tuple[list[int], list[int]] = ([], [])  # predict's, predict_batch's metric
        # The lists' handles as of the last begin that set their sinks, and the histogram's version
        # then: a begin that finds it the same only marks where this run's values start.
        self._sources: list[Any] = []
        self._version = self._pooled = -1

    def begin(self, now: int, pool: dict[tuple[Any, str | None], list[int]]) -> None:
        self.start = now
        self.batch_start: int | None = None
        self.batches = self.batch_ns = self.calls = self.tracking_ns = 0
        self.closing_since: int | None = None
        durations = self._durations
        if self._pooled == len(pool) and durations.restart(self._sources, self._version):
            return
        stats = self.stats
        for name, held in stats.items():
            if held.calls:  # a drain gave it a run's values: the run before's
                stats[name] = CallbackStats(self._reservoir_size)
        lists = [(values, self._sink(key[0])) for key, values in pool.items() if key[1] is None]
        self._version = durations.redirect(lists)  # from now on, what the lists hold is this run's
        self._sources = durations.sources(values for values, _ in lists)
        self._pooled = len(pool)

    def _sink(self, binding_key: tuple[Any, ...]) -> CallbackStats:
        name = binding_key[:2]  # event, callback
        stats = self.stats.get(name)
        if stats is None:
            stats = self.stats[name] = CallbackStats(self._reservoir_size)
        return stats

    def buffer(
        self, binding: Any, error_type: str | None, pool: dict[tuple[Any, str | None], list[int]]
    ) -> list[int]:
        """``Run.buffer``: the engine's list for the callback, whose values are this run's."""
        key = (binding.key, error_type)
        values = pool.get(key)
        if values is None:
            sink = self._sink(binding.key) if error_type is None else None  # a failure materializes
            values = pool[key] = duration_list(self._durations, binding, error_type, sink)
        return values


class QuietRuns:
    """The tracker's quiet-run methods (a mixin of ``PhaseTracker``, whose state they use)."""

    _durations: Any
    _limits: Any
    _max_spans: int
    _predict_sampling: Any
    _ranks: dict[str, int]
    _tables: Any
    _telemetry: Any
    _tracer: Any
    fast_call_ns: float | None
    inner_call_ns: float | None
    last_overhead_ns: float | None

    def _quiet_start(self, state: EngineState, now: int, starts: int | None = None) -> None:
        """Open a quiet run; ``starts``: the ``on_predict_start`` callbacks (None: looked up)."""
        if starts is None:
            try:
                starts = len(state.ref().callbacks.get("on_predict_start"))
            except Exception:  # not Ultralytics' engine
                starts = 0
        run = state.quiet_run
        if run is None:
            run = state.quiet_run = QuietRun(self._durations, self._limits.reservoir_size)
            run.phase_buffers = (
                self._phase_buffer(sc.PHASE_PREDICT, sc.MODE_PREDICT),
                self._phase_buffer(sc.PHASE_PREDICT_BATCH, sc.MODE_PREDICT),
            )
        run.begin(now, state.durations)
        run.calls = starts
        state.quiet = state.run = run
        state.sampled, state.context, state.threshold_ns = False, None, state.slow_ns

    def _quiet_again(self, state: EngineState, callback: Any, engine: Any, now: int) -> bool:
        """``on_predict_start`` on an engine whose quiet runs came before: the next one the short
        way, where nothing is open and the run is quiet (else False, nothing counted)."""
        sampling = self._predict_sampling
        if (
            state.quiet_run is None
            or state.run is not None
            or state.stack
            or state.pending is not None
            or sampling.due(now)
            or not self._can_wait()
        ):
            return False
        sampling.started += 1  # not due, so not traced; past the first runs: the count decides nothing
        state.previous, state.event, state.first = state.event, callback.event, callback
        try:
            callbacks = engine.callbacks.get(callback.event)
            state.closer = callbacks[-1]
        except Exception:  # not Ultralytics' engine: its next firing materializes the run
            callbacks, state.closer = (), None
        state.batch_index = -1
        try:
            self._quiet_start(state, now, len(callbacks))
            state.run.tracking_ns += perf_ns() - now
        except Exception as exc:  # the telemetry's failure never reaches the prediction
            self._telemetry.report_error(exc)
        return True

    def _quiet_firing(self, state: EngineState, callback: Any, engine: Any, run: QuietRun) -> bool:
        """A new firing in a quiet run; False where it materialized the run for the generic path."""
        now = perf_ns()
        try:
            event = callback.event
            try:
                callbacks = engine.callbacks.get(event)
                closer = callbacks[-1]
            except Exception:  # no callbacks dict, or not this event in it
                closer = None
            if (
                closer is None
                or event not in (_OUTSIDE if run.batch_start is None else _INSIDE)
                or state.pending is not None  # the firing before ended with no known last callback
                or now - run.start >= self._tables.min_ns
            ):
                self.materialize(state)
                state.run.tracking_ns += perf_ns() - now
                return False
            if event == _BATCH_START:
                run.batch_start = now
                state.batch_index += 1
            elif event == _BATCH_END:
                state.pending = sc.PHASE_PREDICT_BATCH
            elif event == _END:
                state.pending = sc.PHASE_PREDICT
            state.previous, state.event, state.first, state.closer = state.event, event, callback, closer
            state.threshold_ns = state.batch_slow_ns if callback.is_batch else state.slow_ns
            run.calls += len(callbacks)
            run.tracking_ns += perf_ns() - now
            return True
        except Exception as exc:  # the telemetry's failure never reaches the prediction
            self._telemetry.report_error(exc)
            return state.quiet is not None

    def _quiet_close(self, state: EngineState, end: int) -> None:
        """After the last callback of a quiet run's batch or run end (``leave``): its phase ends."""
        run = state.quiet
        try:
            if state.pending == sc.PHASE_PREDICT_BATCH:
                state.pending = None
                elapsed = end - run.batch_start
                run.batch_start = None
                run.batches += 1
                run.batch_ns += elapsed
                self._phase_time(run.phase_buffers[1], elapsed)
                self._batch_time(state, elapsed)
                run.tracking_ns += perf_ns() - end
                return
            run.closing_since = end
            elapsed = end - run.start
            if elapsed >= self._tables.min_ns:  # a table's run: the generic path ends it
                self.materialize(state)
                self._close_counted(state, end)
                return
            state.pending = None
            state.quiet = state.run = None
            state.batch_times.clear()
            state.batch_slow_ns = state.slow_ns
            self._phase_time(run.phase_buffers[0], elapsed)
            if self.fast_call_ns is None:
                self._probe_once(run)
            # As Run.finish, with the calls' cost inside the firings that tracking_ns timed; the
            # summary's note, like a table, is not counted.
            call_ns, closing = self.inner_call_ns, perf_ns() - run.closing_since
            own = None if call_ns is None else run.tracking_ns + run.calls * call_ns + closing
            self.last_overhead_ns = own
            self._tables.quiet_run(elapsed)
        except Exception as exc:  # the telemetry's failure never reaches the prediction
            self._telemetry.report_error(exc)

    def materialize(self, state: EngineState) -> None:
        """Make the open quiet run what the generic path makes of a run that sampling passed over."""
        quiet, state.quiet = state.quiet, None
        run = state.run = Run(sc.MODE_PREDICT, self._durations, self._limits, self._max_spans)
        run.start, run.tracking_ns, run.closing_since = quiet.start, quiet.tracking_ns, quiet.closing_since
        run.spans, run.span_limit, run.max_spans = 1, 0, 0  # its root, and no sampled spans
        for key, values in state.durations.items():
            stats = quiet.stats.get(key[0][:2]) if key[1] is None else None
            if stats is not None:
                run.callbacks[key[0][:2]] = stats
                run.buffers[key] = values
        quiet.stats = {}  # the run's now: the next begin sets new sinks
        attributes = {**self._ranks, **run_name(state.ref()), sc.ATTR_PHASE: sc.PHASE_PREDICT}
        start = wall(quiet.start)
        keep_after_ns = self._tables.min_ns
        root = self._tracer.start_deferred_root(sc.PHASE_PREDICT, attributes, start, keep_after_ns)
        if root is None:  # a processor that sees span starts came meanwhile: a traced run's root
            root = self._tracer.start_span(sc.PHASE_PREDICT, Context(), attributes, start)
            run.span_limit = run.max_spans = self._max_spans
            self._telemetry.announce(root)
        run.deferred = root if isinstance(root, DeferredRoot) else None
        predict = Phase(sc.PHASE_PREDICT, root, None, quiet.start, ())
        predict.covered = quiet.batch_ns
        state.stack.append(predict)
        batch_path = predict.child(sc.PHASE_PREDICT_BATCH)
        if quiet.batches:
            run.phases[batch_path] = [quiet.batches, quiet.batch_ns]
        if quiet.batch_start is not None:
            batch = Phase(sc.PHASE_PREDICT_BATCH, None, predict.context, quiet.batch_start, batch_path)
            state.stack.append(batch)
        state.context = state.innermost()
