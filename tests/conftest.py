from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_callbacks import Settings, semconv, telemetry
from otel_callbacks.apps.demo import prepare_offline
from otel_callbacks.telemetry.spans import SpanStarter
from otel_callbacks.telemetry.views import metric_views

# Before anything imports ultralytics: offline, a private config dir, a local font.
prepare_offline(Path(tempfile.mkdtemp(prefix="otel-callbacks-yolo-config-")))
# Tests write only to temporary directories (Ultralytics' runs: tests/e2e/conftest.py).
_SCRATCH = Path(tempfile.mkdtemp(prefix="otel-callbacks-tests-"))
os.environ["OTEL_CALLBACKS_DIR"] = str(_SCRATCH / "otel")
_CHECKOUT = Path(__file__).resolve().parents[1]


def _checkout_entries() -> set[str]:
    runs = _CHECKOUT / "runs"
    return {p.name for p in _CHECKOUT.iterdir()} | {f"runs/{p.name}" for p in runs.glob("*")}


_BEFORE = _checkout_entries()


def pytest_sessionfinish(session, exitstatus):
    """Fail the run when a test wrote into the checkout instead of a temporary directory."""
    written = sorted(_checkout_entries() - _BEFORE - {".pytest_cache"})
    if written:
        session.exitstatus = 1
        print(f"\nFAILED: tests wrote into the checkout: {', '.join(written)}")


def pytest_addoption(parser):
    parser.addoption(
        "--long", action="store_true", help="run the soak test at its long size (10M callback calls)"
    )


class SpanEnds(SpanProcessor):
    """Spans started and not yet ended: must be empty once a run is over. This one sees ends only,
    so that the tracer stays eligible for direct spans; the fixture reports their starts."""

    def __init__(self):
        self.open = {}

    def started(self, span):
        self.open[span.get_span_context().span_id] = span.name

    def on_end(self, span):
        self.open.pop(span.context.span_id, None)


class OpenSpans(SpanEnds):
    """The same, seeing starts as a processor: the SDK then makes every span itself."""

    def on_start(self, span, parent_context=None):
        self.started(span)


class Recorded:
    """The spans and metrics one test produced, read from the SDK's in-memory exporter and reader."""

    def __init__(self, exporter, reader, open_spans, tracer_provider):
        self.exporter = exporter
        self.reader = reader
        self.open_spans = open_spans
        self.tracer_provider = tracer_provider

    def spans(self, name=None):
        """Finished spans; by name, or by event for callback spans (named "event callback")."""
        spans = self.exporter.get_finished_spans()
        return [s for s in spans if name is None or name in (s.name, s.attributes.get(semconv.ATTR_EVENT))]

    def callback_spans(self):
        return [s for s in self.spans() if semconv.ATTR_EVENT in s.attributes]

    def phase_spans(self, name=None):
        return [s for s in self.spans(name) if semconv.ATTR_PHASE in s.attributes]

    def points(self, metric_name):
        """Data points of one metric, as (attributes dict, point)."""
        data = self.reader.get_metrics_data()
        found = []
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == metric_name:
                        found += [(dict(p.attributes), p) for p in metric.data.data_points]
        return found

    def durations(self):
        return self.points(semconv.METRIC_CALLBACK_DURATION)


@pytest.fixture
def trace_file(tmp_path):
    """The embedded default's file from a synthetic 2-epoch training whose callback raised."""
    from tests.test_replay import SYNTHETIC_RUN
    from tests.test_telemetry import run_python

    out = run_python(
        SYNTHETIC_RUN, {"OTEL_CALLBACKS_DIR": str(tmp_path / "otel"), "OTEL_CALLBACKS_SUMMARY": "0"}
    )
    assert out.returncode == 0, out.stderr
    (path,) = (tmp_path / "otel").glob("*.traces.jsonl")
    return path


@pytest.fixture
def settings(request):
    """Override per test with ``@pytest.mark.parametrize("settings", [...], indirect=True)``.

    Unit tests see every callback's span, the default hooks' too, and every gap phase's, so that
    trees show each event and phase; tests of those defaults themselves pass ``Settings()``.
    """
    return getattr(request, "param", Settings(default_hook_spans=True, gap_span_min=0))


@pytest.fixture(params=["direct", "sdk"])
def recorded(request, settings, monkeypatch):
    """Telemetry configured onto in-memory providers for the test, torn down after it; once with
    direct child spans (telemetry/spans.py) and once with every span made by the SDK."""
    for name in ("OTEL_CALLBACKS_ENABLED", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    direct = request.param == "direct"
    open_spans = SpanEnds() if direct else OpenSpans()
    tracer_provider.add_span_processor(open_spans)
    if direct:
        start_span = SpanStarter.start_span

        def tracked(self, *args, **kwargs):
            span = start_span(self, *args, **kwargs)
            if span.is_recording():
                open_spans.started(span)
            return span

        monkeypatch.setattr(SpanStarter, "start_span", tracked)
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], views=metric_views())
    if settings.watchdog_interval == Settings.watchdog_interval:
        # The watchdog only where a test sets its interval: else a slow call of a test's would get
        # stall spans by chance, as the watchdog's look happened to fall inside it.
        settings = replace(settings, watchdog_interval=0)
    telemetry.configure(settings, tracer_provider=tracer_provider, meter_provider=meter_provider)
    if settings.enabled and settings.direct_spans:
        assert telemetry.current().spans.direct is direct
    yield Recorded(exporter, reader, open_spans, tracer_provider)
    telemetry.shutdown()
    tracer_provider.shutdown()
    meter_provider.shutdown()


@pytest.fixture(autouse=True)
def _no_leftover_telemetry():
    yield
    telemetry.shutdown()
    logging.getLogger(semconv.LOGGER_NAME).handlers.clear()
