"""What bounds a training (tracing/verdicts.py): the rule on times, each cause crossing its bound; and
on synthetic trainings, each epoch's verdict on its span and in the metrics, the run's on its root and
in its table."""

from __future__ import annotations

import time

import pytest

from otel_callbacks import Settings
from otel_callbacks import semconv as sc
from otel_callbacks.config import SettingsError
from otel_callbacks.tracing.verdicts import Times, judge
from tests.engines import DetectionTrainer, run_train

MS = 1_000_000


def times(batches=60, waits=10, validation=10, checkpoint=5, callbacks=None, epochs=100) -> Times:
    return Times(epochs * MS, batches * MS, waits * MS, validation * MS, checkpoint * MS, callbacks or {})


@pytest.mark.parametrize(
    ("judged", "bound_by", "share", "says"),
    [
        (times(), sc.BOUND_COMPUTE, 0.6, "the batches (forward, backward, optimizer step) take 60% of"),
        # The wait's share of the loop decides: 30 of 100 ms is not past 0.3; 31 of 91 is.
        (times(batches=70, waits=30), sc.BOUND_COMPUTE, 0.7, "take 70%"),
        (times(batches=60, waits=31), sc.BOUND_INPUT, 0.31, "the dataloader wait is 34% of the training"),
        (times(callbacks={"upload on on_fit_epoch_end": 21 * MS, "log on on_train_batch_end": 1 * MS}),
         sc.BOUND_CALLBACKS, 0.22, "callbacks take 22% of the epoch: upload on on_fit_epoch_end 21%, log on"),
        (times(callbacks={"upload on on_fit_epoch_end": 20 * MS}), sc.BOUND_COMPUTE, 0.6, "60%"),
        (times(validation=21), sc.BOUND_VALIDATION, 0.21, "validation takes 21% of the epoch: val=False"),
        (times(checkpoint=21), sc.BOUND_CHECKPOINT, 0.21, "saving checkpoints takes 21% of the epoch"),
        # Two causes past their bounds: the larger share of the epoch wins.
        (times(batches=40, waits=25, validation=30), sc.BOUND_VALIDATION, 0.3, "validation takes 30%"),
        (times(batches=20, waits=40, validation=30), sc.BOUND_INPUT, 0.4, "wait is 67% of the training loop"),
    ],
)  # fmt: skip
def test_the_largest_cause_past_its_bound_is_the_verdict(judged, bound_by, share, says):
    verdict = judge(judged, input_bound=0.3, bound_share=0.2)
    assert (verdict.bound_by, round(verdict.share, 4)) == (bound_by, share)
    assert says in verdict.reason
    assert set(verdict.shares) == {
        sc.BOUND_INPUT, sc.BOUND_COMPUTE, sc.BOUND_CALLBACKS, sc.BOUND_VALIDATION, sc.BOUND_CHECKPOINT
    }  # fmt: skip


def test_no_training_loop_no_verdict():
    assert judge(times(epochs=0), 0.3, 0.2) is None
    assert judge(times(batches=0, waits=0), 0.3, 0.2) is None, "a training that failed in its setup"


@pytest.mark.parametrize("settings", [Settings()], indirect=True)
def test_a_failing_verdict_never_reaches_the_training(recorded, monkeypatch):
    from otel_callbacks import telemetry

    def broken(*args, **kwargs):
        raise RuntimeError("gauge down")

    monkeypatch.setattr(telemetry.current().health.time_share, "set", broken)
    train(DetectionTrainer(), epochs=2)  # returns: the training goes on
    assert telemetry.current().errors_seen["RuntimeError"] == 2, "counted, once an epoch"


def test_an_epochs_times_are_its_own():
    before = times(batches=10, waits=1, callbacks={"a on e": 5 * MS}, epochs=20)
    after = times(batches=30, waits=11, callbacks={"a on e": 5 * MS, "b on e": 2 * MS}, epochs=50)
    assert after.since(before) == Times(30 * MS, 20 * MS, 10 * MS, 0, 0, {"b on e": 2 * MS})


@pytest.mark.parametrize("name", ["OTEL_CALLBACKS_INPUT_BOUND", "OTEL_CALLBACKS_BOUND_SHARE"])
@pytest.mark.parametrize("raw", ["0", "1", "-0.1", "half"])
def test_the_bounds_are_validated(name, raw):
    with pytest.raises(
        SettingsError, match=rf"{name}={raw!r} is not accepted; expected a fraction between 0 and 1"
    ):
        Settings.from_env({name: raw})


def train(trainer, epochs=2, batches=6, wait_s=0.0, callback_s=0.0):
    """A training whose batches take 2 ms, whose loader makes each batch wait ``wait_s``, and whose
    ``on_fit_epoch_end`` uploader takes ``callback_s``."""

    def uploader(trainer):
        time.sleep(callback_s)

    trainer.add_callback("on_fit_epoch_end", uploader)
    wait, compute = lambda: time.sleep(wait_s), lambda: time.sleep(0.002)
    run_train(trainer, epochs=epochs, batches=batches, val_batches=1, wait=wait, compute=compute)


@pytest.mark.parametrize(
    ("kwargs", "bound_by", "says"),
    [
        ({"wait_s": 0.01}, sc.BOUND_INPUT, "the dataloader wait is"),
        (
            {"callback_s": 0.05},
            sc.BOUND_CALLBACKS,
            "test_verdicts.train.<locals>.uploader on on_fit_epoch_end",
        ),
        ({}, sc.BOUND_COMPUTE, "the batches"),
    ],
)
def test_each_epoch_and_the_run_get_their_verdict(recorded, capsys, kwargs, bound_by, says):
    train(DetectionTrainer(), **kwargs)
    epochs = sorted((s for s in recorded.spans() if s.name == sc.PHASE_EPOCH), key=lambda s: s.start_time)
    assert [e.attributes[sc.ATTR_BOUND_BY] for e in epochs] == [bound_by] * 2
    assert all(says in e.attributes[sc.ATTR_BOUND_REASON] for e in epochs)
    (root,) = [s for s in recorded.spans() if s.parent is None]
    assert root.attributes[sc.ATTR_BOUND_BY] == bound_by and 0 < root.attributes[sc.ATTR_BOUND_SHARE] <= 1
    assert f"bound by {bound_by}: " in capsys.readouterr().out, "a line of the table"
    data = recorded.reader.get_metrics_data()
    points = {
        (metric.name, dict(p.attributes)[sc.ATTR_BOUND_BY]): p.value
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name in (sc.METRIC_BOUND, sc.METRIC_TIME_SHARE)
        for p in metric.data.data_points
    }
    causes = (sc.BOUND_INPUT, sc.BOUND_COMPUTE, sc.BOUND_CALLBACKS, sc.BOUND_VALIDATION, sc.BOUND_CHECKPOINT)
    assert {cause: points[sc.METRIC_BOUND, cause] for cause in causes} == {
        c: int(c == bound_by) for c in causes
    }
    shares = [points[sc.METRIC_TIME_SHARE, cause] for cause in causes]
    assert all(0 <= share <= 1 for share in shares) and sum(shares) <= 1.01
