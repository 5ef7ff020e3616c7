"""Exemplars: the points of ``ultralytics.callback.duration`` for calls that have spans (slow, failed,
sampled) and of ``ultralytics.callback.slow`` carry the call span's trace and span id, in OTLP and in
the embedded metrics file; calls without spans give none; the latest few per attribute set are kept
between two collections; no global random generator is drawn from; a filter of always_off gives none."""

from __future__ import annotations

import random
import time
from dataclasses import replace

import numpy as np
import pytest
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.trace import TracerProvider

from otel_callbacks import Settings, metric_views, telemetry
from otel_callbacks import semconv as sc
from otel_callbacks.config import Limits
from otel_callbacks.telemetry import otlp_file
from tests.engines import DetectionTrainer, run_train

SLOW = Settings(default_hook_spans=False, gap_span_min=0, slow_threshold=0.01)


def trainer_with_slow_uploader() -> DetectionTrainer:
    trainer = DetectionTrainer()
    trainer.add_callback("on_fit_epoch_end", lambda trainer: time.sleep(0.02))
    return trainer


def collected(recorded) -> dict[str, list[tuple[dict, object]]]:
    """One collection (exemplars are a collection's: the next has none of them), by metric name."""
    found: dict[str, list] = {}
    for rm in recorded.reader.get_metrics_data().resource_metrics:
        for metric in (m for sm in rm.scope_metrics for m in sm.metrics):
            found.setdefault(metric.name, []).extend((dict(p.attributes), p) for p in metric.data.data_points)
    return found


def the_uploaders(points: list[tuple[dict, object]]) -> object:
    ((_, point),) = [
        (attrs, point)
        for attrs, point in points
        if attrs[sc.ATTR_EVENT] == "on_fit_epoch_end" and attrs[sc.ATTR_INTEGRATION] == sc.INTEGRATION_USER
    ]
    return point


def slow_spans(recorded) -> dict[int, object]:
    return {s.context.span_id: s for s in recorded.spans() if s.attributes.get(sc.ATTR_SLOW)}


@pytest.mark.parametrize("settings", [SLOW], indirect=True)
def test_a_slow_calls_points_carry_its_span_and_a_call_without_a_span_none(recorded):
    state = random.getstate(), np.random.get_state()[1].tobytes()
    run_train(trainer_with_slow_uploader(), epochs=2)
    metrics = collected(recorded)
    assert (random.getstate(), np.random.get_state()[1].tobytes()) == state, "no global random drawn"
    spans = slow_spans(recorded)
    assert len(spans) == 3, "two epochs and the final evaluation"
    for metric in (sc.METRIC_CALLBACK_DURATION, sc.METRIC_CALLBACK_SLOW):
        point = the_uploaders(metrics[metric])
        assert point.exemplars, metric
        for exemplar in point.exemplars:
            span = spans[exemplar.span_id]
            assert exemplar.trace_id == span.context.trace_id, metric
            assert exemplar.filtered_attributes in (None, {}), "the point's own attributes, none more"
        if metric == sc.METRIC_CALLBACK_DURATION:
            assert all(0.02 <= e.value < 1 for e in point.exemplars), "the call's duration, in seconds"
    # The default hooks' calls have no spans (OTEL_CALLBACKS_DEFAULT_HOOK_SPANS=false): no exemplars.
    defaults = [
        p for a, p in metrics[sc.METRIC_CALLBACK_DURATION] if a[sc.ATTR_INTEGRATION] == sc.INTEGRATION_DEFAULT
    ]
    assert defaults and not any(p.exemplars for p in defaults)


@pytest.mark.parametrize("settings", [replace(SLOW, limits=Limits(exemplars=2))], indirect=True)
def test_the_latest_exemplars_are_kept_between_two_collections(recorded):
    trainer = trainer_with_slow_uploader()
    run_train(trainer, epochs=5)  # six slow calls, past the two kept
    spans = sorted(slow_spans(recorded).values(), key=lambda s: s.start_time)
    assert len(spans) == 6
    point = the_uploaders(collected(recorded)[sc.METRIC_CALLBACK_DURATION])
    kept = {e.span_id for e in point.exemplars}
    assert kept and kept <= {s.context.span_id for s in spans[-2:]}, "the latest two only"


def test_a_filter_of_always_off_gives_no_exemplars():
    reader = InMemoryMetricReader()
    provider = MeterProvider(
        metric_readers=[reader], views=metric_views(), exemplar_filter=AlwaysOffExemplarFilter()
    )
    tracer_provider = TracerProvider()
    tel = telemetry.configure(SLOW, tracer_provider=tracer_provider, meter_provider=provider)
    assert tel.exemplars is False
    run_train(trainer_with_slow_uploader(), epochs=1)
    data = reader.get_metrics_data()
    points = [
        p
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        for p in m.data.data_points
    ]
    assert points and not any(getattr(p, "exemplars", None) for p in points)
    telemetry.shutdown()
    provider.shutdown()


def test_a_provider_whose_other_views_match_the_slow_counter_gets_no_exemplars():
    """Another view matching the slow counter (a wildcard) gives it the SDK's default reservoir, which
    samples with the global random: no span context is passed then."""
    provider = MeterProvider(
        metric_readers=[InMemoryMetricReader()], views=[*metric_views(), View(instrument_name="*")]
    )
    tel = telemetry.configure(SLOW, tracer_provider=TracerProvider(), meter_provider=provider)
    assert tel.exemplars is False
    state = random.getstate()
    run_train(trainer_with_slow_uploader(), epochs=1)
    provider.force_flush()
    assert random.getstate() == state
    telemetry.shutdown()
    provider.shutdown()


def test_the_embedded_metrics_file_carries_the_exemplars(tmp_path, monkeypatch):
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_METRICS_EXEMPLAR_FILTER"):
        monkeypatch.delenv(name, raising=False)
    tel = telemetry.configure(replace(SLOW, output_dir=tmp_path, summary=False))
    run_train(trainer_with_slow_uploader(), epochs=1)
    telemetry.shutdown()
    found = {}
    for request in otlp_file.read_file(tel.output.metrics_path):
        for metric in (m for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics):
            points = metric.histogram.data_points if metric.HasField("histogram") else metric.sum.data_points
            found.setdefault(metric.name, set()).update(e.span_id for p in points for e in p.exemplars)
    spans = set()
    for request in otlp_file.read_file(tel.output.traces_path):
        for span in (s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans):
            if any(kv.key == sc.ATTR_SLOW for kv in span.attributes):
                spans.add(span.span_id)
    assert len(spans) == 2 and len(found[sc.METRIC_CALLBACK_SLOW]) == 1, "one collection: the latest"
    assert found[sc.METRIC_CALLBACK_SLOW] <= spans
    assert found[sc.METRIC_CALLBACK_DURATION] >= found[sc.METRIC_CALLBACK_SLOW], "the latest in its bucket"
