"""``otel-callbacks send``: the embedded default's file replayed into an OTLP backend, tree intact."""

from __future__ import annotations

import subprocess
import sys

import pytest

from otel_callbacks.apps.cli import main
from otel_callbacks.telemetry import otlp_file
from tests.otlp_receiver import Receiver

SYNTHETIC_RUN = """
from tests.engines import DetectionTrainer, run_train

trainer = DetectionTrainer()
def fails(t):
    if t.epoch == 1:
        raise ValueError("bad epoch")
trainer.add_callback("on_train_epoch_end", fails)
try:
    run_train(trainer, epochs=2, batches=2)
except ValueError:
    pass
"""


def file_spans(path):
    return {
        s.span_id: s
        for r in otlp_file.read_file(path)
        if hasattr(r, "resource_spans")
        for rs in r.resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    }


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.stop()


def test_send_replays_the_file_into_otlp_grpc_with_the_tree_intact(trace_file, receiver, monkeypatch, capsys):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    expected = file_spans(trace_file)
    assert main(["send", str(trace_file.parent)]) == 0  # the run's traces file and its metrics file
    out = capsys.readouterr().out
    assert f"traces: {len(expected)} spans read from 2 files, {len(expected)} exported to otlp" in out
    received = {s.span_id: s for s in receiver.spans()}
    assert received.keys() == expected.keys()
    for span_id, span in expected.items():
        got = received[span_id]
        assert (got.name, got.trace_id, got.parent_span_id, got.kind) == (
            span.name,
            span.trace_id,
            span.parent_span_id,
            span.kind,
        )
        assert (got.start_time_unix_nano, got.end_time_unix_nano) == (
            span.start_time_unix_nano,
            span.end_time_unix_nano,
        )
        assert got.attributes == span.attributes and got.status == span.status
        assert [e.name for e in got.events] == [e.name for e in span.events]
    errors = [s for s in received.values() if s.status.code == 2]
    assert {s.name for s in errors} >= {"on_train_epoch_end fails", "train"}
    assert "ultralytics.callback.duration" in receiver.metric_names()


def test_send_reports_a_backend_that_is_down(trace_file, monkeypatch, capsys):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")  # seconds, as the Python exporters read it
    assert main(["send", str(trace_file)]) == 1
    err = capsys.readouterr().err
    assert "traces: " in err and "export calls failed" in err


def test_send_names_a_missing_file(capsys):
    assert main(["send", "/nonexistent/trace.jsonl"]) == 2
    assert "no such file, or no *.jsonl under it: /nonexistent/trace.jsonl" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "otel_callbacks", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "demo" in out.stdout and "send" in out.stdout
