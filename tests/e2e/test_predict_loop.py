"""Real inference loops in a subprocess with the embedded default: a few hundred ``model.predict()``
calls, quiet until exit and then one summary, every call counted in the metrics, the traces sampled
with every slow or failed call kept; and, every run traced, threads predicting at once with the
traces file rotated under its cap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict

import pytest
from opentelemetry.trace import StatusCode

from otel_callbacks import semconv as sc
from otel_callbacks.apps.send import spans as request_spans
from otel_callbacks.telemetry import otlp_file

pytest.importorskip("ultralytics")

LOOP = """
import json, sys, threading, time
from pathlib import Path
import numpy as np
from otel_callbacks.apps.demo import prepare_offline

plan = json.loads(sys.argv[1])
prepare_offline(Path(plan["workdir"]) / "config")
import otel_callbacks
otel_callbacks.install()
from ultralytics import YOLO

image = np.full((64, 64, 3), 114, dtype=np.uint8)  # no random generator: Ultralytics seeds them

def loop(calls, slow=(), failing=()):
    model, call = YOLO("yolo11n.yaml"), [0]

    def postprocess(predictor):
        if call[0] in slow:
            time.sleep(0.3)
        if call[0] in failing:
            raise RuntimeError("a callback failed")

    model.add_callback("on_predict_postprocess_end", postprocess)
    for call[0] in range(calls):
        try:
            model.predict(image, imgsz=64, device="cpu", verbose=False)
        except RuntimeError:
            print("FAILED", call[0], flush=True)

loop(plan["calls"], plan["slow"], plan["failing"])
workers = [threading.Thread(target=loop, args=(plan["thread_calls"],)) for _ in range(plan["threads"])]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
print("LOOP-DONE", flush=True)
"""


def predict_loop(tmp_path, env=(), calls=300, slow=(), failing=(), threads=0, thread_calls=0):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    environment |= {"OTEL_CALLBACKS_DIR": str(tmp_path / "otel"), "OTEL_BSP_MAX_QUEUE_SIZE": "100000"}
    environment |= dict(env)
    plan = {"workdir": str(tmp_path), "calls": calls, "slow": list(slow), "failing": list(failing)}
    plan |= {"threads": threads, "thread_calls": thread_calls}
    out = subprocess.run(
        [sys.executable, "-c", LOOP, json.dumps(plan)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def traces(path):
    by_trace = defaultdict(list)
    for request in otlp_file.read_file(path):
        for span in request_spans(request):
            by_trace[span.context.trace_id].append(span)
    return by_trace


def one_tree(spans):
    ids = {s.context.span_id for s in spans}
    (root,) = [s for s in spans if s.parent is None]
    assert root.name == sc.PHASE_PREDICT and len(ids) == len(spans), "one root, no span id twice"
    assert all(s.parent.span_id in ids for s in spans if s is not root), "no orphans"
    return root


def test_a_predict_loop_is_quiet_counted_and_keeps_every_slow_or_failed_trace(tmp_path):
    slow, failing = (100, 200), (150,)
    env = {"OTEL_CALLBACKS_SLOW_THRESHOLD": "0.2", "OTEL_CALLBACKS_PREDICT_TRACES_INTERVAL": "3600"}
    out = predict_loop(tmp_path, env, calls=300, slow=slow, failing=failing)

    during, _, after = out.stdout.partition("LOOP-DONE\n")
    assert "otel_callbacks" not in during, "nothing from otel_callbacks while the loop runs"
    assert during.count("FAILED") == 1, "the callback's exception reached the loop"
    summary = after.strip().splitlines()
    assert summary[0].startswith("otel_callbacks: 300 short runs since") and len(summary) == 3, after
    assert summary[2].split()[:2] == ["predict", "300"] and summary[2].split()[-1] == "1", "one failure"

    otel = tmp_path / "otel"
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
    assert predict_runs == 300, "the latency histogram counts every call"

    (path,) = otel.glob("*.traces.jsonl")
    roots = sorted((one_tree(spans) for spans in traces(path).values()), key=lambda r: r.start_time)
    assert len(roots) == 10 + len(slow) + len(failing), "the first ten, and every slow or failed call"
    kept = {r.context.trace_id: r for r in roots[10:]}
    statuses = [r.status.status_code for r in roots[10:]]
    assert statuses == [StatusCode.UNSET, StatusCode.ERROR, StatusCode.UNSET], "in their order"
    for trace_id, spans in traces(path).items():
        if trace_id in kept and kept[trace_id].status.status_code is StatusCode.UNSET:
            slow_spans = [s for s in spans if s.attributes.get(sc.ATTR_SLOW)]
            assert [s.attributes[sc.ATTR_EVENT] for s in slow_spans] == ["on_predict_postprocess_end"]


def test_threads_predicting_keep_one_tree_per_call_in_a_file_rotated_under_its_cap(tmp_path):
    cap = 200_000  # the loop writes several times that, in lines of 0.1 s of spans (well under it)
    env = {"OTEL_CALLBACKS_PREDICT_TRACES_INTERVAL": "0", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    env |= {"OTEL_CALLBACKS_FILE_MAX_BYTES": str(cap), "OTEL_CALLBACKS_FILE_BACKUPS": "1"}
    threads, thread_calls = 3, 20
    out = predict_loop(tmp_path, env, calls=300, threads=threads, thread_calls=thread_calls)

    (path,) = (tmp_path / "otel").glob("*.traces.jsonl")
    rotated = otlp_file.rotated_files(path)
    assert len(rotated) == 1, "rotated, one backup kept"
    assert all(p.stat().st_size <= cap for p in [path, *rotated])
    assert out.stderr.count("OTEL_CALLBACKS_FILE_MAX_BYTES") == 1, "the dropped data said once"

    whole = [spans for spans in traces(path).values() if any(s.parent is None for s in spans)]
    assert len(whole) >= threads * thread_calls, "the threads' calls (the newest) are all in the files"
    for spans in whole:
        one_tree(spans)
        assert [s.name for s in spans].count(sc.PHASE_PREDICT_BATCH) == 1
