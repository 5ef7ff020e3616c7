"""The README's main job: ``otel-callbacks demo`` trains, validates, predicts, exports, and says where
the trace is."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.e2e.test_ultralytics import spans_in


def test_demo_runs_offline_and_leaves_a_trace_file(tmp_path):
    env = {**os.environ, "OTEL_CALLBACKS_DIR": str(tmp_path / "otel")}
    out = subprocess.run(
        [sys.executable, "-m", "otel_callbacks", "demo", "--epochs", "1", "--dir", str(tmp_path / "demo")],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    for mode in ("train", "val", "predict", "export"):
        assert f"otel_callbacks: {mode} run took" in out.stdout, mode
    (path,) = re.findall(r"trace and metrics \(OTLP/JSON lines\): (\S+)", out.stdout)
    assert Path(path).parent == tmp_path / "otel"
    assert "OTEL_EXPORTER_OTLP_ENDPOINT=" in out.stdout and f"otel-callbacks send {path}" in out.stdout
    roots = Counter(s.name for s in spans_in(tmp_path / "otel") if not s.parent_span_id)
    assert roots == {"train": 1, "val": 1, "predict": 1, "export": 1}
    assert (tmp_path / "demo" / "runs" / "train" / "weights" / "best.torchscript").is_file()


def test_demo_rejects_zero_epochs():
    out = subprocess.run(
        [sys.executable, "-m", "otel_callbacks", "demo", "--epochs", "0"], capture_output=True, text=True
    )
    assert out.returncode == 2 and "--epochs must be at least 1, got 0" in out.stderr
