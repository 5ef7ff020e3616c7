"""How a training ends other than by finishing its epochs: Ultralytics' own retries, early stops and
crashes. This is the one place that says which Ultralytics version does what (DESIGN.md section 2):

=====================  ===================================  =======================================
                       8.3.253                              8.4
=====================  ===================================  =======================================
out of memory in the   raises                               halves the batch (up to 3 times) and
first epoch                                                 fires ``on_train_epoch_start`` again
                                                            for the same epoch, no end events
non-finite loss after  reloads last.pt when the loss *and*  reloads last.pt when the loss *or* the
validation (not the    the fitness are bad (NaN, or 0 after fitness is bad; the same epoch starts
first epoch)           a better one); the same epoch        again, no end events
                       starts again, no end events
``teardown``           after a successful training only     in a ``finally``: after a crash too,
                                                            with the exception propagating
``time=``, patience,   break after ``on_fit_epoch_end``,    the same; ``trainer.stop`` also breaks
``trainer.stop``       then the final evaluation            between batches
events of its own      ``on_batch_end`` inside each batch   none
                       (a firing like any custom event's)
=====================  ===================================  =======================================

A restarted epoch is a retry, not a failure: its abandoned attempt ends ERROR with what happened and
what Ultralytics did, the run stays OK. A crash ends the run where the exception leaves
``model.train()``: seen at ``teardown`` in 8.4 (``sys.exc_info`` inside the ``finally``), and by the
adapter around ``BaseTrainer.train`` where no teardown fires (``ultralytics/boundaries.py``).
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Status, StatusCode

from .. import semconv as sc
from ..telemetry.histograms import NO_CONTEXT
from .clock import perf_ns, wall
from .engines import RUN_PHASES

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from .engines import EngineState
    from .runs import Run


def restart_reason(trainer: Any, batch_before: Any) -> tuple[str, str]:
    """Why the trainer started its current epoch again: (an ``sc.RESTART_*`` value, in words)."""
    epoch = getattr(trainer, "epoch", 0) + 1
    batch = getattr(trainer, "batch_size", None)
    if batch_before is not None and batch is not None and batch != batch_before:  # 8.4's OOM retry
        device = str(getattr(getattr(trainer, "device", None), "type", "") or "cuda").upper()
        message = f"{device} out of memory: batch {batch_before} -> {batch}, epoch {epoch} restarted"
        return sc.RESTART_OUT_OF_MEMORY, message
    if getattr(trainer, "nan_recovery_attempts", 0):
        what = "loss" if not _finite(getattr(trainer, "loss", None)) else "fitness"
        return sc.RESTART_NAN, f"{what} NaN/Inf: last.pt reloaded, epoch {epoch} redone"
    return sc.RESTART_OTHER, f"epoch {epoch} started again before it ended"


def stop_reason(trainer: Any, planned: Any) -> tuple[str, str] | None:
    """Why a training that finished normally stopped before its planned epochs, if it did."""
    completed = getattr(trainer, "epoch", -1) + 1
    args = getattr(trainer, "args", None)
    hours = getattr(args, "time", None)
    of = f"{completed} of {planned} epochs" if isinstance(planned, int) else f"{completed} epochs"
    if not getattr(trainer, "stop", False):
        return None
    if hours:
        return sc.STOP_TIME_LIMIT, f"time limit reached (time={hours} h): {of}"
    if isinstance(planned, int) and completed >= planned:
        return None
    stopper = getattr(trainer, "stopper", None)
    patience = getattr(stopper, "patience", None)
    best = getattr(stopper, "best_epoch", None)
    if isinstance(patience, (int, float)) and isinstance(best, int) and completed - best >= patience:
        return (
            sc.STOP_EARLY_STOPPING,
            f"early stopping: no better fitness in {completed - best} epochs since epoch {best} "
            f"(patience={patience}): {of}",
        )
    return sc.STOP_EXTERNAL, f"stopped by trainer.stop: {of}"


def clean_exit(error: BaseException) -> bool:
    """``sys.exit()`` or ``sys.exit(0)``: the program ends as it meant to, which is no failure. Ray
    Tune ends every trial this way."""
    return isinstance(error, SystemExit) and error.code in (None, 0)


def crash_message(error: BaseException) -> str:
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (KeyboardInterrupt)"
    if isinstance(error, SystemExit):  # sys.exit(), or Ray Tune ending a trial in tune.report
        return f"exited (SystemExit {error.code})"
    return f"{type(error).__qualname__}: {error}"


def _finite(value: Any) -> bool:
    try:
        return value is None or math.isfinite(float(value))
    except (TypeError, ValueError, RuntimeError):
        return True


class Outcomes:
    """Mixed into the phase machine; uses its tracker's telemetry and its ``_finish``."""

    _telemetry: Any

    def _version_handlers(self) -> dict[str, Any]:
        """The phase machine's handlers for what only some Ultralytics versions do."""
        return {"on_train_epoch_end": self._batch_loop_broken}

    def _batch_loop_broken(self, state: EngineState, now: int) -> None:
        """Ultralytics 8.3's time limit breaks the batch loop after a batch's optimizer step, before
        its on_train_batch_end: that batch ended where the loop did, and did not fail."""
        if state.top(sc.PHASE_BATCH):
            self._finish(state, state.stack.pop(), now)

    def raised(self, state: EngineState, callback_name: str, error: BaseException) -> None:
        """A callback raised: the phase it ran in and its run's root span are ERROR, the root with
        the exception and the callback's name (Ultralytics lets it leave ``model.train()``)."""
        if clean_exit(error):  # not a failure: the run's end says it stopped (_exited)
            return
        error_type = type(error).__qualname__
        status = Status(StatusCode.ERROR, crash_message(error))
        phase = state.top_phase()
        owner = state.parent or state
        root = owner.stack[0] if owner.stack else None
        for target in {id(p): p for p in (phase, root) if p is not None and p.span is not None}.values():
            target.span.set_status(status)
            target.span.set_attribute(sc.ATTR_ERROR_TYPE, error_type)
        if root is not None and root.span is not None:
            root.span.record_exception(error, attributes={sc.ATTR_CALLBACK: callback_name}, escaped=True)
        if state.run is not None:
            state.run.raised = True
            state.run.exception = error

    def _restart_epoch(self, state: EngineState, now: int) -> None:
        """The epoch open on the stack started again: its attempt ends where its last firing did,
        ERROR with the reason; the root gets an event, the restart counter one more."""
        kind, message = restart_reason(state.ref(), state.epoch_batch)
        end = max(state.last_end, state.val_end) or now
        while state.stack:
            phase = state.stack.pop()
            self._finish(state, phase, end, retry=message)
            if phase.name == sc.PHASE_EPOCH:
                break
        root = state.stack[0].span if state.stack else None
        attributes = {sc.ATTR_RESTART_REASON: kind, sc.ATTR_MESSAGE: message}
        if state.epoch is not None:
            attributes[sc.ATTR_EPOCH] = state.epoch
        if root is not None:
            root.add_event(sc.EVENT_EPOCH_RESTART, attributes, timestamp=wall(end))
        mode = state.run.mode if state.run is not None else sc.MODE_TRAIN
        self._telemetry.epoch_restarts.add(
            1, {sc.ATTR_RESTART_REASON: kind, sc.ATTR_MODE: mode}, context=NO_CONTEXT
        )

    def _training_end(self, state: EngineState) -> None:
        """At a normal teardown: the epochs completed and, for an early end, why, on the root."""
        root = state.stack[0].span if state.stack else None
        trainer = state.ref()
        if root is None or trainer is None:
            return
        root.set_attribute(sc.ATTR_EPOCHS_COMPLETED, getattr(trainer, "epoch", -1) + 1)
        stopped = stop_reason(trainer, state.run.planned_epochs)
        if stopped is not None:
            root.set_attribute(sc.ATTR_STOP_REASON, stopped[0])
            root.add_event(
                sc.EVENT_EARLY_STOP, {sc.ATTR_STOP_REASON: stopped[0], sc.ATTR_MESSAGE: stopped[1]}
            )

    def _crash(self, state: EngineState, error: BaseException, end: int | None = None) -> None:
        """An exception left the training: every open phase (its validators' too) ends ERROR with it
        now, the root records it; the train phase is left for ``teardown`` or the caller to close.
        A clean exit is no failure: the phases end where it left them, the root says it stopped."""
        run, epoch, end = state.run, state.epoch, end or perf_ns()
        exited, message = clean_exit(error), crash_message(error)
        event = state.previous if state.event == "teardown" else state.event  # 8.4 ends it at teardown
        failure, error_type = (None, None) if exited else (message, type(error).__qualname__)
        members = [member() for member in (run.members if run is not None else ())]
        for other in (m for m in members if m is not None and m is not state):
            self._end_with(other, end, failure, error_type, keep=0)
        self._end_with(state, end, failure, error_type, keep=1)
        root = state.stack[0].span if state.stack else None
        if root is None or run is None:
            return
        if exited:
            self._exited(root, run, epoch, event, message)
            return
        root.set_status(Status(StatusCode.ERROR, message))
        root.set_attribute(sc.ATTR_ERROR_TYPE, error_type)
        if run.exception is not error:  # a callback's was recorded when it raised
            root.record_exception(error, escaped=True)
        run.raised = True  # the root's status is set
        run.exception = error

    @staticmethod
    def _exited(root: Span, run: Run, epoch: int | None, event: str | None, message: str) -> None:
        """The root of a run a clean exit left: an early stop, saying where, with the epochs that
        reached their last hook (``on_fit_epoch_end``)."""
        planned = f" of {run.planned_epochs}" if isinstance(run.planned_epochs, int) else ""
        where = f"{event} of epoch {epoch}{planned}" if epoch is not None else str(event)
        if epoch is not None:
            root.set_attribute(sc.ATTR_EPOCHS_COMPLETED, epoch if event == "on_fit_epoch_end" else epoch - 1)
        root.set_attribute(sc.ATTR_STOP_REASON, sc.STOP_EXIT)
        message = f"{message} at {where}"
        root.add_event(sc.EVENT_EARLY_STOP, {sc.ATTR_STOP_REASON: sc.STOP_EXIT, sc.ATTR_MESSAGE: message})

    def _end_with(
        self, state: EngineState, end: int, message: str | None, error_type: str | None, keep: int
    ) -> None:
        """End the open phases above ``keep``: ERROR with ``message``, or normally without one."""
        self._quiesce(state)
        while len(state.stack) > keep:
            phase = state.stack.pop()
            if phase.span is not None and error_type is not None:
                phase.span.set_attribute(sc.ATTR_ERROR_TYPE, error_type)
            self._finish(state, phase, end, message)

    def crashed(self, engine: Any, error: BaseException) -> None:
        """The adapter's report of an exception leaving a run's boundary (``BaseTrainer.train``, an
        engine's ``__call__``): the run open on it ends ERROR naming it. A training's teardown (8.4)
        has closed it already; a validation inside a training is the training's to end."""
        state = self.states.get(id(engine))
        if state is not None and state.quiet is not None and state.ref() is engine:
            self.materialize(state)  # quiet_runs.py: the run's root, to end ERROR
        if state is None or state.ref() is not engine or not state.stack:
            return
        if state.stack[0].name not in RUN_PHASES or state.parent is not None:
            return
        try:
            end = perf_ns()  # the root too: it ends no earlier than the phases the crash ended
            self._crash(state, error, end)
            self._abort(state, None if clean_exit(error) else crash_message(error), end)
        except Exception as exc:
            self._telemetry.report_error(exc)

    @staticmethod
    def propagating() -> BaseException | None:
        """The exception leaving the code that fires the current event (inside a ``finally``)."""
        return sys.exc_info()[1]
