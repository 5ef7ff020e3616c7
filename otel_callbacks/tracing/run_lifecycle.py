"""A run's start and end: its bookkeeping made and finished, its table shown, its phase durations
recorded; and how an engine's open phases end out of turn (a crash, process exit)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import semconv as sc
from ..telemetry import providers
from .clock import perf_ns, sync_clock
from .runs import Run

if TYPE_CHECKING:
    from .engines import EngineState
    from .quiet_runs import QuietRun
    from .report import Report


class RunLifecycle:
    """The tracker's run methods (a mixin of ``PhaseTracker``, whose state they use)."""

    def _phase_buffer(self, name: str, mode: str) -> list[int]:
        buffer = self._phase_buffers.get((name, mode))
        if buffer is None:
            attributes = {sc.ATTR_PHASE: name, sc.ATTR_MODE: mode}
            buffer = self._phase_buffers[name, mode] = self._telemetry.phase_duration.buffer(attributes)
        return buffer

    def _record_phase(self, state: EngineState, name: str, path: tuple[str, ...], elapsed_ns: int) -> None:
        run = state.run
        # A validation inside a training is val work: its phases go to the metrics as mode val.
        mode = sc.MODE_VAL if state.parent is not None else run.mode if run is not None else sc.MODE_TRAIN
        self._phase_time(self._phase_buffer(name, mode), elapsed_ns)
        if run is not None and path:  # the run's own phase is its total, not a line of the table
            run.add_phase(path, elapsed_ns)

    def _phase_time(self, buffer: list[int], elapsed_ns: int) -> None:
        buffer.append(elapsed_ns)
        if len(buffer) >= self._limits.buffer_limit:  # no reader collected for long: bound memory
            self._telemetry.phase_duration.fold(buffer)

    def _new_run(self, state: EngineState, mode: str, reason: str) -> None:
        if state.stack or state.run is not None:
            self._abort(state, reason)
        if not any(other.run is not None and not other.run.implicit for other in self.states.values()):
            sync_clock()  # between runs only: an open run's spans stay on its clock
        state.run = Run(mode, self._durations, self._limits, self._max_spans)

    def _abort(self, state: EngineState, reason: str | None, end: int | None = None) -> None:
        """End whatever is open with status ERROR and the reason (normally without one), at ``end``
        (by default the end of the engine's last firing); finish the run."""
        try:
            self._quiesce(state)
            end = end or state.last_end or perf_ns()
            while state.stack:
                self._finish(state, state.stack.pop(), end, reason)
            if state.run is not None and state.parent is None:
                self._finish_run(state, end)
            state.run = None
        except Exception as exc:
            self._telemetry.report_error(exc)

    def _quiesce(self, state: EngineState) -> None:
        """Before phases end out of turn: the lane disarmed and worked out, and a lane batch whose
        end event fired counted as finished."""
        if state.quiet is not None:
            self.materialize(state)
        if state.armed is not None:
            self._disarm(state)
        if state.pending is not None and state.in_lane_batch():
            self._close_pending(state, state.last_end)  # its end event fired
        state.pending = None
        self._settle(state)

    def _finish_run(self, state: EngineState, end: int) -> Report | None:
        self._settle(state)
        run, state.run, state.armed = state.run, None, None
        state.batch_times.clear()
        state.batch_slow_ns = state.slow_ns
        if run is None:
            return None
        for member in run.members:  # a validator still inside the run (the training raised)
            other = member()
            if other is not None and other is not state:
                self._abort(other, "the training ended during this validation")
        if run.implicit:  # no table: hand its lists back, skip measuring the overhead
            run.finish(end, 0.0)
            return None
        self._probe_once(run)
        report = self.last_report = run.finish(end, self.fast_call_ns)
        self.last_overhead_ns = report.overhead_ns
        report.verdict = self._judge_run(run, report)
        try:
            self._tables.show(report)
        except Exception as exc:  # stdout closed: the root still gets the overhead
            self._telemetry.report_error(exc)
        return report

    def _probe_once(self, run: Run | QuietRun) -> None:
        """Measure the unsampled call's cost at the first run's end, outside its overhead. Only
        while active (a shutdown ends runs first): else the probe's call would configure anew."""
        if self.fast_call_ns is None and self._calibrate is not None and self._telemetry is providers.active:
            probed = perf_ns()
            self.fast_call_ns, self.inner_call_ns = self._calibrate(self._telemetry)
            if run.closing_since is not None:  # the probe is the process's, not this run's overhead
                run.closing_since += perf_ns() - probed
