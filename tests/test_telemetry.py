"""configure(): existing providers, OTEL_* environment combinations, settings, the default file."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_callbacks import Settings, semconv, telemetry
from otel_callbacks.telemetry import exporter_logs, otlp_file
from otel_callbacks.telemetry.resource import process_resource

FIRE = """
import otel_callbacks
callbacks = otel_callbacks.get_default_callbacks()

class Trainer:
    epoch = 0

def user_callback(trainer):
    pass

callbacks["on_train_epoch_end"].append(user_callback)
for cb in callbacks["on_train_epoch_end"]:
    cb(Trainer())
"""


def run_python(code, env=None, timeout=60, cwd=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PYTEST"))} | (env or {})
    full_env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    full_env.setdefault("OTEL_CALLBACKS_DIR", tempfile.mkdtemp(prefix="otel-callbacks-test-"))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def test_embedded_default_writes_otlp_json_lines_parseable_into_spans(tmp_path):
    out = run_python(FIRE, {"OTEL_CALLBACKS_DIR": str(tmp_path / "otel")}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    (path,) = (tmp_path / "otel").glob("*.traces.jsonl")
    (metrics_path,) = (tmp_path / "otel").glob("*.metrics.jsonl")
    assert path.name.startswith("ultralytics-") and metrics_path.name == path.name.replace(
        ".traces.", ".metrics."
    )
    lines = path.read_text().splitlines()
    # One signal a file (a trace viewer's upload takes the traces file): opentelemetry-proto's own
    # JSON parser reads every line of each as its signal's export request, and nothing else.
    for line in lines:
        json_format.Parse(line, ExportTraceServiceRequest())
    for line in metrics_path.read_text().splitlines():
        json_format.Parse(line, ExportMetricsServiceRequest())
    requests = list(otlp_file.read_file(path)) + list(otlp_file.read_file(metrics_path))
    spans = [
        span
        for request in requests
        if hasattr(request, "resource_spans")
        for rs in request.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]
    assert [s.name for s in spans] == ["on_train_epoch_end user_callback"], "no span for the no-op default"
    first = {a.key: a.value for a in spans[0].attributes}
    assert first[semconv.ATTR_CALLBACK].string_value == "__main__.user_callback"
    assert first[semconv.ATTR_EPOCH].int_value == 1, "trainer.epoch 0 is epoch 1 for the user"
    assert len(spans[0].trace_id) == 16 and len(spans[0].span_id) == 8
    raw = json.loads(next(line for line in lines if "resourceSpans" in line))
    trace_id = raw["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"]
    assert len(trace_id) == 32 and int(trace_id, 16), "OTLP/JSON ids are hex"
    metrics = {
        m.name: m
        for request in requests
        if hasattr(request, "resource_metrics")
        for rm in request.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    histogram = metrics[semconv.METRIC_CALLBACK_DURATION].histogram
    assert sum(p.count for p in histogram.data_points) == 2
    assert list(histogram.data_points[0].explicit_bounds) == list(semconv.DURATION_BUCKETS)
    assert "otel_callbacks.flush" not in metrics, "the collection hook emits no data"
    resource = (
        {a.key: a.value.string_value for a in requests[0].resource_spans[0].resource.attributes}
        if hasattr(requests[0], "resource_spans")
        else {}
    )
    if resource:
        assert resource["service.name"] == "ultralytics"


def test_service_name_and_resource_attributes_come_from_otel_variables(tmp_path):
    env = {
        "OTEL_CALLBACKS_DIR": str(tmp_path),
        "OTEL_SERVICE_NAME": "yolo-trainer",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
    }
    assert run_python(FIRE, env).returncode == 0
    (path,) = tmp_path.glob("yolo-trainer-*.traces.jsonl")
    request = next(r for r in otlp_file.read_file(path) if hasattr(r, "resource_spans"))
    resource = {a.key: a.value for a in request.resource_spans[0].resource.attributes}
    assert resource["service.name"].string_value == "yolo-trainer"
    assert resource["deployment.environment"].string_value == "test"
    # Runs told apart in Jaeger's process section: host, pid, executable; never the command line.
    assert resource["host.name"].string_value == socket.gethostname()
    assert resource["process.pid"].int_value > 0
    assert resource["process.executable.name"].string_value == Path(sys.executable).name
    assert not [key for key in resource if key.startswith("process.command")]


def test_the_environment_wins_over_the_detected_resource(monkeypatch):
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "host.name=pod-7,process.pid=1")
    attributes = process_resource().attributes
    assert attributes["host.name"] == "pod-7" and attributes["process.pid"] == "1"


def test_console_and_none_exporters(tmp_path):
    env = {
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_CALLBACKS_DIR": str(tmp_path),
    }
    out = run_python(FIRE, env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count('"name": "on_train_epoch_end user_callback"') == 1
    assert '"name": "on_train_epoch_end"' not in out.stdout, "no span for the no-op default hook"
    assert not list(tmp_path.iterdir()), "an explicit exporter replaces the default file"


@pytest.mark.parametrize(
    ("protocol", "traces", "metrics"),
    [
        ("grpc", "127.0.0.1:{port}", "127.0.0.1:{port}"),
        ("http/protobuf", "http://127.0.0.1:{port}/v1/traces", "http://127.0.0.1:{port}/v1/metrics"),
        (None, "http://127.0.0.1:{port}/v1/traces", "http://127.0.0.1:{port}/v1/metrics"),
    ],
)
def test_otlp_exporter_follows_the_protocol_variable(monkeypatch, protocol, traces, metrics):
    """Which exporter was built, told by where it sends (gRPC: host and port; HTTP: the signal's URL)."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    if protocol:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    else:
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL", raising=False)
    tel = telemetry.configure(Settings())
    assert tel.destinations == {
        "traces": [f"otlp to {traces.format(port=port)}"],
        "metrics": [f"otlp to {metrics.format(port=port)}"],
    }
    tel.shutdown(timeout=0.5)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "OTEL_TRACES_EXPORTER",
            "jaegr",
            r"OTEL_TRACES_EXPORTER names 'jaegr'.*available: .*console",
        ),
        ("OTEL_METRICS_EXPORTER", "statsd", r"OTEL_METRICS_EXPORTER names 'statsd'"),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "http/json",
            r"'http/json' is not supported; accepted: grpc",
        ),
    ],
)
def test_invalid_exporter_settings_name_the_variable(monkeypatch, name, value, message):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        telemetry.configure(Settings())


