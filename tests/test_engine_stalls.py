"""An engine stuck between two firings (tracing/engine_stalls.py): a batch or a dataloader wait past
its loop's bound, a phase with no hook past its own, gets stall spans with every thread's stack while
it lasts; a loop too young to know its batch times, a short setup, a trainer whose validator moves get
none; the bounds are validated."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace

import pytest
from opentelemetry.trace import StatusCode

from otel_callbacks import Settings
from otel_callbacks import semconv as sc
from otel_callbacks.config import SettingsError
from tests.e2e.backends import wait_until
from tests.engines import DetectionPredictor, DetectionTrainer, DetectionValidator, run_val
from tests.test_watchdog import _watchdog_interval_restored, stalls  # noqa: F401 (a fixture)

BOUNDED = Settings(
    default_hook_spans=True, watchdog_interval=0.02, slow_threshold=30, stall_min=0.2, stall_phase=0.6
)
ALL_SAMPLED = replace(BOUNDED, batch_spans_first=100)  # every batch on the generic path
BATCHES = 8


class Stuck:
    """A training in a thread of its own that stops ``where`` (``setup``, ``dataloader`` or ``batch``,
    before or inside its batch at ``index``) until released; then ends as usual."""

    def __init__(self, where: str, index: int = BATCHES - 1, validations: int = 0) -> None:
        self.release = threading.Event()
        self.trainer = DetectionTrainer()
        self.thread = threading.Thread(target=self._train, args=(where, index, validations), name="trainer")
        self.thread.start()

    def _train(self, where: str, index: int, validations: int) -> None:
        trainer = self.trainer
        trainer.run_callbacks("on_pretrain_routine_start")
        if where == "setup":
            self.release.wait(30)  # caching a dataset: no hook fires
        trainer.run_callbacks("on_pretrain_routine_end")
        trainer.run_callbacks("on_train_start")
        trainer.run_callbacks("on_train_epoch_start")
        for batch in range(BATCHES):
            if (where, batch) == ("dataloader", index):
                self.release.wait(30)  # a worker that never hands over its batch
            trainer.run_callbacks("on_train_batch_start")
            if (where, batch) == ("batch", index):
                self.release.wait(30)  # a forward pass stuck in a collective
            trainer.run_callbacks("on_train_batch_end")
        trainer.run_callbacks("on_train_epoch_end")
        validator = DetectionValidator(trainer.callbacks)
        for _ in range(validations):  # val batches a tenth of a second apart, for a second
            validator.run_callbacks("on_val_start")
            for _ in range(10):
                self.release.wait(0.1)
                validator.run_callbacks("on_val_batch_start")
                validator.run_callbacks("on_val_batch_end")
            validator.run_callbacks("on_val_end")
        run_val(validator)
        trainer.run_callbacks("on_fit_epoch_end")
        trainer.run_callbacks("on_train_end")
        trainer.run_callbacks("teardown")

    def end(self) -> None:
        self.release.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


def spans_named(recorded, name: str) -> list:
    return [s for s in recorded.spans() if s.name == name]


@pytest.mark.parametrize(
    ("settings", "where", "parent"),
    [
        (BOUNDED, "dataloader", sc.PHASE_EPOCH),
        (BOUNDED, "batch", sc.PHASE_EPOCH),  # an unsampled batch: no span of its own
        (ALL_SAMPLED, "dataloader", sc.PHASE_EPOCH),
        (ALL_SAMPLED, "batch", sc.PHASE_BATCH),
    ],
    indirect=["settings"],
)
def test_a_stuck_batch_or_dataloader_gets_a_stall_span_while_it_is_stuck(recorded, where, parent, caplog):
    with caplog.at_level(logging.WARNING, logger=sc.LOGGER_NAME):
        stuck = Stuck(where)
        try:
            (stall, *_) = wait_until(lambda: stalls(recorded), 10, "a stall span")
            assert stuck.thread.is_alive(), "while it is stuck"
        finally:
            stuck.end()
    attributes = stall.attributes
    assert attributes[sc.ATTR_PHASE] == where and attributes[sc.ATTR_MODE] == sc.MODE_TRAIN
    assert (attributes[sc.ATTR_EPOCH], attributes[sc.ATTR_BATCH_INDEX]) == (1, BATCHES - 1)
    # The loop's batches take microseconds: ten times their p99 is less than the floor.
    assert attributes[sc.ATTR_STALL_BOUND] == 0.2 < attributes[sc.ATTR_STALL_DURATION]
    assert sc.ATTR_THREAD_NAME not in attributes, "no callback runs: the stuck thread is not known"
    assert "in _train" in attributes[sc.ATTR_STALL_STACKS]
    (phase,) = [s for s in recorded.spans() if s.context.span_id == stall.parent.span_id]
    assert phase.name == parent
    assert {s.attributes[sc.ATTR_PHASE] for s in stalls(recorded)} == {where}, "nothing else stalled"
    warned = [r.getMessage() for r in caplog.records if "no hook firing" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith(f"otel_callbacks: train {where} has run for")
    (train,) = spans_named(recorded, sc.PHASE_TRAIN)
    assert train.status.status_code is StatusCode.UNSET, "the training ended as ever"


@pytest.mark.parametrize("settings", [BOUNDED], indirect=True)
def test_a_wait_in_a_loop_too_young_for_its_batch_times_is_held_to_the_phase_bound(recorded):
    stuck = Stuck("dataloader", index=2)  # two batch times: fewer than Limits.batch_min
    try:
        threading.Event().wait(0.4)  # past stall_min, within stall_phase
        assert stalls(recorded) == []
        (stall, *_) = wait_until(lambda: stalls(recorded), 10, "a stall span past the phase bound")
    finally:
        stuck.end()
    assert stall.attributes[sc.ATTR_STALL_BOUND] == 0.6
    assert stall.attributes[sc.ATTR_BATCH_INDEX] == 2


@pytest.mark.parametrize("settings", [BOUNDED], indirect=True)
def test_a_setup_with_no_hook_stalls_only_past_the_phase_bound(recorded):
    stuck = Stuck("setup")
    try:
        threading.Event().wait(0.4)
        assert stalls(recorded) == [], "a setup caching its dataset is no stall within its bound"
        (stall, *_) = wait_until(lambda: stalls(recorded), 10, "a stall span")
    finally:
        stuck.end()
    assert stall.attributes[sc.ATTR_PHASE] == sc.PHASE_SETUP
    assert sc.ATTR_BATCH_INDEX not in stall.attributes


@pytest.mark.parametrize("settings", [BOUNDED], indirect=True)
def test_a_predict_loop_is_held_to_the_phase_bound(recorded):
    predictor, release = DetectionPredictor(), threading.Event()

    def stream():  # model.predict(stream=True), its caller working on the last result
        predictor.run_callbacks("on_predict_start")
        for _ in range(BATCHES):
            for event in ("on_predict_batch_start", "on_predict_postprocess_end", "on_predict_batch_end"):
                predictor.run_callbacks(event)
        release.wait(30)
        predictor.run_callbacks("on_predict_end")

    thread = threading.Thread(target=stream)
    thread.start()
    try:
        threading.Event().wait(0.4)  # past stall_min, within stall_phase
        assert stalls(recorded) == []
        (stall, *_) = wait_until(lambda: stalls(recorded), 10, "a stall span past the phase bound")
    finally:
        release.set()
        thread.join(30)
    assert stall.attributes[sc.ATTR_STALL_BOUND] == 0.6
    assert stall.attributes[sc.ATTR_MODE] == sc.MODE_PREDICT


@pytest.mark.parametrize("settings", [BOUNDED], indirect=True)
def test_a_trainer_moves_while_its_validator_does(recorded):
    stuck = Stuck("none", validations=1)  # a second of validation, past the trainer's phase bound
    stuck.thread.join(30)
    assert not stuck.thread.is_alive()
    assert spans_named(recorded, sc.PHASE_VAL), "it validated"
    assert stalls(recorded) == []


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("OTEL_CALLBACKS_STALL_FACTOR", "0.5", "a finite number >= 1"),
        ("OTEL_CALLBACKS_STALL_FACTOR", "many", "a finite number >= 1"),
        ("OTEL_CALLBACKS_STALL_MIN", "0", "a finite number of seconds > 0"),
        ("OTEL_CALLBACKS_STALL_PHASE", "inf", "a finite number of seconds > 0"),
    ],
)
def test_the_bounds_are_validated(name, raw, expected):
    with pytest.raises(SettingsError, match=rf"{name}={raw!r} is not accepted; expected {expected}"):
        Settings.from_env({name: raw})
    assert (
        Settings.from_env({name: "12"}).__getattribute__(name.removeprefix("OTEL_CALLBACKS_").lower()) == 12
    )
