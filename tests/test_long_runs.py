"""Promises past the thresholds: the p95 reservoir, histogram start times, faults at the worst moments."""

from __future__ import annotations

import contextlib
import gc
import random
import threading
import time

import pytest
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from otel_callbacks import Limits, Settings, metric_views, semconv, telemetry, tracing
from otel_callbacks.telemetry import otlp_file
from otel_callbacks.telemetry.buckets import Batch, ns_thresholds
from otel_callbacks.telemetry.histograms import BufferedHistogram
from otel_callbacks.tracing.runs import CallbackStats
from tests.conftest import Recorded
from tests.engines import DetectionPredictor, DetectionTrainer, run_predict, run_train
from tests.soak import durations_by_callback
from tests.test_histograms import ATTRS, VALUES, collect, make, reference, summary
from tests.test_telemetry import FIRE, run_python

# The p95 reservoir ----------------------------------------------------------------------------


def test_reservoir_never_draws_from_the_global_random_and_stays_uniform():
    stats = CallbackStats(reservoir_size=10_000)
    before = random.getstate()
    values = list(range(200_000))
    for start in range(0, len(values), 777):
        stats.add(values[start : start + 777])
    assert random.getstate() == before
    assert stats.calls == 200_000 and stats.total_ns == sum(values)
    assert len(stats.reservoir) == 10_000 and len(set(stats.reservoir)) == 10_000
    deciles = [0] * 10
    for value in stats.reservoir:
        deciles[value // 20_000] += 1
    assert all(850 < n < 1150 for n in deciles), deciles  # uniform: 1,000 expected in each
    assert 180_000 < stats.p95_ns < 200_000


def test_reservoir_is_exact_below_its_size_and_the_same_for_the_same_values():
    small = CallbackStats(reservoir_size=100)
    small.add(list(range(100, 0, -1)))
    assert small.p95_ns == 95
    a, b = CallbackStats(reservoir_size=50), CallbackStats(reservoir_size=50)
    a.add(list(range(10_000)))
    for value in range(10_000):
        b.add([value])
    assert a.reservoir == b.reservoir, "a fixed private seed: the same table however values arrive"


# Buffered batches: fixed size, replayed exactly -----------------------------------------------


def test_a_batch_replays_the_same_buckets_sum_min_and_max():
    thresholds = ns_thresholds(semconv.DURATION_BUCKETS)
    batch = Batch(len(thresholds) + 1)
    batch.add(VALUES, thresholds)
    replayed = list(batch.replay_ns(thresholds))
    assert len(replayed) == len(VALUES) and sum(replayed) == sum(VALUES)
    assert min(replayed) == min(VALUES) and max(replayed) == max(VALUES)
    assert reference(replayed) == reference(VALUES)


def test_values_buffered_for_a_provider_of_unknown_kind_are_not_kept_one_by_one():
    _provider, reader, histogram = make(views=False)
    buffered = BufferedHistogram(histogram, mergeable=None, limit=100)
    buffer = buffered.buffer(ATTRS)
    for value in VALUES:
        buffer.append(value)
        if len(buffer) >= buffered.limit:
            buffered.fold(buffer)
    (batch,) = buffered._pending.values()
    assert len(batch.counts) == len(semconv.DURATION_BUCKETS) + 1 and not hasattr(batch, "values")
    assert summary(collect(reader, buffered)) == reference(VALUES)


def test_values_in_one_bucket_and_across_buckets_add_up_as_the_sdk_would():
    thresholds = ns_thresholds(semconv.DURATION_BUCKETS)
    batch = Batch(len(thresholds) + 1)
    one_bucket = [3_000, 7_000, 5_000]  # below the first bound: counted without a sort
    batch.add(one_bucket, thresholds)
    batch.add(VALUES, thresholds)
    replayed = list(batch.replay_ns(thresholds))
    assert reference(replayed) == reference(one_bucket + VALUES)
    assert batch.min_ns == min(one_bucket + VALUES) and batch.max_ns == max(one_bucket + VALUES)


# Unsampled training batches, worked out in bulk ---------------------------------------------------

LANE = Settings(
    summary=False,
    batch_spans_first=2,
    batch_spans_every=7,
    # Worked out every 2 batches once 8 are known; the phase buffers fold past 10 values.
    limits=Limits(batch_window=8, batch_min=3, buffer_limit=10),
)


def _phase_points(recorded, phase):
    (point,) = [
        p
        for a, p in recorded.points(semconv.METRIC_PHASE_DURATION)
        if a[semconv.ATTR_PHASE] == phase and a[semconv.ATTR_MODE] == "train"
    ]
    return point


@pytest.mark.parametrize("settings", [LANE], indirect=True)
def test_every_unsampled_batch_and_wait_is_counted_once_past_the_lane_threshold(recorded):
    # 51 batches an epoch: the lane is worked out after each of the first 8 batches, then every 2,
    # around sampled batches (0, 1, 7, 14, ...), and at the epoch's end with one batch left in it.
    trainer = DetectionTrainer()
    for event in ("on_pretrain_routine_start", "on_pretrain_routine_end", "on_train_start"):
        trainer.run_callbacks(event)
    for epoch in range(3):
        trainer.epoch = epoch
        trainer.run_callbacks("on_train_epoch_start")
        for _ in range(51):
            trainer.run_callbacks("on_train_batch_start")
            trainer.run_callbacks("on_train_batch_end")
        trainer.run_callbacks("on_train_epoch_end")  # any other firing sees every batch before it
        batch, wait = _phase_points(recorded, "batch"), _phase_points(recorded, "dataloader")
        assert batch.count == wait.count == (epoch + 1) * 51, "every batch and its dataloader wait"
        trainer.run_callbacks("on_fit_epoch_end")
    trainer.run_callbacks("on_train_end")
    trainer.run_callbacks("teardown")
    batch, wait = _phase_points(recorded, "batch"), _phase_points(recorded, "dataloader")
    assert batch.min > 0 and wait.min > 0
    table = tracing.current_tracker().last_report.phases
    assert table[("epoch", "batch")][0] == batch.count == 3 * 51
    assert table[("epoch", "batch")][1] / 1e9 == pytest.approx(batch.sum, rel=1e-9)
    assert table[("epoch", "dataloader")][1] / 1e9 == pytest.approx(wait.sum, rel=1e-9)
    sampled = {s.attributes[semconv.ATTR_BATCH_INDEX] for s in recorded.phase_spans("batch")}
    assert sampled == {0, 1, 7, 14, 21, 28, 35, 42, 49}


@pytest.mark.parametrize(
    "settings",
    [Settings(summary=False, batch_spans_first=1, batch_spans_every=5, max_spans=7)],
    indirect=True,
)
def test_batches_past_the_span_budget_get_no_spans_and_are_all_counted(recorded):
    # Between sampled batches the tracker takes its shortest path up to the next candidate (5, 10,
    # ...); there the generic path checks the budget again. Train, setup and epoch, then a batch
    # and its dataloader wait for batches 0 and 5, make 7 spans: batch 10 finds the budget spent.
    trainer = DetectionTrainer()
    for event in ("on_pretrain_routine_start", "on_pretrain_routine_end", "on_train_start"):
        trainer.run_callbacks(event)
    trainer.run_callbacks("on_train_epoch_start")
    for _ in range(23):
        trainer.run_callbacks("on_train_batch_start")
        trainer.run_callbacks("on_train_batch_end")
    trainer.run_callbacks("on_train_epoch_end")
    sampled = {s.attributes[semconv.ATTR_BATCH_INDEX] for s in recorded.phase_spans("batch")}
    assert sampled == {0, 5}
    assert _phase_points(recorded, "batch").count == 23


@pytest.mark.parametrize(
    "settings",
    [Settings(summary=False, batch_spans_first=0, batch_spans_every=0, limits=LANE.limits)],
    indirect=True,
)
def test_the_lane_folds_its_buffers_at_the_limit_and_loses_no_batch(recorded):
    trainer = DetectionTrainer()
    trainer.run_callbacks("on_pretrain_routine_start")
    trainer.run_callbacks("on_train_epoch_start")
    for _ in range(60):  # no collection meanwhile: only the limit bounds the buffers
        trainer.run_callbacks("on_train_batch_start")
        trainer.run_callbacks("on_train_batch_end")
    held = [len(s.values) for s in telemetry.current().phase_duration._sources.values()]
    assert max(held) < LANE.limits.buffer_limit
    trainer.run_callbacks("on_train_epoch_end")  # the lane's last batches are counted by then
    assert _phase_points(recorded, "batch").count == _phase_points(recorded, "dataloader").count == 60


@pytest.mark.parametrize("settings", [LANE], indirect=True)
def test_a_batch_after_another_firing_has_no_wait_and_a_batch_cut_short_is_not_negative(recorded):
    trainer = DetectionTrainer()
    trainer.add_callback("on_custom_event", lambda t: None)
    trainer.run_callbacks("on_pretrain_routine_start")
    trainer.run_callbacks("on_train_epoch_start")
    for index in range(12):
        if index == 5:
            trainer.run_callbacks("on_custom_event")  # between batches: the next waits for nothing
        trainer.run_callbacks("on_train_batch_start")
        trainer.run_callbacks("on_train_batch_end")
    trainer.run_callbacks("on_train_batch_start")  # unsampled (index 12), then the training dies
    trainer.run_callbacks("teardown")
    batch, wait = _phase_points(recorded, "batch"), _phase_points(recorded, "dataloader")
    # Every batch but the one after the custom event waited; the last one's wait is counted though
    # its end never came (as for a sampled batch, whose wait is counted at its start).
    assert batch.count == 13 and wait.count == 12
    assert batch.min >= 0
    (train,) = recorded.phase_spans("train")
    assert "batch never reached its end event" in train.status.description


@pytest.mark.parametrize("settings", [LANE], indirect=True)
def test_an_unsampled_batch_whose_callback_raises_keeps_the_exception_and_its_time(recorded):
    error = ValueError("bad batch")
    trainer = DetectionTrainer()
    trainer.failing = False

    def raiser(t):
        if t.failing:
            raise error

    trainer.add_callback("on_train_batch_start", raiser)
    trainer.run_callbacks("on_pretrain_routine_start")
    trainer.run_callbacks("on_train_epoch_start")
    for _ in range(9):
        trainer.run_callbacks("on_train_batch_start")
        trainer.run_callbacks("on_train_batch_end")
    trainer.failing = True  # batch 9: unsampled (after the first 2, not a multiple of 7)
    with pytest.raises(ValueError) as caught:
        trainer.run_callbacks("on_train_batch_start")
    assert caught.value is error
    trainer.run_callbacks("teardown")
    batch = _phase_points(recorded, "batch")
    assert batch.count == 10 and batch.min >= 0
    (failed,) = [s for s in recorded.callback_spans() if s.attributes.get(semconv.ATTR_ERROR_TYPE)]
    assert failed.attributes[semconv.ATTR_BATCH_INDEX] == 9
    (train,) = recorded.phase_spans("train")
    assert train.status.description == "ValueError: bad batch"
    assert recorded.open_spans.open == {}


@pytest.mark.parametrize("settings", [LANE], indirect=True)
def test_an_armed_lane_keeps_its_batch_on_top_whatever_fires_and_raises_in_between(recorded):
    # The armed lane's shortest path relies on it: its idle batch phase is the innermost one.
    draw = random.Random(5)
    trainer = DetectionTrainer()
    trainer.failing = False

    def flaky(t):
        if t.failing:
            raise RuntimeError("flaky")

    trainer.add_callback("on_train_batch_end", flaky)
    trainer.run_callbacks("on_pretrain_routine_start")
    trainer.run_callbacks("on_train_epoch_start")
    state = tracing.current_tracker().states[id(trainer)]
    batch = ("on_train_batch_start", "on_train_batch_end")
    others = [*batch, "on_train_epoch_start", "on_train_epoch_end", "on_custom_event", "on_fit_epoch_end"]
    armed = 0
    for step in range(3000):  # batches in turn, but one firing in ten anything at all
        trainer.failing = draw.random() < 0.02
        with contextlib.suppress(RuntimeError):  # flaky's, which reaches the caller
            trainer.run_callbacks(batch[step % 2] if draw.random() < 0.9 else draw.choice(others))
        if state.armed is not None:
            armed += 1
            assert state.stack[-1] is state.armed.idle
    trainer.run_callbacks("teardown")
    assert armed > 1000, "the lane was armed often"
    assert recorded.open_spans.open == {}


def _lane_script(seed: int, recorded: Recorded) -> dict:
    """A training whose batches are interrupted by other firings, raising callbacks and callback
    lists that change under it; what the metrics and the timing table count of it."""
    draw = random.Random(seed)
    trainer = DetectionTrainer()
    trainer.failing = None

    def flaky(t):
        if t.failing == "flaky":
            raise RuntimeError("flaky")

    def first(t):
        if t.failing == "first":
            raise RuntimeError("first")

    def extra(t):
        pass

    trainer.add_callback("on_train_batch_end", flaky)
    trainer.run_callbacks("on_pretrain_routine_start")
    trainer.run_callbacks("on_train_epoch_start")
    batch = ("on_train_batch_start", "on_train_batch_end")
    others = [*batch, "on_train_epoch_start", "on_train_epoch_end", "on_custom_event", "on_fit_epoch_end"]
    for step in range(1500):  # batches in turn, but one firing in ten anything at all
        roll = draw.random()
        if roll < 0.01:  # a callback becomes the first of the batch's start, or stops being it
            starts = trainer.callbacks["on_train_batch_start"]
            starts.remove(first) if first in starts else starts.insert(0, first)
        elif roll < 0.02:  # one more or one fewer at the batch's end
            ends = trainer.callbacks["on_train_batch_end"]
            ends.remove(extra) if extra in ends else ends.append(extra)
        trainer.failing = draw.choice(["flaky", "first"]) if draw.random() < 0.02 else None
        with contextlib.suppress(RuntimeError):  # the callbacks', which reach the caller
            trainer.run_callbacks(batch[step % 2] if draw.random() < 0.9 else draw.choice(others))
    trainer.run_callbacks("on_train_end")
    trainer.run_callbacks("teardown")
    table: dict[str, int] = {}  # the table's counts by phase (out-of-order events nest oddly)
    for path, (count, _) in tracing.current_tracker().last_report.phases.items():
        table[path[-1]] = table.get(path[-1], 0) + count
    return {
        "table": table,
        "metrics": {
            (semconv.METRIC_PHASE_DURATION, a[semconv.ATTR_PHASE]): p.count
            for a, p in recorded.points(semconv.METRIC_PHASE_DURATION)
        }
        | {
            (semconv.METRIC_CALLBACK_DURATION, *sorted(a.items())): p.count
            for a, p in recorded.points(semconv.METRIC_CALLBACK_DURATION)
        },
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_armed_lane_counts_what_the_generic_path_counts(seed):
    # The same firings, once with unsampled batches on the lane and once with every batch sampled
    # (the generic path): the same batches, waits and calls, in the metrics and in the table.
    counted = []
    for batch_spans_first in (2, 1 << 62):
        reader = InMemoryMetricReader()
        sampling = {"batch_spans_first": batch_spans_first, "batch_spans_every": 7, "max_spans": 1 << 62}
        telemetry.configure(
            Settings(summary=False, **sampling),
            tracer_provider=TracerProvider(),
            meter_provider=MeterProvider(metric_readers=[reader], views=metric_views()),
        )
        counted.append(_lane_script(seed, Recorded(None, reader, None, None)))
        telemetry.shutdown()
    lane, generic = counted
    assert lane["metrics"] == generic["metrics"]
    assert lane["table"] == generic["table"]
    assert lane["metrics"][semconv.METRIC_PHASE_DURATION, "batch"] > 600


# Start times -----------------------------------------------------------------------------------


@pytest.mark.parametrize("temporality", ["cumulative", "delta"])
def test_points_start_at_the_first_measurement_then_as_the_sdk_would(temporality):
    preferred = {Histogram: AggregationTemporality.DELTA} if temporality == "delta" else {}
    _provider, reader, histogram = make(temporality=preferred)
    buffered = BufferedHistogram(histogram, mergeable=True)
    first = time.time_ns()
    buffered.buffer(ATTRS).append(1000)
    time.sleep(0.5)
    (point,) = collect(reader, buffered)
    assert first <= point.start_time_unix_nano < first + 50_000_000, "not the collection's time"
    assert point.time_unix_nano - point.start_time_unix_nano >= 500_000_000
    buffered.buffer(ATTRS).append(2000)
    (second,) = collect(reader, buffered)
    expected = point.time_unix_nano if temporality == "delta" else point.start_time_unix_nano
    assert second.start_time_unix_nano == expected and second.count == (1 if preferred else 2)


def test_the_embedded_file_writes_delta_points_from_the_first_measurement(tmp_path):
    code = FIRE.replace("for cb in", "import time\nprint(time.time_ns())\nfor cb in") + "time.sleep(0.6)\n"
    env = {"OTEL_CALLBACKS_DIR": str(tmp_path), "OTEL_METRIC_EXPORT_INTERVAL": "60000"}
    out = run_python(code, env)  # one collection, at exit, 0.6 s after the measurements
    assert out.returncode == 0, out.stderr
    fired = int(out.stdout.split()[0])
    points = [
        p
        for request in otlp_file.read_file(next(tmp_path.glob("*.metrics.jsonl")))
        for rm in getattr(request, "resource_metrics", [])
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == semconv.METRIC_CALLBACK_DURATION
        for p in m.histogram.data_points
    ]
    assert points and sum(p.count for p in points) == 2
    for p in points:
        assert fired <= p.start_time_unix_nano < fired + 300_000_000, "the first measurement"
        assert p.time_unix_nano - p.start_time_unix_nano >= 600_000_000, "not the collection's time"


# Faults at the worst moments -------------------------------------------------------------------


def test_a_reader_collecting_while_runs_end_loses_nothing(recorded):
    stop = threading.Event()

    def collect_all_the_time():
        while not stop.is_set():
            recorded.reader.collect()

    collector = threading.Thread(target=collect_all_the_time)
    collector.start()
    try:
        for _ in range(300):
            run_predict(DetectionPredictor(), batches=2)
    finally:
        stop.set()
        collector.join()
    counts = durations_by_callback(recorded)
    assert counts[("on_predict_batch_end", "otel_callbacks.hooks.on_predict_batch_end")].count == 600
    assert counts[("on_predict_end", "otel_callbacks.hooks.on_predict_end")].count == 300
    assert telemetry.current().errors_seen == {}


class _Cycle:
    """An engine only the garbage collector can free."""

    def __init__(self, engine):
        self.engine, engine.cycle = engine, self


def test_an_engine_collected_in_the_middle_of_a_flush_neither_deadlocks_nor_loses_values(recorded):
    histogram = telemetry.current().callback_duration
    trainer = DetectionTrainer()
    _Cycle(trainer)
    trainer.run_callbacks("on_pretrain_routine_start")
    trainer.run_callbacks("on_train_epoch_start")
    for _ in range(3):
        trainer.run_callbacks("on_train_batch_start")
        trainer.run_callbacks("on_train_batch_end")
    del trainer  # collectable now, but not yet collected
    original = CallbackStats.add
    calls = []

    def add_and_collect(self, values, failed=False):
        original(self, values, failed)
        if not calls:
            calls.append(1)
            gc.collect()  # the trainer dies inside the drain: its run ends and releases its lists

    CallbackStats.add = add_and_collect
    try:
        flushing = threading.Thread(target=histogram.flush, daemon=True)
        flushing.start()
        flushing.join(10)
    finally:
        CallbackStats.add = original
    assert not flushing.is_alive(), "deadlocked"
    assert calls and tracing.current_tracker().states == {}
    counts = durations_by_callback(recorded)
    assert counts[("on_train_batch_end", "otel_callbacks.hooks.on_train_batch_end")].count == 3
    (train,) = recorded.phase_spans("train")
    assert "garbage collected" in train.status.description


class _FailsAtShutdown(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS

    def shutdown(self):
        raise RuntimeError("exporter broke during shutdown")


def test_an_exporter_raising_inside_shutdown_never_reaches_the_training(caplog):
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(_FailsAtShutdown()))
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader], views=metric_views(), shutdown_on_exit=False)
    tel = telemetry.configure(Settings(summary=False), tracer_provider=provider, meter_provider=meters)
    tel.owned = [provider, meters]
    run_train(DetectionTrainer(), epochs=1, batches=2)
    telemetry.shutdown(timeout=5)
    assert "exporter broke during shutdown" in caplog.text
    assert telemetry.current() is None