@pytest.mark.parametrize(
    ("name", "value", "accepted"),
    [
        ("OTEL_CALLBACKS_ENABLED", "maybe", "accepted: true"),
        ("OTEL_SDK_DISABLED", "2", "accepted: true"),
        ("OTEL_CALLBACKS_BATCH_SPANS_FIRST", "-1", "integer >= 0"),
        ("OTEL_CALLBACKS_BATCH_SPANS_EVERY", "ten", "integer >= 0"),
        ("OTEL_CALLBACKS_SLOW_THRESHOLD", "0", "seconds > 0"),
        ("OTEL_CALLBACKS_SLOW_THRESHOLD", "fast", "seconds > 0"),
        ("OTEL_CALLBACKS_SHUTDOWN_TIMEOUT", "inf", "seconds > 0"),
        ("OTEL_CALLBACKS_SUMMARY", "sometimes", "accepted: true"),
    ],
)
def test_invalid_settings_raise_naming_variable_value_and_accepted(name, value, accepted):
    with pytest.raises(ValueError) as caught:
        Settings.from_env({name: value})
    message = str(caught.value)
    assert name in message and repr(value) in message and accepted in message


def test_settings_from_env():
    settings = Settings.from_env(
        {
            "OTEL_CALLBACKS_DIR": "/tmp/x",
            "OTEL_CALLBACKS_BATCH_SPANS_FIRST": "5",
            "OTEL_CALLBACKS_BATCH_SPANS_EVERY": "0",
            "OTEL_CALLBACKS_SLOW_THRESHOLD": "0.25",
            "OTEL_CALLBACKS_SUMMARY": "off",
        }
    )
    assert settings == Settings(
        output_dir=Path("/tmp/x"),
        batch_spans_first=5,
        batch_spans_every=0,
        slow_threshold=0.25,
        summary=False,
    )
    assert [settings.samples_batch(i) for i in range(7)] == [True] * 5 + [False] * 2
    assert not Settings.from_env({"OTEL_CALLBACKS_DIRECT_SPANS": "false"}).direct_spans


@pytest.mark.parametrize(("first", "every"), [(0, 0), (3, 0), (0, 1), (3, 100), (5, 3), (10, 4), (2, 7)])
def test_the_next_sampled_batch_is_the_one_samples_batch_picks(first, every):
    settings = Settings(batch_spans_first=first, batch_spans_every=every)
    for index in range(-1, 60):
        following = [i for i in range(index + 1, 200) if settings.samples_batch(i)]
        assert settings.next_sampled_batch(index) == (following[0] if following else -1), index
    assert not Settings.from_env({"OTEL_SDK_DISABLED": "true"}).enabled
    assert not Settings.from_env({"OTEL_CALLBACKS_ENABLED": "0"}).enabled


