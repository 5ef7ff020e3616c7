"""OTLP over gRPC and HTTP/protobuf, configured only by OTEL_EXPORTER_OTLP_* variables, into real
backends: the rotel collector relaying to a receiver, and Arize Phoenix as the trace store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from otel_callbacks import semconv as sc
from tests.e2e.backends import free_port, phoenix, phoenix_spans, rotel, wait_until
from tests.otlp_receiver import Receiver
from tests.test_replay import SYNTHETIC_RUN, file_spans

ROOT = Path(__file__).resolve().parents[2]


def child_env(env: dict[str, str]) -> dict[str, str]:
    """A child's environment: this one's but its OTEL_ variables, then ``env``; this checkout first."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return inherited | env | {"PYTHONPATH": str(ROOT)}


def run(code: str, env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", code, *args]
    out = subprocess.run(command, env=child_env(env), capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.stop()


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_traces_and_metrics_through_rotel(receiver, tmp_path, protocol):
    with rotel(tmp_path, f"http://127.0.0.1:{receiver.port}") as (grpc_port, http_port):
        base = f"http://127.0.0.1:{grpc_port if protocol == 'grpc' else http_port}"
        suffix = {"traces": "/v1/traces", "metrics": "/v1/metrics"} if protocol != "grpc" else {}
        env = {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            # the general endpoint goes nowhere: only the per-signal overrides reach rotel
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": base + suffix.get("traces", ""),
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": base + suffix.get("metrics", ""),
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=yolo,authorization=Bearer%20not-a-secret",
            "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "5",
            "OTEL_SERVICE_NAME": "rotel-e2e",
            "OTEL_CALLBACKS_SUMMARY": "false",
        }
        run(SYNTHETIC_RUN, env)
        assert receiver.wait(lambda: any(s.name == "train" for s in receiver.spans()), 30), "relayed traces"
        assert receiver.wait(lambda: "ultralytics.callback.duration" in receiver.metric_names(), 30), (
            "metrics"
        )
    names = [s.name for s in receiver.spans()]
    assert names.count("epoch") == 2 and names.count("train") == 1  # the run fails in epoch 1
    failed = [s for s in receiver.spans() if s.name == "on_train_epoch_end fails" and s.status.code == 2]
    assert len(failed) == 1 and failed[0].status.message == "ValueError: bad epoch"
    resource = {a.key: a.value.string_value for a in receiver.traces[0].resource_spans[0].resource.attributes}
    assert resource["service.name"] == "rotel-e2e"
    assert {"ultralytics.callback.duration", "ultralytics.phase.duration"} <= receiver.metric_names()


def test_headers_reach_the_backend(receiver):
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-tenant=yolo",
        "OTEL_CALLBACKS_SUMMARY": "false",
    }
    run(SYNTHETIC_RUN, env)
    assert receiver.traces and all(h.get("x-tenant") == "yolo" for h in receiver.headers)


@pytest.fixture(scope="module")
def phoenix_url(tmp_path_factory):
    with phoenix(tmp_path_factory.mktemp("phoenix")) as url:
        yield url


REAL_TRAINING = """
import json, sys
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
import otel_callbacks
from otel_callbacks import telemetry

otel_callbacks.install()
tel = telemetry.ensure_configured()
memory = InMemorySpanExporter()
tel.owned[0].add_span_processor(SimpleSpanProcessor(memory))  # what this run's spans really were

from ultralytics import YOLO

def crash(trainer):
    raise RuntimeError("uploader down")

model = YOLO("yolo11n.yaml")
model.add_callback("on_train_end", crash)
try:
    model.train(data=sys.argv[1], epochs=1, imgsz=32, batch=4, device="cpu", workers=0, plots=False,
                project=sys.argv[2], name=sys.argv[4] if len(sys.argv) > 4 else "phoenix", exist_ok=True)
except RuntimeError as error:
    assert str(error) == "uploader down"
telemetry.shutdown()
json.dump([{
    "span_id": format(s.context.span_id, "016x"),
    "trace_id": format(s.context.trace_id, "032x"),
    "parent_id": format(s.parent.span_id, "016x") if s.parent else None,
    "name": s.name,
    "attributes": dict(s.attributes),
    "status_code": s.status.status_code.name,
    "status_message": s.status.description or "",
    "events": [e.name for e in s.events],
} for s in memory.get_finished_spans()], open(sys.argv[3], "w"))
"""


def assert_same_tree(phoenix: list[dict], expected: list[dict]) -> None:
    """Phoenix holds the spans as the SDK made them, and beside them only the records of the long
    phases that were open at an export, each a zero-length child of its phase, named as such."""
    got = {s["context"]["span_id"]: s for s in phoenix if sc.ATTR_OPEN not in s["attributes"]}
    assert got.keys() == {s["span_id"] for s in expected}
    for record in (s for s in phoenix if sc.ATTR_OPEN in s["attributes"]):
        phase = got[record["parent_id"]]
        assert record["name"] == phase["name"] + sc.OPEN_SUFFIX
        start, end = (datetime.fromisoformat(record[t]) for t in ("start_time", "end_time"))
        assert record["start_time"] == phase["start_time"] and end - start <= timedelta(microseconds=1)
    for want in expected:
        span = got[want["span_id"]]
        assert span["name"] == want["name"]
        assert span["context"]["trace_id"] == want["trace_id"]
        assert span["parent_id"] == want["parent_id"]
        assert span["status_code"] == want["status_code"]
        assert span["status_message"] == want["status_message"]
        assert span["attributes"] == want["attributes"], span["name"]
        assert [e["name"] for e in span["events"]] == want["events"]


def test_real_training_tree_in_phoenix_matches_the_in_memory_exporter(phoenix_url, data, tmp_path):
    project = f"yolo-{uuid.uuid4().hex[:8]}"
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",  # Phoenix stores traces only
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": phoenix_url,
        "OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={project}",
        "OTEL_BSP_MAX_QUEUE_SIZE": "100000",
        "OTEL_CALLBACKS_SUMMARY": "false",
    }
    dump = tmp_path / "memory.json"
    run(REAL_TRAINING, env, str(data), str(tmp_path / "runs"), str(dump))
    expected = json.loads(dump.read_text())
    assert len(expected) > 20
    spans = wait_until(
        lambda: (s := phoenix_spans(phoenix_url, project)) and has_ids(s, expected) and s,
        60,
        "Phoenix to store every span",
    )
    assert_same_tree(spans, expected)
    live = [s["name"] for s in spans if sc.ATTR_OPEN in s["attributes"]]
    assert {"train (in progress)", "epoch (in progress)"} <= set(live), "the long phases seen while open"
    spans = [s for s in spans if s["name"] not in live]
    (failed,) = [s for s in spans if s["status_code"] == "ERROR" and s["name"] == "on_train_end crash"]
    assert failed["status_message"] == "RuntimeError: uploader down"
    assert [e["name"] for e in failed["events"]] == ["exception"]
    (root,) = [s for s in spans if s["parent_id"] is None]
    assert root["name"] == "train", "one tree"
    assert root["status_code"] == "ERROR" and root["status_message"] == "RuntimeError: uploader down"
    assert [e["name"] for e in root["events"]] == ["exception"], "the crash is on the root, with its callback"
    assert root["attributes"]["ultralytics.untraced_s"] >= 0, "the attributes arrive"
    (epoch,) = [s for s in spans if s["name"] == "epoch"]
    assert epoch["attributes"]["ultralytics.train.box_loss"] >= 0, "results on the epoch span"


