"""``model.tune(use_ray=True)`` on a real local Ray cluster (started by the script on 127.0.0.1, two
CPUs): one trace, a trial span per trial with its config, its reported metric and how it ended, each
trial's training under it, the trial id on the worker's resource. If the cluster cannot start, the
test fails: ``ray[tune]`` is a test dependency."""

from __future__ import annotations

import pytest
from opentelemetry.trace import StatusCode

from otel_callbacks import semconv as sc
from otel_callbacks.apps import report as otel_report
from tests.e2e.test_sweeps import children, one_root, run
from tests.e2e.test_training_faults import file_tree

pytest.importorskip("ultralytics")

RAY_TUNE = """
import sys
import ray
import otel_callbacks
otel_callbacks.install()
from ray import tune
from ultralytics import YOLO
ray.init(num_cpus=2, include_dashboard=False, runtime_env=otel_callbacks.ray_runtime_env())
YOLO("yolo11n.yaml").tune(use_ray=True, iterations=2, space={"lr0": tune.uniform(1e-3, 1e-2)}, grace_period=1,
    search_alg="random", data=sys.argv[1], epochs=2, project=sys.argv[2], name="tune", imgsz=32, batch=4,
    device="cpu", workers=0, plots=False, exist_ok=True, seed=0)
print("SWEPT", flush=True)
"""


def test_a_ray_tune_sweep_is_one_trace_with_a_trial_span_each(data, tmp_path):
    stdout = run(RAY_TUNE, str(data), str(tmp_path / "runs"), tmp_path=tmp_path, RAY_USAGE_STATS_ENABLED="0")
    assert "SWEPT" in stdout
    tree = file_tree(tmp_path / "otel")
    root = one_root(tree, sc.PHASE_TUNE)
    assert root.status.status_code is StatusCode.UNSET
    assert root.attributes[sc.ATTR_TUNE_SPACE] == ("lr0",)
    trials = children(tree, root, sc.PHASE_TRIAL)
    assert len(trials) == 2
    ids = {t.attributes[sc.ATTR_TRIAL_ID] for t in trials}
    assert len(ids) == 2 and root.attributes[sc.ATTR_TUNE_BEST_TRIAL] in ids
    for trial in trials:
        assert 1e-3 <= trial.attributes[sc.HYPERPARAMETER_PREFIX + "lr0"] <= 1e-2, "its config"
        assert sc.result_attribute("metrics/mAP50-95(B)") in trial.attributes, "its reported metric"
        # Ray ends each trial at the scheduler's max_t (the planned epochs): completed, not failed.
        assert trial.attributes[sc.ATTR_TRIAL_STATUS] == sc.TRIAL_COMPLETED
        assert trial.status.status_code is StatusCode.UNSET
        (training,) = children(tree, trial, sc.PHASE_TRAIN)
        assert len(children(tree, training, sc.PHASE_EPOCH)) == 2
        # Ray's SystemExit(0) in tune.report ended it: an early stop, not a failure.
        assert training.status.status_code is StatusCode.UNSET, training.status.description
        assert training.attributes[sc.ATTR_STOP_REASON] == sc.STOP_EXIT
        assert training.resource.attributes[sc.ATTR_TRIAL_ID] == trial.attributes[sc.ATTR_TRIAL_ID]
    (run_view,) = otel_report.read(sorted((tmp_path / "otel").glob("*.jsonl"))).runs
    table = otel_report.sweep(run_view)
    assert table.metric == root.attributes[sc.ATTR_TUNE_METRIC] == "metrics/mAP50-95(B)"
    scores = [r.score for r in table.rows]
    assert scores == sorted(scores, reverse=True), "best first"
    (best,) = [r for r in table.rows if r.label == root.attributes[sc.ATTR_TUNE_BEST_TRIAL]]
    assert best.score == scores[0]
    assert {r.status for r in table.rows} == {sc.TRIAL_COMPLETED} and table.varied == ["lr0"]
