"""A real inference loop: a few hundred ``model.predict()`` calls on one thread, then several threads
predicting at once, in a subprocess with the embedded default: quiet until exit, then one summary; the
traces file rotated under its cap; every call counted in the metrics; one tree per traced call."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict

import pytest

from otel_callbacks import semconv as sc
from otel_callbacks.apps.send import spans as request_spans
from otel_callbacks.telemetry import otlp_file

pytest.importorskip("ultralytics")

LOOP = """
import sys, threading
from pathlib import Path
import numpy as np
from otel_callbacks.apps.demo import prepare_offline

prepare_offline(Path(sys.argv[1]) / "config")
import otel_callbacks
otel_callbacks.install()
from ultralytics import YOLO

image = np.full((64, 64, 3), 114, dtype=np.uint8)  # no random generator: Ultralytics seeds them

def loop(calls):
    model = YOLO("yolo11n.yaml")
    for _ in range(calls):
        model.predict(image, imgsz=64, device="cpu", verbose=False)

loop(int(sys.argv[2]))
workers = [threading.Thread(target=loop, args=(int(sys.argv[4]),)) for _ in range(int(sys.argv[3]))]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
print("LOOP-DONE", flush=True)
"""

CALLS, THREADS, THREAD_CALLS = 300, 3, 20
CAP = 100_000  # the loop writes several times that (lines of 0.1 s of spans, well under it)


def test_a_predict_loop_is_quiet_bounded_and_fully_counted(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env |= {"OTEL_CALLBACKS_DIR": str(tmp_path / "otel"), "OTEL_CALLBACKS_FILE_MAX_BYTES": str(CAP)}
    env |= {
        "OTEL_CALLBACKS_FILE_BACKUPS": "1",
        "OTEL_BSP_MAX_QUEUE_SIZE": "100000",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    args = [str(tmp_path), str(CALLS), str(THREADS), str(THREAD_CALLS)]
    out = subprocess.run(
        [sys.executable, "-c", LOOP, *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    total = CALLS + THREADS * THREAD_CALLS

    during, _, after = out.stdout.partition("LOOP-DONE\n")
    assert "otel_callbacks" not in during, "nothing from otel_callbacks while the loop runs"
    summary = after.strip().splitlines()
    assert summary[0].startswith(f"otel_callbacks: {total} short runs since"), after
    assert summary[2].split()[:2] == ["predict", str(total)] and summary[2].split()[-1] == "0"
    assert len(summary) == 3, "one summary, one kind"

    otel = tmp_path / "otel"
    (traces,) = otel.glob("*.traces.jsonl")
    rotated = otlp_file.rotated_files(traces)
    assert len(rotated) == 1, "rotated, one backup kept"
    assert all(path.stat().st_size <= CAP for path in [traces, *rotated])
    assert out.stderr.count("OTEL_CALLBACKS_FILE_MAX_BYTES") == 1, "the dropped data said once"

    (metrics,) = otel.glob("*.metrics.jsonl")
    predict_runs = sum(
        point.count
        for request in otlp_file.read_file(metrics)
        for rm in request.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == sc.METRIC_PHASE_DURATION
        for point in metric.histogram.data_points
        if {kv.key: kv.value.string_value for kv in point.attributes}[sc.ATTR_PHASE] == sc.PHASE_PREDICT
    )
    assert predict_runs == total, "the latency histogram counts every call"

    by_trace = defaultdict(list)
    for request in otlp_file.read_file(traces):
        for span in request_spans(request):
            by_trace[span.context.trace_id].append(span)
    whole = [spans for spans in by_trace.values() if any(s.parent is None for s in spans)]
    assert len(whole) >= THREADS * THREAD_CALLS, "the threads' calls (the newest) are all in the files"
    for spans in whole:
        ids = {s.context.span_id for s in spans}
        (root,) = [s for s in spans if s.parent is None]
        assert root.name == sc.PHASE_PREDICT and len({s.context.span_id for s in spans}) == len(spans)
        assert all(s.parent.span_id in ids for s in spans if s is not root), "one tree per call"
        assert [s.name for s in spans].count(sc.PHASE_PREDICT_BATCH) == 1
