"""Backend faults never harm a training: down at start, killed mid-run (the real Jaeger too), silent,
back after a pause.

Each case is a real training in a subprocess exporting over OTLP to a socket this test controls.
In every case: the same results as an uninstrumented training, no callback ever waits on export,
exit within the shutdown timeout, each kind of export failure logged once.
"""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.e2e.backends import free_port, wait_until
from tests.e2e.jaeger import jaeger
from tests.otlp_receiver import Receiver

EPOCHS = 4
SHUTDOWN_TIMEOUT = 2.0

TRAIN = """
import json, sys, time
import otel_callbacks
otel_callbacks.install()
from ultralytics import YOLO

def progress(trainer):
    print(f"EPOCH {trainer.epoch}", flush=True)
    time.sleep(0.6)  # room for the test to act between epochs

model = YOLO("yolo11n.yaml")
model.add_callback("on_train_epoch_end", progress)
model.train(data=sys.argv[1], epochs=int(sys.argv[2]), project=sys.argv[3], name="run", imgsz=32, batch=4,
            device="cpu", workers=0, seed=0, deterministic=True, amp=False, plots=False, exist_ok=True)
report = otel_callbacks.tracing.current_tracker().last_report if otel_callbacks.telemetry.current() else None
print("RESULT " + json.dumps({"worst_overhead_ns": report.worst_overhead_ns if report else 0}), flush=True)
print("DONE", flush=True)
"""


class Training:
    """The training subprocess, read line by line so the test can act on its progress."""

    def __init__(self, data: Path, project: Path, env: dict[str, str]):
        self.project = project
        self.proc = subprocess.Popen(
            [sys.executable, "-c", TRAIN, str(data), str(EPOCHS), str(project)],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []

    def until(self, marker: str, timeout: float = 240) -> None:
        def seen():
            line = self.proc.stdout.readline()
            self.lines.append(line)
            return line.startswith(marker) or (not line and self.proc.poll() is not None and "EOF")

        assert wait_until(seen, timeout, marker, 0) != "EOF", (
            f"exited before {marker}: {self.proc.stderr.read()}"
        )

    def finish(self) -> dict:
        self.until("DONE")
        done = time.monotonic()
        self.proc.wait(60)
        self.exit_s = time.monotonic() - done
        self.stderr = self.proc.stderr.read()
        assert self.proc.returncode == 0, self.stderr[-3000:]
        result = next(line for line in self.lines if line.startswith("RESULT "))
        return json.loads(result[len("RESULT ") :])

    def results(self) -> list[dict]:
        with open(self.project / "run" / "results.csv") as f:
            return [
                {k.strip(): v for k, v in row.items() if k.strip() != "time"} for row in csv.DictReader(f)
            ]


def otlp_env(endpoint: str, protocol: str = "grpc") -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2",  # seconds per export, retries included
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "OTEL_CALLBACKS_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
        "OTEL_CALLBACKS_SUMMARY": "false",
    }


@pytest.fixture(scope="module")
def baseline(data, tmp_path_factory):
    training = Training(data, tmp_path_factory.mktemp("baseline"), {"OTEL_SDK_DISABLED": "true"})
    training.finish()
    return training.results()


def export_failure_lines(stderr: str) -> list[str]:
    return [
        line for line in stderr.splitlines() if re.search(r"export|Export", line) and "Traceback" not in line
    ]


def check_fault_handled(training: Training, result: dict, baseline: list[dict]) -> None:
    check_unharmed(training, result, baseline)
    check_logged_once(training)


def check_unharmed(training: Training, result: dict, baseline: list[dict]) -> None:
    assert training.results() == baseline, "same results as without instrumentation"
    # A training thread that waited on an export would show the exporter's timeout (2 s) here.
    assert result["worst_overhead_ns"] < 0.5e9, result
    assert training.exit_s < SHUTDOWN_TIMEOUT + 5, f"exit took {training.exit_s:.1f} s"


def check_logged_once(training: Training) -> None:
    lines = export_failure_lines(training.stderr)
    assert lines, "the failure is reported"
    assert len(lines) <= 4, "\n".join(lines)  # one line per kind of failure, not one per span
    assert all("logged once" in line for line in lines if "Failed to export" in line or "Transient" in line)


def test_backend_not_running_at_start(data, tmp_path, baseline):
    training = Training(data, tmp_path, otlp_env(f"http://127.0.0.1:{free_port()}"))
    result = training.finish()
    check_fault_handled(training, result, baseline)


def test_backend_killed_mid_run(data, tmp_path, baseline):
    receiver = Receiver()
    training = Training(data, tmp_path, otlp_env(f"http://127.0.0.1:{receiver.port}"))
    try:
        training.until("EPOCH 0")
        assert receiver.wait(lambda: receiver.traces, 20), "spans arrive while the backend is up"
        receiver.stop()
        result = training.finish()
    finally:
        receiver.stop()
    check_fault_handled(training, result, baseline)


def test_jaeger_stopped_mid_run(data, tmp_path, baseline):
    service = f"stopped-{uuid.uuid4().hex[:8]}"
    env = otlp_env("") | {"OTEL_METRICS_EXPORTER": "none", "OTEL_SERVICE_NAME": service}  # traces only
    training = None
    try:
        with jaeger(tmp_path) as server:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{server.grpc_port}"
            training = Training(data, tmp_path, env)
            training.until("EPOCH 0")
            wait_until(lambda: server.traces(service), 20, "spans in Jaeger while it runs")
        result = training.finish()  # Jaeger stopped: the rest of the run is exported into the void
    finally:
        if training is not None and training.proc.poll() is None:
            training.proc.kill()
    check_fault_handled(training, result, baseline)


def test_backend_that_accepts_and_never_answers(data, tmp_path, baseline):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)  # the kernel completes handshakes; nothing ever reads or answers
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        training = Training(data, tmp_path, otlp_env(endpoint, "http/protobuf"))
        result = training.finish()
    check_fault_handled(training, result, baseline)


def test_backend_back_after_a_pause(data, tmp_path, baseline):
    port = free_port()
    training = Training(data, tmp_path, otlp_env(f"http://127.0.0.1:{port}"))
    training.until("EPOCH 1")  # two epochs exported into the void
    receiver = Receiver(port)
    try:
        result = training.finish()
        assert receiver.wait(lambda: any(s.name == "train" for s in receiver.spans()), 20)
        names = {s.name for s in receiver.spans()}
        assert {"train", "cleanup", "final_eval"} <= names, "spans after recovery arrive"
        epochs = {
            a.value.int_value
            for s in receiver.spans()
            if s.name == "epoch"
            for a in s.attributes
            if a.key == "ultralytics.epoch"
        }
        assert EPOCHS in epochs, "the last epoch (counted from 1)"
        assert "ultralytics.callback.duration" in receiver.metric_names()
    finally:
        receiver.stop()
    check_fault_handled(training, result, baseline)