def has_ids(phoenix: list[dict], expected: list[dict]) -> bool:
    return {s["context"]["span_id"] for s in phoenix} >= {s["span_id"] for s in expected}


def as_phoenix_expects(span) -> dict:
    """An OTLP protobuf span in the shape :func:`assert_same_tree` compares."""
    return {
        "span_id": span.span_id.hex(),
        "trace_id": span.trace_id.hex(),
        "parent_id": span.parent_span_id.hex() or None,
        "name": span.name,
        "attributes": {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in span.attributes},
        "status_code": ["UNSET", "OK", "ERROR"][span.status.code],
        "status_message": span.status.message,
        "events": [e.name for e in span.events],
    }


def test_send_replays_the_default_file_into_phoenix(phoenix_url, tmp_path):
    project = f"replay-{uuid.uuid4().hex[:8]}"
    run(
        SYNTHETIC_RUN,
        {
            "OTEL_CALLBACKS_DIR": str(tmp_path),
            "OTEL_CALLBACKS_SUMMARY": "false",
            "OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={project}",
        },
    )
    (path,) = tmp_path.glob("*.traces.jsonl")
    expected = [as_phoenix_expects(span) for span in file_spans(path).values()]
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": phoenix_url,
    }
    out = run("from otel_callbacks.apps.cli import main; raise SystemExit(main())", env, "send", str(path))
    assert f"{len(expected)} spans" in out.stdout
    spans = wait_until(
        lambda: (s := phoenix_spans(phoenix_url, project)) and len(s) == len(expected) and s,
        60,
        "Phoenix to store the replayed spans",
    )
    assert_same_tree(spans, expected)
