"""Sweeps and resumed runs as traces, on real tiny trainings in subprocesses: ``model.tune()`` (its
``yolo train`` children instrumented through the launcher's environment, one of them failing for
real), MultiTrainer with two datasets, and a training interrupted then resumed."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from opentelemetry.trace import StatusCode

from otel_callbacks import semconv as sc
from otel_callbacks.apps import demo
from otel_callbacks.apps import report as otel_report
from tests.e2e.backends import wait_until
from tests.e2e.jaeger import jaeger
from tests.e2e.test_jaeger import SEND, exporting_to, parent_of, tags
from tests.e2e.test_otlp_backends import run as run_with_env
from tests.e2e.test_report import ARTIFACTS, COMMAND, browser_available, open_page
from tests.e2e.test_training_faults import file_tree

ultralytics = pytest.importorskip("ultralytics")
from tests.e2e.versions import ULTRALYTICS_8_4  # noqa: E402

ARGS = "imgsz=32, batch=4, device='cpu', workers=0, plots=False, exist_ok=True, seed=0, deterministic=True"

TUNE = f"""
import sys
import otel_callbacks
otel_callbacks.install()
from ultralytics import YOLO
YOLO("yolo11n.yaml").tune(data=sys.argv[1], epochs=1, iterations=3, project=sys.argv[2], name="tune", {ARGS})
"""

# A second sitecustomize on the children's path, run after otel_callbacks' own (which chains to it):
# in the second instrumented training the loss raises, so that iteration fails for real.
FAIL_SECOND_TRAINING = """
import os
if os.environ.get("OTEL_CALLBACKS_INSTALL") == "true" and os.environ.get("ACCEPT_SAVE_DIR"):
    # Ultralytics 8.3.253's Tuner hands its training a save_dir= that its CLI rejects (every iteration
    # fails at start-up, exit status 1; the trace says so): accepted here, so that the trainings run.
    from ultralytics.utils import DEFAULT_CFG_DICT

    DEFAULT_CFG_DICT.setdefault("save_dir", None)
if os.environ.get("OTEL_CALLBACKS_INSTALL") == "true":
    with open(os.environ["TRAININGS_COUNTED_IN"], "a") as counter:
        counter.write("x")
    if os.path.getsize(os.environ["TRAININGS_COUNTED_IN"]) == 2:
        from ultralytics.nn import tasks

        def loss(self, batch, preds=None):
            raise ValueError("loss exploded (raised by the test)")

        tasks.BaseModel.loss = loss
"""

MULTITRAIN = f"""
import sys
import otel_callbacks
otel_callbacks.install()
from ultralytics import YOLO
YOLO("yolo11n.yaml").train(data=[sys.argv[1], sys.argv[2]], epochs=1, project=sys.argv[3], {ARGS})
"""

# Interrupted (Ctrl-C) at the start of its second epoch, after last.pt of the first; then resumed.
RESUME = f"""
import sys
import otel_callbacks
otel_callbacks.install()
from ultralytics import YOLO

def interrupt(trainer):
    if trainer.epoch == 1:
        raise KeyboardInterrupt

