"""Per-invocation telemetry: spans, histogram points, errors, sampling, slow calls."""

from __future__ import annotations

import time
import traceback
from collections import Counter

import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from otel_callbacks import Settings, semconv
from tests.engines import DetectionPredictor, DetectionTrainer, run_predict, run_train

A = semconv


class Invocations:
    """An independent plain callback on every event: the ground truth of what really ran."""

    def __init__(self, callbacks):
        self.count = Counter()
        for event in list(callbacks):
            callbacks[event].append(self.counter(event))

    def counter(self, event):
        def count(engine):
            self.count[event] += 1

        count.__qualname__ = f"count_{event}"
        return count


def test_training_in_ultralytics_order_gives_a_span_per_non_batch_call(recorded):
    trainer = DetectionTrainer()
    run_train(trainer, epochs=2, batches=2, val_batches=2)

    names = [s.name for s in recorded.callback_spans()]
    # the first batches of each loop are sampled (default: first 3), so every call has a span here
    assert Counter(names) == Counter(
        {
            "on_pretrain_routine_start": 1,
            "on_pretrain_routine_end": 1,
            "on_train_start": 1,
            "on_train_epoch_start": 2,
            "on_train_batch_start": 4,
            "on_train_batch_end": 4,
            "on_train_epoch_end": 2,
            "on_val_start": 3,
            "on_val_batch_start": 6,
            "on_val_batch_end": 6,
            "on_val_end": 3,
            "on_model_save": 2,
            "on_fit_epoch_end": 3,
            "on_train_end": 1,
            "teardown": 1,
        }
    )
    epoch_end = recorded.spans("on_train_epoch_end")
    assert [s.attributes[A.ATTR_EPOCH] for s in epoch_end] == [1, 2]
    first = epoch_end[0].attributes
    assert first[A.ATTR_EVENT] == "on_train_epoch_end"
    assert first[A.ATTR_CALLBACK] == "otel_callbacks.hooks.on_train_epoch_end"
    assert first[A.ATTR_INTEGRATION] == "default"
    assert first[A.ATTR_MODE] == "train"
    assert A.ATTR_BATCH_INDEX not in first
    batches = recorded.spans("on_train_batch_start")
    assert [(s.attributes[A.ATTR_EPOCH], s.attributes[A.ATTR_BATCH_INDEX]) for s in batches] == [
        (1, 0),
        (1, 1),
        (2, 0),
        (2, 1),
    ]
    val = recorded.spans("on_val_batch_end")
    assert [s.attributes[A.ATTR_BATCH_INDEX] for s in val] == [0, 1] * 3
    assert {s.attributes[A.ATTR_MODE] for s in val} == {"val"}
    assert all(s.status.status_code is StatusCode.UNSET for s in recorded.spans())
    assert len(recorded.phase_spans("epoch")) == 2


def test_histogram_has_a_point_for_every_real_call(recorded):
    trainer = DetectionTrainer()
    truth = Invocations(trainer.callbacks)
    run_train(trainer, epochs=2, batches=5, val_batches=4)
    predictor = DetectionPredictor()
    truth_predict = Invocations(predictor.callbacks)
    run_predict(predictor, batches=7)

    per_callback = {}
    for attributes, point in recorded.durations():
        key = (attributes[A.ATTR_EVENT], attributes[A.ATTR_CALLBACK])
        per_callback[key] = point
        assert point.explicit_bounds == A.DURATION_BUCKETS
        assert sum(point.bucket_counts) == point.count
        assert 0 <= point.min <= point.max < 1
        assert A.ATTR_BATCH_INDEX not in attributes and A.ATTR_EPOCH not in attributes
        assert attributes[A.ATTR_INTEGRATION] in ("default", "user")
    for truth_counts in (truth.count, truth_predict.count):
        for event, calls in truth_counts.items():
            assert per_callback[(event, f"{__name__}.count_{event}")].count == calls
            assert per_callback[(event, f"otel_callbacks.hooks.{event}")].count == calls
    assert truth.count["on_train_batch_end"] == 10 and truth_predict.count["on_predict_batch_end"] == 7


class Boom(Exception):
    pass


def failing(trainer):
    raise Boom("callback failed")


def test_exception_reaches_caller_unchanged_and_is_recorded(recorded):
    trainer = DetectionTrainer()
    trainer.add_callback("on_train_epoch_end", failing)
    with pytest.raises(Boom) as caught:
        run_train(trainer)

    frames = traceback.extract_tb(caught.value.__traceback__)
    assert frames[-1].name == "failing" and frames[-1].line == 'raise Boom("callback failed")'
    assert any(f.name == "run_callbacks" for f in frames)

    (span,) = [s for s in recorded.spans("on_train_epoch_end") if s.status.status_code is StatusCode.ERROR]
    assert span.attributes[A.ATTR_ERROR_TYPE] == "Boom"
    assert span.status.description == "Boom: callback failed"
    (event,) = span.events
    assert event.name == "exception" and event.attributes["exception.type"].endswith("Boom")
    assert recorded.spans("teardown"), "teardown still runs and is traced"
    errored = [a for a, _ in recorded.durations() if a.get(A.ATTR_ERROR_TYPE)]
    assert errored == [
        {
            A.ATTR_EVENT: "on_train_epoch_end",
            A.ATTR_CALLBACK: f"{__name__}.failing",
            A.ATTR_INTEGRATION: "user",
            A.ATTR_MODE: "train",
            A.ATTR_ERROR_TYPE: "Boom",
        }
    ]


