"""Buffered durations reach the SDK exactly as ``Histogram.record`` would have put them."""

from __future__ import annotations

import random
import threading

import pytest
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

from otel_callbacks import metric_views, semconv
from otel_callbacks.telemetry.histograms import BufferedHistogram, duration_histogram

ATTRS = {semconv.ATTR_EVENT: "on_train_batch_end", semconv.ATTR_CALLBACK: "m.f"}
DELTA = {Histogram: AggregationTemporality.DELTA}


def make(views=True, temporality=None):
    reader = InMemoryMetricReader(preferred_temporality=temporality or {})
    # Without our view, a plain one with the same buckets: the reference, on every SDK (the buckets'
    # advice on the instrument exists only from 1.30).
    plain = [
        View(instrument_name="*", aggregation=ExplicitBucketHistogramAggregation(semconv.DURATION_BUCKETS))
    ]
    provider = MeterProvider(metric_readers=[reader], views=metric_views() if views else plain)
    meter = provider.get_meter(semconv.METER_NAME)
    histogram = duration_histogram(meter, semconv.METRIC_CALLBACK_DURATION, "callback durations")
    return provider, reader, histogram


def collect(reader, buffered=None):
    if buffered is not None:
        buffered.flush()  # what the observable hook does inside every collection
    data = reader.get_metrics_data()
    points = [
        p
        for rm in (data.resource_metrics if data else ())
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == semconv.METRIC_CALLBACK_DURATION  # not the SDK's own (1.41 adds some)
        for p in m.data.data_points
    ]
    return points


def summary(points):
    assert len(points) <= 1
    if not points:
        return None
    p = points[0]
    return (list(p.bucket_counts), p.count, round(p.sum, 9), p.min, p.max, tuple(p.explicit_bounds))


VALUES = [
    random.Random(7).choice([50_000, 100_000, 100_001, 3_000_000, 61_000_000_000, 250_000])
    for _ in range(5000)
]


def reference(values):
    _provider, reader, histogram = make(views=False)
    for ns in values:
        histogram.record(ns / 1e9, ATTRS)
    return summary(collect(reader))


@pytest.mark.parametrize("views", [True, False], ids=["merged", "replayed"])
def test_same_histogram_as_record(views):
    _provider, reader, histogram = make(views)
    buffered = BufferedHistogram(histogram, mergeable=True if views else None)
    buffer = buffered.buffer(ATTRS)
    buffer.extend(VALUES)
    assert summary(collect(reader, buffered)) == reference(VALUES)
    assert buffered.mergeable is views
    buffer.extend(VALUES[:10])
    assert summary(collect(reader, buffered)) == reference(VALUES + VALUES[:10]), "cumulative"


def test_delta_reader_drops_aggregations_and_nothing_is_lost():
    _provider, reader, histogram = make(temporality=DELTA)
    buffered = BufferedHistogram(histogram, mergeable=True)
    buffer = buffered.buffer(ATTRS)
    total = 0
    for chunk in (VALUES[:100], VALUES[100:101], [], VALUES[101:]):
        buffer.extend(chunk)
        points = collect(reader, buffered)
        assert summary(points) == (reference(chunk) if chunk else None)
        total += sum(p.count for p in points)
    assert total == len(VALUES)


@pytest.mark.parametrize("mergeable", [True, None])
def test_fold_bounds_memory_and_keeps_counts_exact(mergeable):
    _provider, reader, histogram = make(views=bool(mergeable))
    buffered = BufferedHistogram(histogram, mergeable=mergeable)
    buffer = buffered.buffer(ATTRS)
    buffer.extend(VALUES[:3000])
    buffered.fold(buffer)
    assert not buffer
    buffer.extend(VALUES[3000:])
    assert summary(collect(reader, buffered)) == reference(VALUES)


def test_concurrent_appends_during_collections_are_all_counted():
    _provider, reader, histogram = make(temporality=DELTA)
    buffered = BufferedHistogram(histogram, mergeable=True)
    buffer = buffered.buffer(ATTRS)
    per_thread = 20_000
    counted = []

    def train():
        for i in range(per_thread):
            buffer.append(1000 + i)

    threads = [threading.Thread(target=train) for _ in range(2)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        counted += [p.count for p in collect(reader, buffered)]
    for t in threads:
        t.join()
    counted += [p.count for p in collect(reader, buffered)]
    assert sum(counted) == 2 * per_thread


def test_two_readers_each_get_every_value():
    cumulative, delta = InMemoryMetricReader(), InMemoryMetricReader(preferred_temporality=DELTA)
    provider = MeterProvider(metric_readers=[cumulative, delta], views=metric_views())
    histogram = provider.get_meter(semconv.METER_NAME).create_histogram(semconv.METRIC_CALLBACK_DURATION)
    buffered = BufferedHistogram(histogram, mergeable=True)
    buffered.buffer(ATTRS).extend(VALUES)
    assert summary(collect(cumulative, buffered)) == reference(VALUES)
    assert summary(collect(delta, buffered)) == reference(VALUES)


def test_integer_bucketing_matches_the_sdk_at_every_boundary():
    from bisect import bisect_left, bisect_right

    from otel_callbacks.telemetry.buckets import ns_thresholds

    thresholds = ns_thresholds(semconv.DURATION_BUCKETS)
    for bound in semconv.DURATION_BUCKETS:
        exact = round(bound * 1e9)
        for ns in range(exact - 3, exact + 4):
            assert bisect_right(thresholds, ns) == bisect_left(semconv.DURATION_BUCKETS, ns / 1e9), ns


@pytest.mark.parametrize(
    "values",
    [
        [150_000] * 2000 + [20_000, 5_000_000, 99_999, 250_000],  # a middle bucket, strays both sides
        [90_000] * 500 + [120_000_000_000, 100_000],  # the first bucket, strays above
        [200_000_000_000] * 300 + [7],  # the last (unbounded) bucket, a stray below
        [50_000, 300_000] * 400,  # two buckets, half each
    ],
    ids=["middle", "first", "last", "even"],
)
def test_values_outside_the_busiest_bucket_are_bucketed_exactly(values):
    _provider, reader, histogram = make()
    buffered = BufferedHistogram(histogram, mergeable=True)
    buffered.buffer(ATTRS).extend(values)
    assert summary(collect(reader, buffered)) == reference(values)


class Sink(list):
    def add(self, values):
        self.extend(values)


def test_a_restart_holds_only_while_no_list_was_drained_or_given_another_sink():
    # A quiet predict run's start (tracing/quiet_runs.py): the values so far are no longer the sink's.
    _provider, reader, histogram = make()
    buffered = BufferedHistogram(histogram)
    values, sink = buffered.buffer(ATTRS), Sink()
    version = buffered.redirect([(values, sink)])
    sources = buffered.sources([values])
    values += [1, 2]
    assert buffered.restart(sources, version)
    values.append(3)
    collect(reader, buffered)
    assert sink == [3], "a drain gives the sink what came after the restart"
    assert not buffered.restart(sources, version), "drained since"
    version = buffered.redirect([(values, sink)])
    assert buffered.redirect([(values, sink)]) == version, "the same sink: nothing changes hands"
    values.append(4)
    buffered.redirect([(values, Sink())])
    assert not buffered.restart(sources, version), "another sink since"
    assert sink == [3, 4], "handed over: what the list held was the old sink's"
