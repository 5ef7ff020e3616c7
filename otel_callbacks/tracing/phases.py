"""The phase state machine: which hook opens and which closes each phase of the trace tree.

Read off Ultralytics 8.4's engines (DESIGN.md section 2). Each firing's event moves the engine's
phase stack; a phase ends after its end event's callbacks (they are its children). Phase spans are
never attached to the context: callback spans name their parent explicitly, so nothing the user's
program does later can become a child of a training span.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from .. import semconv as sc
from ..telemetry import providers
from .batches import WAIT_AFTER, UnsampledBatches
from .clock import wall
from .engines import RUN_PHASES, EngineState, Phase
from .gaps import Gaps
from .health import Health
from .outcomes import Outcomes
from .predict_runs import PredictRuns
from .results import as_attributes, run_attributes, run_name
from .resume import leave_mark, resume_epoch, resumed_run
from .verdicts import Verdicts

if TYPE_CHECKING:
    from opentelemetry.context import Context


# Phases whose spans follow their batch's sampling.
_SAMPLED_PHASES = (sc.PHASE_BATCH, sc.PHASE_VAL_BATCH, sc.PHASE_PREDICT_BATCH)
# Long phases: the embedded file gets a record of each as it opens (telemetry/otlp_file.py).
_ANNOUNCED = RUN_PHASES | {sc.PHASE_SETUP, sc.PHASE_EPOCH, sc.PHASE_FINAL_EVAL}
_RUN_ROOTS = (sc.PHASE_TRAIN, sc.PHASE_PREDICT, sc.PHASE_EXPORT)  # ERROR when anything in the run failed


class PhaseMachine(UnsampledBatches, Gaps, Outcomes, Health, PredictRuns, Verdicts):
    """Opens and closes phases on an engine's stack; the tracker (a subclass) adds engines, firings
    and runs. Handlers are keyed by the event whose firing they react to."""

    def _handlers(self) -> dict[str, Any]:
        return {
            "on_pretrain_routine_start": self._train_start,
            "on_pretrain_routine_end": self._setup_end,
            "on_train_epoch_start": self._epoch_start,
            "on_train_batch_start": self._batch_start,
            "on_train_batch_end": lambda s, now: self._end(s, sc.PHASE_BATCH),
            "on_fit_epoch_end": self._fit_epoch_end,
            "teardown": self._teardown,
            "on_val_start": self._val_start,
            "on_val_batch_start": self._val_batch_start,
            "on_val_batch_end": lambda s, now: self._end(s, sc.PHASE_VAL_BATCH),
            "on_val_end": self._val_end,
            "on_predict_start": self._predict_start,
            "on_predict_batch_start": self._predict_batch_start,
            "on_predict_batch_end": lambda s, now: self._end(s, sc.PHASE_PREDICT_BATCH),
            "on_predict_end": lambda s, now: self._end(s, sc.PHASE_PREDICT),
            "on_export_start": self._export_start,
            "on_export_end": lambda s, now: self._end(s, sc.PHASE_EXPORT),
            **self._version_handlers(),
        }

    # Opening and closing ------------------------------------------------------------------

    def _open(
        self, state: EngineState, name: str, now: int, parent: Context | None, links=(), **attributes: Any
    ) -> None:
        span = None
        if state.sampled or name not in _SAMPLED_PHASES:
            attributes[sc.ATTR_PHASE] = name
            span = self._tracer.start_span(name, parent, attributes, wall(now), links)
            if state.run is not None:
                state.run.spans += 1
            if name in _ANNOUNCED:
                self._telemetry.announce(span)
        state.stack.append(Phase(name, span, parent, now, state.path_of(name)))

    def _end(self, state: EngineState, name: str) -> None:
        if state.stack and state.stack[-1].name == name:
            state.pending = name
            return
        for phase in state.stack:
            if phase.name == name:
                state.pending = name
                return

    def _close_pending(self, state: EngineState, end: int) -> None:
        name, state.pending = state.pending, None
        if name == sc.PHASE_BATCH and state.in_lane_batch():
            self._unsampled_batch_end(state, state.batch_cache, end)
            return
        while state.stack:
            phase = state.stack.pop()
            if phase.name == name:
                self._finish(state, phase, end)
                break
            self._finish(state, phase, end, f"{phase.name} never reached its end event before {name} ended")
        if state.parent is not None and name == sc.PHASE_VAL:
            state.parent.val_end = end
            state.run = None  # the validator's next val may belong to another epoch or run

    def _finish(
        self, state: EngineState, phase: Phase, end: int, error: str | None = None, retry: str | None = None
    ) -> None:
        """End a phase: ERROR with ``error`` (its run failed) or ``retry`` (Ultralytics retries it)."""
        end = max(end, phase.start)  # aborted after the last firing that stamped an end
        elapsed = end - phase.start
        if phase.name != sc.PHASE_TRAIN or error is None:
            self._record_phase(state, phase.name, phase.path, elapsed)
        parent = state.top_phase()  # the phase was popped: what holds it
        if parent is not None:
            parent.covered += elapsed
        if phase.name in (sc.PHASE_BATCH, sc.PHASE_PREDICT_BATCH):
            self._batch_time(state, elapsed)
            if phase.lane is not None:
                self._cut_short(phase)
        run = state.run
        if error is not None and run is not None:
            run.fail(error)
        results = self._phase_results(state, phase, error, retry)  # as metrics too
        if phase.name == sc.PHASE_EPOCH and error is None and retry is None:
            self._judge_epoch(state, phase)
        end_time, report = wall(end), None  # the time before the table, whose probe may move the clock
        if not state.stack and state.parent is None and phase.name in RUN_PHASES:
            try:  # the run's table before its root ends, for the overhead; the root ends regardless
                report = self._finish_run(state, end)
            except Exception as exc:
                self._telemetry.report_error(exc)
            except BaseException:  # Ctrl-C while the table is made: the root ends, the Ctrl-C goes on
                if phase.span is not None:
                    phase.span.end(end_time=end_time)
                raise
        span = phase.span
        if span is None:
            return
        if report is not None and report.overhead_ns is not None:
            span.set_attribute(sc.ATTR_OVERHEAD, report.overhead_ns / 1e9)
        if report is not None and report.verdict is not None:
            span.set_attributes(report.verdict.attributes())
        if phase.covered:
            span.set_attribute(sc.ATTR_UNTRACED, max(0, elapsed - phase.covered) / 1e9)
        if error is None and results:
            span.set_attributes(as_attributes(results))
        if error is not None or retry is not None:
            span.set_status(Status(StatusCode.ERROR, error or retry))
        elif run is not None and run.failures and not run.raised and phase.name in _RUN_ROOTS:
            span.set_status(Status(StatusCode.ERROR, run.failures[0]))
        span.end(end_time=end_time)

    def _root_parent(self) -> Context | None:
        """A run's root: a child of the current span, else of a launcher's TRACEPARENT (DDP, a job)."""
        if trace.get_current_span().get_span_context().is_valid:
            return None
        return self._environment_context

    def _abort_top(self, state: EngineState, now: int, reason: str) -> None:
        self._finish(state, state.stack.pop(), state.last_end or now, reason)

    # Opening events -----------------------------------------------------------------------

    def _train_start(self, state: EngineState, now: int, setup: bool = True) -> None:
        self._new_run(state, sc.MODE_TRAIN, "a new training started on the same trainer")
        trainer = state.ref()
        callbacks = getattr(trainer, "callbacks", None)
        if callbacks is not None:
            with self._lock:
                self._trainers[id(callbacks)] = weakref.ref(state)
        attributes = run_attributes(trainer)
        state.run.planned_epochs = attributes.get(sc.RUN_ATTRIBUTES["epochs"])
        state.run.outer_exception = self.propagating()  # handled around model.train(): not its crash
        links, resumed = resumed_run(trainer)
        attributes.update(resumed)
        self._open(state, sc.PHASE_TRAIN, now, self._root_parent(), links, **attributes, **self._ranks)
        if setup:
            self._open(state, sc.PHASE_SETUP, now, state.innermost())
        if self._rank == 0:  # last: a file error is reported by the caller, the phases are open
            leave_mark(trainer, state.stack[0].span)

    def _setup_end(self, state: EngineState, now: int) -> None:
        """A DDP worker of rank 1 and up starts here: Ultralytics fires on_pretrain_routine_start on
        rank 0 only. Its run starts now, with no setup phase (its setup went unobserved)."""
        if any(phase.name == sc.PHASE_TRAIN for phase in state.stack):
            self._end(state, sc.PHASE_SETUP)
            if state.stack[0].span is not None:
                state.stack[0].span.set_attributes(resume_epoch(state.ref()))
        else:
            self._train_start(state, now, setup=False)

    def _epoch_start(self, state: EngineState, now: int) -> None:
        providers.arm_sigterm()  # chains a SIGTERM handler the application set since the last epoch
        epoch = state.epoch
        open_epoch = next((phase for phase in state.stack if phase.name == sc.PHASE_EPOCH), None)
        if open_epoch is not None and epoch is not None and open_epoch.epoch == epoch:
            self._restart_epoch(state, now)  # Ultralytics' OOM retry or NaN recovery (outcomes.py)
        elif state.top(sc.PHASE_EPOCH):
            self._abort_top(state, now, "epoch did not end before the next one started")
        state.epoch_batch = getattr(state.ref(), "batch_size", None)
        self._health_epoch_start(state)
        self._mark_epoch(state)
        if state.run is not None:  # this epoch's share of the span budget, its own span included
            state.run.plan_epoch(epoch)
        attributes = {sc.ATTR_EPOCH: epoch} if epoch is not None else {}
        self._open(state, sc.PHASE_EPOCH, now, state.innermost(), **attributes)
        state.stack[-1].epoch = epoch

    def _batch_start(self, state: EngineState, now: int) -> None:
        if state.top(sc.PHASE_BATCH):  # a batch whose end event never fired
            self._abort_top(state, now, "batch did not end before the next one started")
        if state.previous in WAIT_AFTER and state.last_end:
            # Between the previous batch's last callback and this batch: waiting for the dataloader.
            self._dataloader_wait(state, now)
        self._open(state, sc.PHASE_BATCH, now, state.innermost(), **self._batch_attributes(state))

    def _dataloader_wait(self, state: EngineState, now: int) -> None:
        attributes = self._batch_attributes(state)
        self._closed_phase(
            state, sc.PHASE_DATALOADER, state.last_end, now, state.top_phase(), state.sampled, **attributes
        )

    def _batch_attributes(self, state: EngineState) -> dict[str, Any]:
        epoch = state.epoch
        attributes = {sc.ATTR_BATCH_INDEX: state.batch_index}
        if epoch is not None:
            attributes[sc.ATTR_EPOCH] = epoch
        return attributes

    def _val_batch_start(self, state: EngineState, now: int) -> None:
        if state.top(sc.PHASE_VAL_BATCH):
            self._abort_top(state, now, "val batch did not end before the next one started")
        if state.previous in ("on_val_start", "on_val_batch_end") and state.last_end:
            self._dataloader_wait(state, now)
        self._open(state, sc.PHASE_VAL_BATCH, now, state.innermost(), **self._batch_attributes(state))

    def _val_end(self, state: EngineState, now: int) -> None:
        if state.previous == "on_val_batch_end" and state.last_end and state.top(sc.PHASE_VAL):
            self._gap(state, sc.PHASE_VAL_METRICS, state.last_end, now, state.stack[-1])
        self._end(state, sc.PHASE_VAL)

    def _teardown(self, state: EngineState, now: int) -> None:
        """Ultralytics 8.4's ``finally``: a propagating exception is the crash; open phases never ended."""
        if not any(phase.name == sc.PHASE_TRAIN for phase in state.stack):
            return
        error = self.propagating()
        if error is not None and state.run is not None and error is not state.run.outer_exception:
            self._crash(state, error, now)
        elif state.run is not None and not state.run.raised:
            self._training_end(state)
        while not state.top(sc.PHASE_TRAIN):
            phase = state.stack[-1]
            self._abort_top(state, now, f"{phase.name} never reached its end event before teardown")
        state.pending = sc.PHASE_TRAIN

    def _fit_epoch_end(self, state: EngineState, now: int) -> None:
        # DDP ranks above 0 run the validation but never fire on_val_end (Ultralytics fires it on
        # rank 0 only): their val ends with its last batch, before the epoch does.
        for validator in (member() for member in (state.run.members if state.run is not None else ())):
            if validator is not None and validator.top(sc.PHASE_VAL) and validator.pending is None:
                validator.pending = sc.PHASE_VAL
                self._close_pending(validator, validator.last_end or now)
        if state.top(sc.PHASE_FINAL_EVAL):
            state.pending = sc.PHASE_FINAL_EVAL
        elif state.top(sc.PHASE_EPOCH):
            state.pending = sc.PHASE_EPOCH

    def _val_start(self, state: EngineState, now: int) -> None:
        trainer = self._trainer_of(state.ref())
        if state.stack:
            self._abort(state, "a new validation started before on_val_end")
        if trainer is None or trainer.run is None:
            state.parent = None
            self._new_run(state, sc.MODE_VAL, "a new validation started before on_val_end")
            self._open(state, sc.PHASE_VAL, now, self._root_parent(), **self._ranks, **run_name(state.ref()))
            return
        state.parent, state.run = trainer, trainer.run
        trainer.run.members.append(weakref.ref(state))
        if trainer.top(sc.PHASE_EPOCH) and trainer.event == "on_train_epoch_end" and trainer.last_end:
            self._gap(trainer, sc.PHASE_CLEAR_MEMORY, trainer.last_end, now, trainer.stack[-1])
        if not trainer.top(sc.PHASE_EPOCH) and not trainer.top(sc.PHASE_FINAL_EVAL):
            # Validation after the last epoch: Ultralytics' final evaluation of best.pt, after it
            # stripped the optimizer from last.pt and best.pt.
            start = trainer.last_end or now
            self._open(trainer, sc.PHASE_FINAL_EVAL, start, trainer.innermost())
            trainer.context = trainer.innermost()
            if start < now:
                self._gap(trainer, sc.PHASE_STRIP_OPTIMIZER, start, now, trainer.stack[-1])
        state.batch_slow_ns = trainer.batch_slow_ns
        epoch = state.epoch
        attributes = {sc.ATTR_EPOCH: epoch} if epoch is not None else {}
        self._open(state, sc.PHASE_VAL, now, trainer.innermost(), **attributes)

    def _export_start(self, state: EngineState, now: int) -> None:
        reason = "a new export started before on_export_end (the previous one failed)"
        self._new_run(state, sc.MODE_EXPORT, reason)
        self._open(state, sc.PHASE_EXPORT, now, self._root_parent(), **self._ranks)