def test_invalid_setting_on_first_callback_never_breaks_training(tmp_path):
    code = FIRE + "print('trained')"
    out = run_python(code, {"OTEL_CALLBACKS_SLOW_THRESHOLD": "-3", "OTEL_CALLBACKS_DIR": str(tmp_path)})
    assert out.returncode == 0 and out.stdout.strip() == "trained"
    assert "OTEL_CALLBACKS_SLOW_THRESHOLD='-3'" in out.stderr and "telemetry disabled" in out.stderr


def test_sdk_disabled_writes_nothing_and_calls_through(tmp_path):
    out = run_python(
        FIRE + "print(type(callbacks['on_train_epoch_end'][1]).__name__)",
        {"OTEL_SDK_DISABLED": "true", "OTEL_CALLBACKS_DIR": str(tmp_path)},
    )
    assert out.returncode == 0 and out.stdout.strip() == "function"
    assert not list(tmp_path.iterdir())


APPLICATION_PROVIDERS = (
    """
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(tracer_provider)
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
"""
    + FIRE
    + """
from otel_callbacks import telemetry
assert telemetry.current().owned == [], "nothing built, nothing to shut down"
assert trace.get_tracer_provider() is tracer_provider
print(len(exporter.get_finished_spans()))
data = reader.get_metrics_data()
print(sum(p.count for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
          if m.name == "ultralytics.callback.duration" for p in m.data.data_points))
"""
)


def test_application_providers_are_used_as_they_are(tmp_path):
    out = run_python(APPLICATION_PROVIDERS, {"OTEL_CALLBACKS_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "2"], "one span (the default hook's call is counted only)"
    assert not list(tmp_path.iterdir()), "no file when the application has its providers"


def test_our_providers_never_become_global():
    from opentelemetry import trace

    telemetry.configure(Settings(output_dir=Path("/nonexistent-never-written")))
    assert type(trace.get_tracer_provider()).__name__ in ("ProxyTracerProvider", "TracerProvider")
    assert telemetry.current().owned[0] is not trace.get_tracer_provider()
    telemetry.current().owned = []


def test_exit_is_bounded_when_the_backend_never_answers():
    """A backend that accepts connections and never answers: exit waits the shutdown timeout only."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        env = {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "60000",  # unbounded exit would take a minute or more
            "OTEL_CALLBACKS_SHUTDOWN_TIMEOUT": "1",
        }
        started = time.monotonic()
        out = run_python(FIRE + "print('trained')", env, timeout=50)
        elapsed = time.monotonic() - started
    assert out.returncode == 0 and out.stdout.strip() == "trained", out.stderr
    assert elapsed < 30, f"exit took {elapsed:.1f} s"
    assert "not flushed within 1.0 s" in out.stderr


class BrokenMeterProvider:
    """A meter provider whose meters fail, as an incompatible SDK's would."""

    def get_meter(self, *args, **kwargs):
        raise RuntimeError("this SDK cannot make a meter")


def test_a_telemetry_that_cannot_start_leaves_every_callback_running(caplog):
    from opentelemetry.sdk.trace import TracerProvider

    from tests.engines import DetectionTrainer

    telemetry.shutdown()  # the first callback configures it
    trainer, calls = DetectionTrainer(), []
    trainer.add_callback("on_train_epoch_end", lambda t: calls.append(t.epoch))
    original = telemetry.providers.configure

    def configure_broken(settings=None, **kwargs):
        if settings is not None and not settings.enabled:
            return original(settings)
        return original(settings, tracer_provider=TracerProvider(), meter_provider=BrokenMeterProvider())

    telemetry.providers.configure = configure_broken
    try:
        for _ in range(3):
            trainer.run_callbacks("on_train_epoch_end")
    finally:
        telemetry.providers.configure = original
    assert calls == [0, 0, 0], "the user's callback ran every time"
    assert not telemetry.current().enabled, "the layer disabled itself"
    disabled = [r for r in caplog.records if "telemetry disabled" in r.getMessage()]
    assert len(disabled) == 1 and "cannot make a meter" in disabled[0].getMessage()


def test_an_export_failure_is_logged_once_with_one_note_under_two_telemetries_filters(caplog):
    """Two telemetries' filters on the exporters' loggers (one shutting down as the next starts)."""
    counts = []
    logger = logging.getLogger("tests.exporter")  # alone: other tests' telemetries filter the real ones
    filters = [exporter_logs.OncePerKind(lambda n=n: counts.append(n)) for n in (1, 2)]
    try:
        for once in filters:
            logger.addFilter(once)
        with caplog.at_level(logging.WARNING, logger=logger.name):
            for _ in range(3):
                logger.warning("Failed to export %s", "spans")
    finally:
        for once in filters:
            logger.removeFilter(once)
    (record,) = caplog.records
    assert record.getMessage().count("logged once") == 1
    assert sorted(counts) == [1, 1, 1, 2], "each counted once (a suppressed record stops at the first)"
