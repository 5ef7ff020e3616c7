"""otel_callbacks in a real Ultralytics (8.3.253, 8.4): trees, counts, identical results, drop-in API."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cloudpickle
import pytest
import torch
from opentelemetry.trace import StatusCode

import otel_callbacks
from otel_callbacks import Limits, Settings, install, uninstall
from otel_callbacks import semconv as sc
from otel_callbacks.hooks import EVENTS
from otel_callbacks.telemetry import otlp_file
from otel_callbacks.tracing.wrapper import InstrumentedCallback
from tests.e2e.versions import TEARDOWN_AFTER_A_CRASH, ULTRALYTICS_8_4, ULTRALYTICS_INTEGRATIONS
from tests.soak import random_states
from tests.test_phases import TWO_EPOCH_PHASES, Tree

ultralytics = pytest.importorskip("ultralytics")
from ultralytics import YOLO  # noqa: E402
from ultralytics.utils import callbacks as ul_callbacks  # noqa: E402
from ultralytics.utils.callbacks import base as ul_base  # noqa: E402

ORIGINAL_GET = ul_base.get_default_callbacks
ORIGINAL_ADD = ul_base.add_integration_callbacks


class Truth:
    """Independent plain callbacks that count what really ran."""

    def __init__(self, model):
        self.count = Counter()
        for event in EVENTS:
            model.add_callback(event, self.counter(event))

    def counter(self, event):
        def count(engine):
            self.count[event] += 1

        count.__qualname__ = f"truth_{event}"
        return count


GAP_PHASES = {"checkpoint", "clear_memory", "val_metrics", "strip_optimizer", "finalize", "cleanup"}

# The phases of a real 2-epoch training: 8 images at batch 4 (2 batches an epoch), 4 val images in one
# val batch (Ultralytics validates at twice the batch size).
REAL_TWO_EPOCH_PHASES = {
    **TWO_EPOCH_PHASES,
    "dataloader": 7,
    "val_batch": 3,
}


@pytest.mark.parametrize("settings", [Settings()], indirect=True)  # the defaults a user gets
def test_installed_runs_give_the_span_trees_and_every_call_is_counted(recorded, train_args, data, tmp_path):
    install()
    model = YOLO("yolo11n.yaml")
    truth = Truth(model)
    late = []

    def add_late(trainer):  # a user adds a callback while training runs
        if trainer.epoch == 0:
            trainer.add_callback("on_train_epoch_end", late_callback)

    def late_callback(trainer):
        late.append(trainer.epoch)

    model.add_callback("on_train_epoch_start", add_late)
    model.train(**train_args)
    model.val(data=train_args["data"], imgsz=32, batch=4, device="cpu", workers=0, plots=False)
    model.predict(str(data.parent / "images" / "val"), imgsz=32, device="cpu", batch=2, verbose=False)
    model.export(format="torchscript", imgsz=32, device="cpu")

    tree = Tree(recorded.spans())
    assert recorded.open_spans.open == {}
    roots = [s for s in tree.spans if s.parent is None]
    assert [r.name for r in sorted(roots, key=lambda s: s.start_time)] == [
        "train",
        "val",
        "predict",
        "export",
    ]
    by_trace = {r.name: [s for s in tree.spans if s.context.trace_id == r.context.trace_id] for r in roots}

    train = Tree(by_trace["train"])
    phases = Counter(s.name for s in train.spans if sc.ATTR_PHASE in s.attributes)
    # Gaps under OTEL_CALLBACKS_GAP_SPAN_MIN (1 ms) get no span: each gap span there is over it.
    gaps = {name: count for name, count in REAL_TWO_EPOCH_PHASES.items() if name in GAP_PHASES}
    assert {n: c for n, c in phases.items() if n not in gaps} == {
        n: c for n, c in REAL_TWO_EPOCH_PHASES.items() if n not in gaps
    }
    assert all(phases[name] <= count for name, count in gaps.items()), phases
    assert all(s.end_time - s.start_time >= 1e6 for s in train.spans if s.name in gaps)
    assert train.parent_names(train.phases("val")) == ["epoch", "epoch", "final_eval"]
    assert train.parent_names(train.callbacks("on_fit_epoch_end"))[-1] == "final_eval"
    assert set(train.parent_names(train.callbacks("on_train_batch_end"))) == {"batch"}
    assert set(train.parent_names(train.callbacks("teardown"))) == {"train"}
    (run,) = train.phases("train")
    assert run.attributes["ultralytics.model"] == "yolo11n.yaml"
    assert run.attributes["ultralytics.data"] == "data.yaml" and run.attributes["ultralytics.epochs"] == 2
    assert run.attributes[sc.ATTR_RUN_NAME] == "runs/train", "project/name, as people named the run"
    values = [str(v) for s in tree.spans for k, v in s.attributes.items() if k != sc.ATTR_RUN_NAME]
    assert not any("/" in v for v in values), "no paths (the run name is project/name only)"
    integrations = {s.attributes[sc.ATTR_INTEGRATION] for s in train.spans if sc.ATTR_EVENT in s.attributes}
    assert {"user", *ULTRALYTICS_INTEGRATIONS} <= integrations and "default" not in integrations, (
        "no no-op spans"
    )
    callback_spans = [s for s in train.spans if sc.ATTR_EVENT in s.attributes]
    assert all(s.name.startswith(s.attributes[sc.ATTR_EVENT] + " ") for s in callback_spans)
    containers = ("train", "epoch", "val", "final_eval")  # phases whose children are phases
    for phase in (s for s in train.spans if s.name in containers and sc.ATTR_PHASE in s.attributes):
        duration = (phase.end_time - phase.start_time) / 1e9
        assert phase.attributes[sc.ATTR_UNTRACED] <= 0.1 * duration, f"{phase.name}: children explain 90%"
    epochs = train.phases("epoch")
    assert [e.attributes[sc.ATTR_EPOCH] for e in epochs] == [1, 2]
    for epoch in epochs:
        for key in ("train.box_loss", "lr.pg0", "metrics.mAP50_B", "metrics.mAP50-95_B", "fitness"):
            assert isinstance(epoch.attributes[f"ultralytics.{key}"], float), key
    assert all(isinstance(v.attributes["ultralytics.metrics.mAP50-95_B"], float) for v in train.phases("val"))
    assert {b.attributes[sc.ATTR_BATCH_INDEX] for b in train.phases("batch")} == {0, 1}
    late_spans = [
        s for s in train.callbacks("on_train_epoch_end") if "late_callback" in s.attributes[sc.ATTR_CALLBACK]
    ]
    assert [s.attributes[sc.ATTR_INTEGRATION] for s in late_spans] == ["user", "user"] and late == [0, 1]

    val = Tree(by_trace["val"])
    val_phases = Counter(s.name for s in val.spans if sc.ATTR_PHASE in s.attributes)
    assert val_phases - Counter({"val_metrics": 1}) == {"val": 1, "dataloader": 1, "val_batch": 1}
    predict = Tree(by_trace["predict"])
    assert len(predict.phases("predict_batch")) == 2 and len(predict.phases("predict")) == 1
    ((predict_root,), (val_root,)) = predict.phases("predict"), val.phases("val")
    for root in (predict_root, val_root):  # where Ultralytics saved them, as project/name
        assert root.attributes[sc.ATTR_RUN_NAME].count("/") == 1, root.attributes[sc.ATTR_RUN_NAME]
    assert set(predict.parent_names(predict.callbacks("on_predict_postprocess_end"))) == {"predict_batch"}
    export = Tree(by_trace["export"])
    assert {s.attributes.get(sc.ATTR_EVENT, s.name) for s in export.spans} == {
        "export",
        "on_export_start",
        "on_export_end",
    }

    points = {(a[sc.ATTR_EVENT], a[sc.ATTR_CALLBACK]): p.count for a, p in recorded.durations()}
    assert sum(truth.count.values()) >= 48 and truth.count["on_predict_batch_end"] == 2
    for event, calls in truth.count.items():
        assert points[(event, f"{__name__}.truth_{event}")] == calls, event
        assert points[(event, f"ultralytics.utils.callbacks.base.{event}")] == calls, event
    for (event, _callback), count in points.items():
        assert count <= truth.count[event]


def results(run_dir: Path):
    with open(run_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    return [{k.strip(): v for k, v in row.items() if k.strip() != "time"} for row in rows]


def weights(path: Path):
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    return checkpoint["model"].float().state_dict()


def train_once(train_args, name):
    model = YOLO("yolo11n.yaml")
    metrics = model.train(**{**train_args, "name": name})
    run_dir = Path(train_args["project"]) / name
    return run_dir, metrics.results_dict


# Every internal threshold lowered so that a 3-epoch, 6-batch training crosses each one.
CROSSED = Settings(
    max_spans=30,
    batch_spans_first=1,
    batch_spans_every=2,
    limits=Limits(buffer_limit=2, reservoir_size=2, batch_window=3, batch_min=2, failures=1),
)


@pytest.mark.parametrize("settings", [CROSSED], indirect=True)
def test_training_outputs_are_identical_with_and_without_instrumentation(recorded, train_args, settings):
    train_args = {**train_args, "epochs": 3}
    plain_dir, plain_metrics = train_once(train_args, "plain")
    plain_generators = random_states()  # Ultralytics seeds them at the start of each training
    install()
    instrumented_dir, instrumented_metrics = train_once(train_args, "instrumented")
    recorded.reader.collect()
    assert random_states() == plain_generators, "no draw from a global generator, collection included"
    assert recorded.phase_spans("train"), "the second training was instrumented"
    report = otel_callbacks.tracing.current_tracker().last_report
    batch_ends = report.callbacks[
        ("on_train_batch_end", "ultralytics.utils.callbacks.base.on_train_batch_end")
    ]
    assert batch_ends.calls == 6 and len(batch_ends.reservoir) == 2, "reservoir and buffer limit crossed"
    spans = recorded.spans()
    assert settings.max_spans <= len(spans) < sum(s.calls for s in report.callbacks.values()), "budget"
    assert len(recorded.phase_spans("batch")) < 6, "sampling period crossed"
    assert results(plain_dir) == results(instrumented_dir)
    assert len(results(plain_dir)) == 3 and "metrics/mAP50(B)" in results(plain_dir)[0]
    assert plain_metrics == instrumented_metrics
    for file in ("best.pt", "last.pt"):
        a, b = weights(plain_dir / "weights" / file), weights(instrumented_dir / "weights" / file)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), file


class Boom(Exception):
    pass


@pytest.mark.parametrize("instrumented", [False, True])
def test_a_raising_callback_raises_the_same_exception(recorded, train_args, instrumented):
    if instrumented:
        install()
    error = Boom("logger crashed")
    model = YOLO("yolo11n.yaml")

    def crash(trainer):
        raise error

    model.add_callback("on_train_epoch_end", crash)
    with pytest.raises(Boom) as caught:
        model.train(**{**train_args, "epochs": 1})
    assert caught.value is error
    assert caught.traceback[-1].name == "crash"
    if instrumented:
        (train,) = recorded.phase_spans("train")
        assert train.status.status_code is StatusCode.ERROR
        assert recorded.open_spans.open == {}
        teardown = [s for s in recorded.callback_spans() if s.name == "teardown"]
        assert all(s.parent.span_id == train.context.span_id for s in teardown)
        assert bool(teardown) is TEARDOWN_AFTER_A_CRASH, (
            "8.3 fires no teardown; BaseTrainer.train's wrapper ends the run"
        )
    else:
        assert recorded.spans() == []


def test_a_crash_in_the_last_epochs_end_event_marks_the_root_and_its_phase(recorded, train_args):
    install()
    model = YOLO("yolo11n.yaml")

    def upload_results(trainer):
        if trainer.epoch == 1:  # the last epoch's on_fit_epoch_end
            raise Boom("results service down")

    model.add_callback("on_fit_epoch_end", upload_results)
    with pytest.raises(Boom):
        model.train(**train_args)
    tree = Tree(recorded.spans())
    (train,) = tree.phases("train")
    assert train.status.status_code is StatusCode.ERROR
    assert train.status.description == "Boom: results service down"
    assert train.attributes[sc.ATTR_ERROR_TYPE] == "Boom"
    (exception,) = [e for e in train.events if e.name == "exception"]
    assert exception.attributes[sc.ATTR_CALLBACK].endswith("upload_results")
    assert exception.attributes["exception.message"] == "results service down"
    first, last = tree.phases("epoch")
    assert first.status.status_code is StatusCode.UNSET
    assert last.status.status_code is StatusCode.ERROR and last.attributes[sc.ATTR_ERROR_TYPE] == "Boom"
    assert recorded.open_spans.open == {}


def callbacks_behaviour():
    """What Ultralytics' callbacks API does, written as plain data to compare across modes."""

    def user(trainer):
        pass

    model = YOLO("yolo11n.yaml")
    seen = [model.callbacks != ul_callbacks.get_default_callbacks()]
    model.add_callback("on_train_start", user)
    seen += [model.callbacks != ul_callbacks.get_default_callbacks(), len(model.callbacks["on_train_start"])]
    model.clear_callback("on_val_end")
    seen += [model.callbacks["on_val_end"] == [], model.callbacks != ul_callbacks.get_default_callbacks()]
    model.reset_callbacks()
    seen += [model.callbacks != ul_callbacks.get_default_callbacks()]
    seen += [[getattr(cb, "__wrapped__", cb) for cb in v] for v in model.callbacks.values()]
    return model, seen


