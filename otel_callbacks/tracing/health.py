"""A training's health as metrics: its results, progress, images trained and GPU memory.

Recorded where an epoch (or a validation of its own) ends, and, for the images counter, brought up
to date at each metric collection from the batch index the tracker keeps anyway: ``rate()`` of the
counter is images per second within long epochs too, and no batch does any work for it.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import semconv as sc
from ..telemetry.histograms import NO_CONTEXT
from .clock import perf_ns
from .results import epoch_results, val_results

if TYPE_CHECKING:
    from ..telemetry.providers import Telemetry
    from .engines import EngineState, Phase

_TRAIN = {sc.ATTR_MODE: sc.MODE_TRAIN}
# Phases whose results Ultralytics' engine holds when they end.
_RESULTS = {sc.PHASE_EPOCH: epoch_results, sc.PHASE_VAL: val_results}


@dataclass
class _Images:
    done: int = 0  # in ended epoch attempts (a retried epoch's images were trained too)
    reported: int = 0
    epoch_size: int | None = None  # the open epoch's dataset length; None: no epoch open


class Health:
    """Mixed into the phase machine; uses its tracker's telemetry."""

    _telemetry: Telemetry
    states: dict[int, EngineState]

    def _start_health(self) -> None:
        self._images: weakref.WeakKeyDictionary[EngineState, _Images] = weakref.WeakKeyDictionary()
        self._images_lock = threading.RLock()  # the collector (_forget) or SIGTERM may come back in
        self._progress_reported = False
        hook = weakref.WeakMethod(self._at_collection)  # a scratch tracker (calibration) dies
        self._telemetry.on_collect(lambda: (method := hook()) is not None and method())

    def _at_collection(self) -> None:
        for report in (self._bring_images_up_to_date, self._report_progress):
            try:
                report()
            except Exception as exc:  # the other still reports
                self._telemetry.report_error(exc)

    def _report_progress(self) -> None:
        """Seconds since an open training last moved (the stalest, where several are open), its
        validations included; 0 once none is, so that an alert on it resolves when the training ends.
        A training counts once set up: its setup (dataset caching) fires no hooks."""
        moved: dict[int, int] = {}
        for state in list(self.states.values()):
            trainer = state.parent or state  # a validation moves its training
            if _training(trainer):
                moved[id(trainer)] = max(moved.get(id(trainer), 0), _last_moved(state))
        if not moved and not self._progress_reported:
            return
        self._progress_reported = bool(moved)
        since = (perf_ns() - min(moved.values())) / 1e9 if moved else 0.0
        self._telemetry.health.since_progress.set(since, _TRAIN, context=NO_CONTEXT)

    def _health_epoch_start(self, state: EngineState) -> None:
        trainer = state.ref()
        try:
            size = len(trainer.train_loader.dataset)
        except Exception:  # no dataset length: batches times the batch size
            size = None
        with self._images_lock:  # the last attempt counted (its phase ended): the new one from 0
            state.batch_index = -1
            images = self._images.setdefault(state, _Images())
            images.epoch_size = size if size is not None else 1 << 62

    def _phase_results(
        self, state: EngineState, phase: Phase, error: str | None, retry: str | None
    ) -> dict[str, float] | None:
        """An ending epoch's or validation's results (for its span too), recorded as metrics for an
        epoch and for a validation of its own: also an epoch that Ultralytics redoes (its NaN loss
        is what an alert looks for), not one that ended its run with an error."""
        read = _RESULTS.get(phase.name)
        if read is None:
            return None
        results = read(state.ref())
        if phase.name == sc.PHASE_EPOCH and state.run is not None:
            state.run.epoch_ended()
        try:
            self._record_health(state, phase, results, error, retry)
        except Exception as exc:  # the phase still ends, with its span
            self._telemetry.report_error(exc)
        return results

    def _record_health(
        self,
        state: EngineState,
        phase: Phase,
        results: dict[str, float],
        error: str | None,
        retry: str | None,
    ) -> None:
        health = self._telemetry.health
        if phase.name == sc.PHASE_VAL:
            if state.parent is None and error is None:
                health.record_results(results, sc.MODE_VAL)
            return
        with self._images_lock:
            images = self._images.get(state)
            if images is not None and images.epoch_size is not None:
                images.done += _epoch_images(state, images.epoch_size)
                images.epoch_size = None
                self._report_images(images)
        if error is None:
            health.record_results(results, sc.MODE_TRAIN)
        if error is None and retry is None:
            if state.epoch is not None:
                planned = state.run.planned_epochs if state.run is not None else None
                health.record_progress(state.epoch, planned)
            health.record_gpu_memory(getattr(state.ref(), "device", None))

    def _bring_images_up_to_date(self) -> None:
        with self._images_lock:
            for state, images in list(self._images.items()):
                size = images.epoch_size  # the open epoch's batches so far count
                self._report_images(images, _epoch_images(state, size) if size is not None else 0)

    def _report_images(self, images: _Images, live: int = 0) -> None:
        total = images.done + live
        if total > images.reported:  # a counter: never less than it said
            self._telemetry.health.images.add(total - images.reported, _TRAIN, context=NO_CONTEXT)
            images.reported = total


def _training(state: EngineState) -> bool:
    run = state.run
    training = run is not None and run.mode == sc.MODE_TRAIN and not run.implicit and state.parent is None
    return training and not any(phase.name == sc.PHASE_SETUP for phase in list(state.stack))


def _last_moved(state: EngineState) -> int:
    """When an engine last moved: its last firing's end, its last unsampled batch's start (the
    lane's), its validator's last end, or its run's start."""
    lane, first = state.armed, state.stack[:1]  # (a copy: the engine's thread may pop it meanwhile)
    lane_start = lane.idle.start if lane is not None else 0
    return max(state.last_end, state.val_end, lane_start, first[0].start if first else 0)


def _epoch_images(state: EngineState, epoch_size: int) -> int:
    """The open epoch's images: its started batches times the batch size it started with."""
    batches = state.batch_index + 1
    batch = state.epoch_batch if isinstance(state.epoch_batch, int) else 0
    return max(0, min(batches * batch, epoch_size))