def test_same_exception_object_is_reraised(recorded):
    error = Boom("identity")
    trainer = DetectionTrainer()

    def raiser(t):
        raise error

    trainer.add_callback("on_train_batch_end", raiser)
    for index in range(6):  # sampled batches and unsampled ones both pass the object through
        with pytest.raises(Boom) as caught:
            trainer.run_callbacks("on_train_batch_start")
            trainer.run_callbacks("on_train_batch_end")
        assert caught.value is error, index
    failed = [s for s in recorded.spans("on_train_batch_end") if s.status.status_code is StatusCode.ERROR]
    assert len(failed) == 6, "a failing invocation always gets its span, sampled or not"


@pytest.mark.parametrize(
    "settings", [Settings(batch_spans_first=2, batch_spans_every=4, default_hook_spans=True)], indirect=True
)
def test_batch_spans_are_sampled_but_metrics_count_every_call(recorded):
    trainer = DetectionTrainer()
    run_train(trainer, epochs=2, batches=10, val_batches=9)
    starts = recorded.spans("on_train_batch_start")
    assert [(s.attributes[A.ATTR_EPOCH], s.attributes[A.ATTR_BATCH_INDEX]) for s in starts] == [
        (epoch, index) for epoch in (1, 2) for index in (0, 1, 4, 8)
    ]
    assert [s.attributes[A.ATTR_BATCH_INDEX] for s in recorded.spans("on_val_batch_end")] == [
        0,
        1,
        4,
        8,
    ] * 3
    counts = {a[A.ATTR_EVENT]: p.count for a, p in recorded.durations()}
    assert counts["on_train_batch_start"] == 20 and counts["on_val_batch_end"] == 27
    assert len(recorded.spans("on_train_epoch_start")) == 2, "non-batch events are never sampled"


@pytest.mark.parametrize(
    "settings",
    [Settings(batch_spans_first=0, batch_spans_every=0, slow_threshold=0.02)],
    indirect=True,
)
def test_slow_unsampled_batch_call_keeps_its_span_with_real_times(recorded, caplog):
    trainer = DetectionTrainer()
    calls = []

    def sometimes_slow(t):
        calls.append(1)
        if len(calls) == 3:
            time.sleep(0.05)

    trainer.add_callback("on_train_batch_end", sometimes_slow)
    before = time.time_ns()
    for _ in range(5):
        trainer.run_callbacks("on_train_batch_start")
        trainer.run_callbacks("on_train_batch_end")
    (span,) = recorded.callback_spans()
    assert span.name == "on_train_batch_end sometimes_slow"
    assert span.attributes[A.ATTR_BATCH_INDEX] == 2
    assert span.attributes[A.ATTR_CALLBACK] == f"{__name__}.{sometimes_slow.__qualname__}"
    assert before < span.start_time < span.end_time
    assert span.end_time - span.start_time >= 50_000_000
    (slow_event,) = span.events
    assert slow_event.name == A.EVENT_SLOW_CALLBACK
    assert slow_event.attributes["threshold_s"] == 0.02
    assert slow_event.attributes["duration_s"] >= 0.05
    ((attributes, point),) = recorded.points(A.METRIC_CALLBACK_SLOW)
    assert point.value == 1 and attributes[A.ATTR_CALLBACK].endswith("sometimes_slow")
    assert any("sometimes_slow" in r.getMessage() for r in caplog.records)
    counts = {a[A.ATTR_CALLBACK]: p.count for a, p in recorded.durations()}
    assert counts[f"{__name__}.{sometimes_slow.__qualname__}"] == 5


def test_callback_runs_inside_its_span_and_context_is_restored(recorded):
    seen = []

    def look(trainer):
        seen.append(trace.get_current_span().get_span_context().span_id)

    trainer = DetectionTrainer()
    trainer.add_callback("on_train_start", look)
    trainer.run_callbacks("on_train_start")
    (span,) = [s for s in recorded.callback_spans() if s.attributes[A.ATTR_CALLBACK].endswith("look")]
    assert seen == [span.context.span_id]
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_telemetry_failure_never_breaks_the_callback(recorded, caplog, monkeypatch):
    from otel_callbacks import telemetry

    def broken(*args, **kwargs):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(telemetry.current().tracer, "start_span", broken)
    trainer = DetectionTrainer()
    results = []
    trainer.add_callback("on_train_start", lambda t: results.append("ran"))
    for _ in range(3):
        trainer.run_callbacks("on_train_start")
    assert results == ["ran"] * 3
    logged = [r for r in caplog.records if "exporter exploded" in r.getMessage()]
    assert len(logged) == 1, "logged once"
    assert telemetry.current().errors_seen == {"RuntimeError": 6}
    ((attributes, point),) = recorded.points(A.METRIC_TELEMETRY_ERRORS)
    assert point.value == 6 and attributes == {A.ATTR_ERROR_TYPE: "RuntimeError"}


def test_telemetry_never_draws_from_the_global_random_module(recorded):
    """Ultralytics seeds ``random`` for reproducible augmentation; span ids must not shift it."""
    import random

    random.seed(1234)
    expected = [random.random() for _ in range(3)]
    trainer = DetectionTrainer()
    tracer = recorded.tracer_provider.get_tracer("user")
    with tracer.start_as_current_span("experiment"):  # a sampled context: exemplars would sample
        random.seed(1234)
        run_train(trainer, epochs=2, batches=4)
        recorded.reader.collect()
        assert [random.random() for _ in range(3)] == expected
    assert len(recorded.spans()) > 50