def test_callbacks_api_behaves_as_without_instrumentation():
    _, plain = callbacks_behaviour()
    install()
    model, instrumented = callbacks_behaviour()
    assert instrumented == plain
    assert plain[0] is False, "a fresh model takes Ultralytics' default code path"
    assert isinstance(model.callbacks, otel_callbacks.CallbackDict)
    assert all(isinstance(cb, InstrumentedCallback) for v in model.callbacks.values() for cb in v)


def test_uninstall_restores_ultralytics_exactly():
    install()
    install()  # idempotent
    assert ul_callbacks.get_default_callbacks is otel_callbacks.get_default_callbacks
    assert ul_base.add_integration_callbacks is otel_callbacks.add_integration_callbacks
    uninstall()
    uninstall()
    assert (
        ul_callbacks.get_default_callbacks is ORIGINAL_GET and ul_base.get_default_callbacks is ORIGINAL_GET
    )
    assert ul_callbacks.add_integration_callbacks is ORIGINAL_ADD
    assert ul_base.add_integration_callbacks is ORIGINAL_ADD
    model = YOLO("yolo11n.yaml")
    assert type(model.callbacks).__name__ == "defaultdict"
    assert not (model.callbacks != ul_callbacks.get_default_callbacks())  # noqa: SIM202 - as Model.train
    assert not any(isinstance(cb, InstrumentedCallback) for v in model.callbacks.values() for cb in v)