model = YOLO("yolo11n.yaml")
model.add_callback("on_train_epoch_start", interrupt)
try:
    model.train(data=sys.argv[1], epochs=3, project=sys.argv[2], name="run", {ARGS})
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
YOLO(sys.argv[2] + "/run/weights/last.pt").train(resume=True)
print("RESUMED", flush=True)
"""


def run(script: str, *args: str, tmp_path: Path, **env: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        env={
            **os.environ,
            "OTEL_CALLBACKS_DIR": str(tmp_path / "otel"),
            "OTEL_CALLBACKS_SUMMARY": "false",
            "OTEL_BSP_MAX_QUEUE_SIZE": "100000",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def one_root(tree, name):
    roots = [s for s in tree.spans if s.parent is None]
    assert [r.name for r in roots] == [name], "one root"
    orphans = [s.name for s in tree.spans if s.parent is not None and tree.parent(s) is None]
    assert not orphans, f"orphans: {orphans}"
    return roots[0]


def children(tree, span, name):
    found = [s for s in tree.spans if tree.parent(s) is span and s.name == name]
    return sorted(found, key=lambda s: s.start_time)


def trainings_under(tree, span):
    """The training roots inside ``span`` (8.4's Tuner trains through a MultiTrainer span)."""
    trainings = children(tree, span, sc.PHASE_TRAIN)
    for multitrain in children(tree, span, sc.PHASE_MULTITRAIN):
        trainings += children(tree, multitrain, sc.PHASE_TRAIN)
    return trainings


@pytest.fixture(scope="module")
def tuned(data, tmp_path_factory):
    """The directory of a real ``model.tune(iterations=3, epochs=1)`` whose second training fails."""
    tmp_path = tmp_path_factory.mktemp("tune")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(FAIL_SECOND_TRAINING)
    run(
        TUNE,
        str(data),
        str(tmp_path / "runs"),
        tmp_path=tmp_path,
        PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
        TRAININGS_COUNTED_IN=str(tmp_path / "trainings"),
        ACCEPT_SAVE_DIR="" if ULTRALYTICS_8_4 else "1",
    )
    return tmp_path


def test_model_tune_is_one_trace_with_an_iteration_each_and_a_failed_one(tuned):
    assert (tuned / "trainings").read_text() == "xxx", "each iteration's child was instrumented, once"
    tree = file_tree(tuned / "otel")
    root = one_root(tree, sc.PHASE_TUNE)
    assert root.status.status_code is StatusCode.UNSET, "a failed iteration does not fail the sweep"
    assert root.attributes[sc.ATTR_TUNE_ITERATIONS] == 3
    assert root.attributes[sc.ATTR_TUNE_METRIC] == "fitness"
    assert "lr0" in root.attributes[sc.ATTR_TUNE_SPACE]
    assert root.attributes[sc.RUN_ATTRIBUTES["data"]] == "data.yaml"
    iterations = children(tree, root, sc.PHASE_ITERATION)
    assert [i.attributes[sc.ATTR_TUNE_ITERATION] for i in iterations] == [1, 2, 3]
    for iteration in iterations:
        assert sc.HYPERPARAMETER_PREFIX + "lr0" in iteration.attributes
        (training,) = trainings_under(tree, iteration)
        assert training.attributes[sc.RUN_ATTRIBUTES["epochs"]] == 1
    ok, failed = [iterations[0], iterations[2]], iterations[1]
    for iteration in ok:
        assert iteration.status.status_code is StatusCode.UNSET
        assert iteration.attributes[sc.result_attribute("fitness")] >= 0  # 8.3: from its CSV
        if ULTRALYTICS_8_4:
            assert sc.result_attribute("metrics/mAP50-95(B)") in iteration.attributes
    assert failed.status.status_code is StatusCode.ERROR
    # 8.4 records the failed dataset (and its 0.0); 8.3 only the training's exit status, no result.
    assert ULTRALYTICS_8_4 or sc.result_attribute("fitness") not in failed.attributes
    expected = "training failed on " if ULTRALYTICS_8_4 else "training failed: exit status 1"
    assert failed.status.description.startswith(expected)
    best = root.attributes[sc.ATTR_TUNE_BEST_ITERATION]
    assert best in (1, 3)
    best_fitness = iterations[best - 1].attributes[sc.result_attribute("fitness")]
    assert root.attributes[sc.ATTR_TUNE_BEST_FITNESS] == best_fitness
    assert not root.links, "no link to its own iteration: Jaeger would make the root its child"
    (crashed,) = trainings_under(tree, failed)
    assert crashed.status.status_code is StatusCode.ERROR
    assert crashed.status.description == "ValueError: loss exploded (raised by the test)"


@pytest.mark.skipif(not ULTRALYTICS_8_4, reason="MultiTrainer (a list of datasets) is new in Ultralytics 8.4")
def test_a_multitrainer_is_one_root_with_a_training_per_dataset(data, tmp_path):
    other = demo.make_dataset(tmp_path / "other")
    run(MULTITRAIN, str(data), str(other), str(tmp_path / "runs"), tmp_path=tmp_path)
    tree = file_tree(tmp_path / "otel")
    root = one_root(tree, sc.PHASE_MULTITRAIN)
    assert root.status.status_code is StatusCode.UNSET
    assert root.attributes[sc.ATTR_DATASETS] == ("data.yaml", "data.yaml")
    trainings = children(tree, root, sc.PHASE_TRAIN)
    assert len(trainings) == 2
    assert all(t.status.status_code is StatusCode.UNSET for t in trainings)
    assert all(len(children(tree, t, sc.PHASE_EPOCH)) == 1 for t in trainings)


@pytest.fixture(scope="module")
def resumed(data, tmp_path_factory):
    """The directory of a real training interrupted in its second epoch, then resumed."""
    tmp_path = tmp_path_factory.mktemp("resume")
    stdout = run(RESUME, str(data), str(tmp_path / "runs"), tmp_path=tmp_path)
    assert "INTERRUPTED" in stdout and "RESUMED" in stdout
    return tmp_path


def test_a_resumed_training_links_to_the_run_it_resumes(resumed):
    tmp_path = resumed
    tree = file_tree(tmp_path / "otel")
    first, resumed = sorted((s for s in tree.spans if s.parent is None), key=lambda s: s.start_time)
    assert first.status.description == "interrupted (KeyboardInterrupt)"
    assert resumed.status.status_code is StatusCode.UNSET
    (link,) = resumed.links
    assert (link.context.trace_id, link.context.span_id) == (first.context.trace_id, first.context.span_id)
    assert resumed.attributes[sc.ATTR_RESUME_TRACE_ID] == format(first.context.trace_id, "032x")
    assert resumed.attributes[sc.ATTR_RESUME_EPOCH] == 2
    epochs = [e.attributes[sc.ATTR_EPOCH] for e in children(tree, resumed, sc.PHASE_EPOCH)]
    assert epochs == [2, 3], "Ultralytics' numbering"
    assert (tmp_path / "runs" / "run" / "weights" / "otel_trace.json").exists()


def test_a_resumed_training_in_jaeger_refers_to_the_run_it_resumes(resumed, tmp_path):
    # Jaeger makes the link a FOLLOWS_FROM reference; the run it names is another trace, so its UI
    # keeps the resumed root a root, and offers the reference as a link to that trace.
    service = f"resume-{uuid.uuid4().hex[:8]}"
    with jaeger(tmp_path) as backend:
        run_with_env(SEND, exporting_to(backend, "http/protobuf", service), "send", str(resumed / "otel"))
        traces = wait_until(lambda: len(t := backend.traces(service)) == 2 and t, 60, "both runs in Jaeger")
    roots = sorted(
        (s for t in traces for s in t["spans"] if parent_of(s) is None), key=lambda s: s["startTime"]
    )
    assert [r["operationName"] for r in roots] == [sc.PHASE_TRAIN] * 2, "one root each"
    first, again = roots
    assert again["references"] == [
        {"refType": "FOLLOWS_FROM", "traceID": first["traceID"], "spanID": first["spanID"]}
    ]
    assert tags(again)[sc.ATTR_RESUME_TRACE_ID] == ("string", first["traceID"])
    assert not any(s["warnings"] for t in traces for s in t["spans"]), "no Jaeger warning"


def test_the_report_shows_the_sweep_best_first_and_opens_an_iteration_in_the_trace(tuned):
    browser_available()
    page = tuned / "report.html"
    out = subprocess.run(
        [COMMAND, "report", str(tuned / "otel"), "-o", str(page)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    (tune,) = [
        r for r in otel_report.read([*(tuned / "otel").glob("*.jsonl")]).runs if r.name == sc.PHASE_TUNE
    ]
    fitness = {  # a failed iteration has no result (Ultralytics records 0.0)
        str(s.attributes[sc.ATTR_TUNE_ITERATION]): None
        if s.status
        else s.attributes[sc.result_attribute("fitness")]
        for s in tune.spans
        if s.name == sc.PHASE_ITERATION
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report-sweep.png"
    errors, external, shown = open_page(page, shot, click="table.sweep tbody tr")
    assert errors == [] and external == [], (errors, external)
    head, *rows = shown["sweep"]
    assert head[:5] == ["step", "fitness", "status", "duration s", "where the time went"]
    steps = [s.attributes for s in tune.spans if s.name == sc.PHASE_ITERATION]
    hyp = [k for k in steps[0] if k.startswith(sc.HYPERPARAMETER_PREFIX)]
    changed = [k.removeprefix(sc.HYPERPARAMETER_PREFIX) for k in hyp if len({a[k] for a in steps}) > 1]
    assert head[5:] == changed and changed, "the hyperparameters that changed between iterations"
    assert [row[0] for row in rows] == sorted(fitness, key=lambda n: (fitness[n] is None, -(fitness[n] or 0)))
    best, *_, failed = rows
    assert best[0] == str(tune.spans[0].attributes[sc.ATTR_TUNE_BEST_ITERATION])
    assert float(best[1]) == pytest.approx(max(f for f in fitness.values() if f is not None), rel=1e-3)
    assert failed[1] == "" and failed[2].startswith("ERROR: training failed")
    for row in rows:  # the largest shares of each iteration's time: the yolo train start-up is one
        shares = dict(part.rsplit(" ", 1) for part in row[4].split(" · "))
        assert otel_report.OUTSIDE_TRAINING in shares and sum(int(v[:-1]) for v in shares.values()) <= 101
    assert f'"{sc.ATTR_TUNE_ITERATION}": {best[0]}' in shown["detail"], "the best row opens its iteration"
    assert shot.stat().st_size > 10_000


def test_model_tune_replayed_into_jaeger_is_one_tree_with_no_warning(tuned, tmp_path):
    service = f"tune-{uuid.uuid4().hex[:8]}"
    with jaeger(tmp_path) as backend:
        run_with_env(SEND, exporting_to(backend, "http/protobuf", service), "send", str(tuned / "otel"))
        (found,) = wait_until(lambda: backend.traces(service), 60, "the sweep in Jaeger")
        trace = backend.trace(found["traceID"])
    spans = trace["spans"]
    assert len({s["spanID"] for s in spans}) == len(spans), "each span id once"
    assert not trace.get("warnings") and not any(s["warnings"] for s in spans), "no Jaeger warning"
    # Jaeger's UI takes a span's first reference, CHILD_OF or FOLLOWS_FROM, for its parent.
    (root,) = [s for s in spans if not s["references"]]
    assert root["operationName"] == sc.PHASE_TUNE and "error" not in tags(root)
    ids = {s["spanID"]: s for s in spans}
    assert all(s["references"][0]["spanID"] in ids for s in spans if s is not root), "no orphan"
    iterations = sorted(
        (s for s in spans if parent_of(s) == root["spanID"] and s["operationName"] == sc.PHASE_ITERATION),
        key=lambda s: tags(s)[sc.ATTR_TUNE_ITERATION][1],
    )
    assert ["error" in tags(i) for i in iterations] == [False, True, False], "the second one failed"
    assert tags(root)[sc.ATTR_TUNE_BEST_ITERATION][1] in (1, 3)
