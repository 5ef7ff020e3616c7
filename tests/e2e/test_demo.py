"""The README's main job: ``otel-callbacks demo`` trains, validates, predicts, exports, and says where
each signal went."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.e2e.test_report import ARTIFACTS, browser_available, open_page
from tests.e2e.test_ultralytics import spans_in


def demo(tmp_path, env=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "otel_callbacks", "demo", "--epochs", "1", "--dir", "demo"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_demo_runs_offline_and_keeps_everything_under_its_dir(tmp_path):
    out = demo(tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "trained 1 epoch," in out.stdout
    assert "otel_callbacks: train run took" in out.stdout, "the training's table"
    assert "otel_callbacks: 3 short runs since" in out.stdout, "the others' summary, before the demo's end"
    for mode in ("val", "predict", "export"):
        assert re.search(rf"^  {mode} +1 ", out.stdout, re.M), mode
    assert out.stdout.index("short runs since") < out.stdout.index("otel_callbacks demo: trained")
    (path,) = re.findall(r"traces: file (\S+) \(written\)", out.stdout)
    (metrics,) = re.findall(r"metrics: file (\S+) \(written\)", out.stdout)
    assert path.endswith(".traces.jsonl") and metrics == path.replace(".traces.", ".metrics."), "a file each"
    assert Path(path).parent == tmp_path / "demo" / "otel"
    assert (
        f"otel-callbacks send {Path(path).parent}" in out.stdout
        and "OTEL_EXPORTER_OTLP_ENDPOINT=" in out.stdout
    )
    roots = Counter(s.name for s in spans_in(tmp_path / "demo" / "otel") if not s.parent_span_id)
    assert roots == {"train": 1, "val": 1, "predict": 1, "export": 1}
    assert (tmp_path / "demo" / "runs" / "train" / "weights" / "best.torchscript").is_file()
    assert f"report: {tmp_path / 'demo' / 'report.html'} (open it in a browser)" in out.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"], "nothing written outside --dir"

    browser_available()  # the report of the training: its loss and metric curves, offline
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    errors, external, shown = open_page(
        tmp_path / "demo" / "report.html", ARTIFACTS / "report-demo.png", click=None
    )
    assert errors == [] and external == [], (errors, external)
    assert shown["runs"][0] == "train" and {"run0-losses", "run0-metrics"} <= set(shown["plots"])
    assert {"train.box_loss", "train.cls_loss", "metrics.mAP50-95_B", "fitness"} <= set(shown["legends"])


def test_demo_says_when_a_backend_did_not_get_the_traces(tmp_path):
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",  # the discard port: refused
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
        "OTEL_CALLBACKS_SHUTDOWN_TIMEOUT": "3",
    }
    out = demo(tmp_path, env)
    assert out.returncode == 1, out.stderr[-3000:]
    assert re.search(r"traces: otlp to http://127.0.0.1:9/v1/traces \(NOT delivered", out.stdout), out.stdout
    (path,) = re.findall(r"metrics: file (\S+) \(written\)", out.stdout)
    assert "trace and metrics" not in out.stdout and "otel-callbacks send" not in out.stdout
    assert Path(path).is_file()


def test_demo_rejects_zero_epochs():
    out = subprocess.run(
        [sys.executable, "-m", "otel_callbacks", "demo", "--epochs", "0"], capture_output=True, text=True
    )
    assert out.returncode == 2 and "--epochs must be at least 1, got 0" in out.stderr


def test_the_readme_offline_example_trains(tmp_path):
    from tests.test_readme import python_block
    from tests.test_telemetry import run_python

    code = python_block("Use with Ultralytics", 1)
    assert "coco8" not in code and "yolo11n.yaml" in code
    out = run_python(code, {"OTEL_CALLBACKS_SUMMARY": "false"}, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "work" / "runs" / "train" / "weights" / "best.pt").is_file()