DDP_WORKER = """
import sys
from ultralytics.utils.patches import torch_load

state = torch_load(sys.argv[1], map_location="cpu")
trainer = state["trainer"](overrides=state["args"], _callbacks=state["callbacks"])
trainer.train()
"""


def test_trainer_callbacks_survive_the_ddp_pickle_and_trace_in_the_worker(train_args, tmp_path):
    """As ultralytics.utils.dist.generate_ddp_file: torch.save with cloudpickle, rebuild in a new process."""
    from ultralytics.models.yolo.detect import DetectionTrainer

    install()
    model = YOLO("yolo11n.yaml")
    model.add_callback("on_train_epoch_end", lambda trainer: print("worker epoch", trainer.epoch))
    trainer = DetectionTrainer(
        overrides={**train_args, "model": "yolo11n.yaml", "epochs": 1}, _callbacks=model.callbacks
    )
    state = tmp_path / "ddp.pt"
    torch.save(
        {"trainer": type(trainer), "args": vars(trainer.args), "callbacks": trainer.callbacks},
        state,
        pickle_module=cloudpickle,
    )
    otel_dir = tmp_path / "otel"
    out = subprocess.run(
        [sys.executable, "-c", DDP_WORKER, str(state)],
        env={
            **__import__("os").environ,
            "OTEL_CALLBACKS_DIR": str(otel_dir),
            "OTEL_CALLBACKS_SUMMARY": "false",
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "worker epoch 0" in out.stdout
    spans = spans_in(otel_dir)
    assert Counter(s.name for s in spans)["epoch"] == 1
    assert any(
        s.name == "on_train_epoch_end <lambda>" and "<lambda>" in attr(s, sc.ATTR_CALLBACK) for s in spans
    )


def spans_in(directory: Path):
    found = []
    for path in directory.glob("*.jsonl"):
        for request in otlp_file.read_file(path):
            for rs in getattr(request, "resource_spans", []):
                for ss in rs.scope_spans:
                    found.extend(ss.spans)
    return found


def attr(span, key):
    return next((a.value.string_value for a in span.attributes if a.key == key), "")


TRAIN_SCRIPT = """
import sys
from ultralytics import YOLO
YOLO("yolo11n.yaml").train(data=sys.argv[1], epochs=1, imgsz=32, batch=4, device="cpu", workers=0,
                           plots=False, project=sys.argv[2], name="zero-code", exist_ok=True)
"""


@pytest.mark.parametrize("disabled", [False, True])
def test_opentelemetry_instrument_needs_no_code_change(train_args, tmp_path, disabled):
    assert "otel" not in TRAIN_SCRIPT
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    otel_dir = tmp_path / "otel"
    env = {**__import__("os").environ, "OTEL_CALLBACKS_DIR": str(otel_dir), "OTEL_CALLBACKS_SUMMARY": "false"}
    if disabled:
        env["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = "ultralytics"
    instrument = Path(sys.executable).parent / "opentelemetry-instrument"
    out = subprocess.run(
        [str(instrument), sys.executable, str(script), train_args["data"], str(tmp_path / "runs")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    names = Counter(s.name for s in spans_in(otel_dir)) if otel_dir.exists() else Counter()
    if disabled:
        assert names == Counter()
    else:
        # An Ultralytics integration's callback is wrapped too (8.4's platform has a teardown, 8.3's hub not).
        own = "teardown platform" if ULTRALYTICS_8_4 else "on_train_end hub"
        assert names["train"] == 1 and names["epoch"] == 1 and names[own] >= 1


@pytest.mark.parametrize("recorded", ["direct"], indirect=True)
def test_a_failed_export_and_prediction_name_their_exception(recorded, data, monkeypatch):
    """Not a callback's exception: Ultralytics' own code raising between the run's start and end."""
    from ultralytics.engine.exporter import Exporter
    from ultralytics.models.yolo.detect import DetectionPredictor

    def fail(name):
        def raising(self, *args, **kwargs):
            raise RuntimeError(f"{name} failed (raised by the test)")

        return raising

    install()
    model = YOLO("yolo11n.yaml")
    monkeypatch.setattr(Exporter, "export_torchscript", fail("torchscript export"))
    with pytest.raises(RuntimeError, match="torchscript export failed"):
        model.export(format="torchscript", imgsz=32, device="cpu")
    monkeypatch.setattr(DetectionPredictor, "postprocess", fail("postprocess"))
    with pytest.raises(RuntimeError, match="postprocess failed"):
        model.predict(str(data.parent / "images" / "val"), imgsz=32, device="cpu", verbose=False)
    (export,) = recorded.phase_spans(sc.PHASE_EXPORT)
    assert export.status.description == "RuntimeError: torchscript export failed (raised by the test)"
    assert export.attributes[sc.ATTR_ERROR_TYPE] == "RuntimeError"
    assert [e.name for e in export.events] == ["exception"]
    (predict,) = recorded.phase_spans(sc.PHASE_PREDICT)
    assert predict.status.description == "RuntimeError: postprocess failed (raised by the test)"
    batches = recorded.phase_spans(sc.PHASE_PREDICT_BATCH)
    assert batches and all(b.status.description == predict.status.description for b in batches)
