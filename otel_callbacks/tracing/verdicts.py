"""What bounds a training, in words: a verdict per epoch and per run, from times the tracker keeps.

An epoch's time goes to its training loop, whose batches compute and whose waits are for the
dataloader, to callbacks, to its validation and to its checkpoint. The training is input-bound where
the waits are more than ``Settings.input_bound`` of the loop; bound by callbacks, validation or
checkpointing where they take more than ``Settings.bound_share`` of the epoch; of the causes past
their bound, the one with the largest share of the epoch is the verdict, compute where none is.
Epochs are judged as they end (their callbacks' lists drained then: read at epoch ends, never on a
batch's path), the run from its table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import semconv as sc
from ..telemetry.histograms import NO_CONTEXT

if TYPE_CHECKING:
    from .engines import EngineState, Phase
    from .report import Report
    from .runs import Run

_CAUSES = (sc.BOUND_INPUT, sc.BOUND_COMPUTE, sc.BOUND_CALLBACKS, sc.BOUND_VALIDATION, sc.BOUND_CHECKPOINT)


@dataclass(frozen=True)
class Times:
    """Where a training's epochs spent their time, in ns (totals, or one epoch's: :meth:`since`)."""

    epochs: int
    batches: int
    waits: int
    validation: int
    checkpoint: int
    callbacks: dict[str, int] = field(default_factory=dict)  # by "callback on event"

    @classmethod
    def of(
        cls,
        phases: dict[tuple[str, ...], list[int]],
        callbacks: dict[tuple[str, str], Any],
        run_ns: int | None = None,
    ) -> Times:
        """The totals of a run so far: its epochs' (``run_ns`` None), or the whole training's."""

        def total(*path: str) -> int:
            return phases.get(path, (0, 0))[1]

        validation = total(sc.PHASE_EPOCH, sc.PHASE_VAL)
        if run_ns is not None:  # the whole training: its final evaluation validates too
            validation += total(sc.PHASE_FINAL_EVAL, sc.PHASE_VAL)
        return cls(
            total(sc.PHASE_EPOCH) if run_ns is None else run_ns,
            total(sc.PHASE_EPOCH, sc.PHASE_BATCH),
            total(sc.PHASE_EPOCH, sc.PHASE_DATALOADER),
            validation,
            total(sc.PHASE_EPOCH, sc.PHASE_CHECKPOINT),
            {f"{callback} on {event}": stats.total_ns for (event, callback), stats in callbacks.items()},
        )

    def since(self, before: Times) -> Times:
        callbacks = {k: v - before.callbacks.get(k, 0) for k, v in self.callbacks.items()}
        return Times(
            self.epochs - before.epochs,
            self.batches - before.batches,
            self.waits - before.waits,
            self.validation - before.validation,
            self.checkpoint - before.checkpoint,
            {k: v for k, v in callbacks.items() if v > 0},
        )


@dataclass(frozen=True)
class Verdict:
    bound_by: str  # a semconv.BOUND_*
    share: float  # its share of the time judged
    reason: str  # in words, with what to try
    shares: dict[str, float]  # every cause's share of the time judged

    def attributes(self) -> dict[str, Any]:
        return {
            sc.ATTR_BOUND_BY: self.bound_by,
            sc.ATTR_BOUND_SHARE: self.share,
            sc.ATTR_BOUND_REASON: self.reason,
        }


def judge(times: Times, input_bound: float, bound_share: float, of: str = "the epoch") -> Verdict | None:
    """The verdict on ``times`` (``of``: what they are the times of, in words); None where no training
    loop ran (a training that failed in its setup)."""
    epochs, loop = times.epochs, times.batches + times.waits
    if epochs <= 0 or loop <= 0:
        return None
    callbacks = sum(times.callbacks.values())
    shares = {
        sc.BOUND_INPUT: times.waits / epochs,
        sc.BOUND_COMPUTE: max(0, times.batches) / epochs,
        sc.BOUND_CALLBACKS: callbacks / epochs,
        sc.BOUND_VALIDATION: times.validation / epochs,
        sc.BOUND_CHECKPOINT: times.checkpoint / epochs,
    }
    wait_of_loop = times.waits / loop if loop > 0 else 0.0
    top = sorted(((k, v) for k, v in times.callbacks.items() if v >= epochs / 100), key=lambda kv: -kv[1])
    reasons = {
        sc.BOUND_INPUT: f"the dataloader wait is {wait_of_loop:.0%} of the training loop: raise workers=, "
        "use cache=ram or cache=disk, or move the dataset to local storage",
        sc.BOUND_CALLBACKS: f"callbacks take {shares[sc.BOUND_CALLBACKS]:.0%} of {of}: "
        + ", ".join(f"{name} {ns / epochs:.0%}" for name, ns in top[:3]),
        sc.BOUND_VALIDATION: f"validation takes {shares[sc.BOUND_VALIDATION]:.0%} of {of}: val=False "
        "validates only the final epoch, or use a smaller validation set",
        sc.BOUND_CHECKPOINT: f"saving checkpoints takes {shares[sc.BOUND_CHECKPOINT]:.0%} of {of}: "
        "write them to local storage (project= on a local disk); save=False saves none",
    }
    past = [cause for cause in reasons if cause != sc.BOUND_INPUT and shares[cause] > bound_share]
    if wait_of_loop > input_bound:
        past.append(sc.BOUND_INPUT)
    if not past:
        share = shares[sc.BOUND_COMPUTE]
        reason = f"the batches (forward, backward, optimizer step) take {share:.0%} of {of}"
        return Verdict(sc.BOUND_COMPUTE, share, reason, shares)
    cause = max(past, key=shares.__getitem__)
    return Verdict(cause, shares[cause], reasons[cause], shares)


class Verdicts:
    """Mixed into the phase machine: each training epoch judged as it ends, the run at its table."""

    _durations: Any
    _settings: Any
    _telemetry: Any

    def _mark_epoch(self, state: EngineState) -> None:
        """Where the epoch that opens starts: the run's totals now (its setup's callbacks drained, so
        that the first epoch does not count them)."""
        run = state.run
        try:
            if run is not None and run.mode == sc.MODE_TRAIN:
                run.epoch_marks = self._times(run, drain=True)
        except Exception as exc:  # the telemetry's failure never reaches the training
            self._telemetry.report_error(exc)

    def _judge_epoch(self, state: EngineState, phase: Phase) -> None:
        run = state.run
        if run is None or run.mode != sc.MODE_TRAIN or run.epoch_marks is None:
            return
        try:
            verdict = self._judge(self._times(run, drain=True).since(run.epoch_marks))
            if verdict is None:
                return
            if phase.span is not None:
                phase.span.set_attributes(verdict.attributes())
            health = self._telemetry.health
            for cause in _CAUSES:
                attributes = {sc.ATTR_MODE: sc.MODE_TRAIN, sc.ATTR_BOUND_BY: cause}
                health.time_share.set(verdict.shares[cause], attributes, context=NO_CONTEXT)
                health.bound.set(int(cause == verdict.bound_by), attributes, context=NO_CONTEXT)
        except Exception as exc:  # the telemetry's failure never reaches the training
            self._telemetry.report_error(exc)

    def _judge_run(self, run: Run, report: Report) -> Verdict | None:
        """The run's verdict, from its table's totals (every list drained by then)."""
        if run.mode != sc.MODE_TRAIN:
            return None
        try:
            return self._judge(Times.of(report.phases, report.callbacks, report.run_ns), "the training")
        except Exception as exc:  # the table still shows, without it
            self._telemetry.report_error(exc)
            return None

    def _judge(self, times: Times, of: str = "the epoch") -> Verdict | None:
        return judge(times, self._settings.input_bound, self._settings.bound_share, of)

    def _times(self, run: Run, drain: bool = False) -> Times:
        if drain:  # the callbacks' durations so far into their statistics (a collection would, later)
            for values in list(run.buffers.values()):
                self._durations.fold(values)
        return Times.of(run.phases, run.callbacks)
