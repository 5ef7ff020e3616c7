"""The trace tree of each Ultralytics run, its robustness, and the phase metrics."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from otel_callbacks import Settings, telemetry, tracing
from otel_callbacks import semconv as sc
from tests.engines import (
    DetectionPredictor,
    DetectionTrainer,
    DetectionValidator,
    Exporter,
    run_export,
    run_predict,
    run_train,
    run_val,
)

# The phases of a 2-epoch, 2-batch training with per-epoch validation and the final evaluation.
TWO_EPOCH_PHASES = {
    "train": 1,
    "setup": 1,
    "epoch": 2,
    "batch": 4,
    "dataloader": 10,  # 4 training batches, and 2 val batches in each of 3 validations
    "val": 3,
    "val_batch": 6,
    "val_metrics": 3,
    "clear_memory": 3,  # before each epoch's val, and between the epochs
    "checkpoint": 2,
    "final_eval": 1,
    "strip_optimizer": 1,
    "finalize": 1,
    "cleanup": 1,
}


class Tree:
    """Finished spans indexed for assertions on names and parent links."""

    def __init__(self, spans):
        self.spans = list(spans)
        self.by_id = {s.context.span_id: s for s in self.spans}

    def parent(self, span):
        return self.by_id.get(span.parent.span_id) if span.parent else None

    def named(self, name):
        return [s for s in self.spans if name in (s.name, s.attributes.get(sc.ATTR_EVENT))]

    def phases(self, name):
        return [s for s in self.named(name) if sc.ATTR_PHASE in s.attributes]

    def callbacks(self, event):
        return [s for s in self.named(event) if sc.ATTR_EVENT in s.attributes]

    def parent_names(self, spans):
        return [self.parent(s).name if self.parent(s) else None for s in spans]


def assert_closed_and_isolated(recorded):
    assert recorded.open_spans.open == {}, "no span left open"
    later = recorded.tracer_provider.get_tracer("user").start_span("later")
    assert later.parent is None, "no context leaked"
    later.end()
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_two_epoch_training_tree(recorded):
    trainer = DetectionTrainer()
    trainer.args = type(
        "Args",
        (),
        {
            "task": "detect",
            "model": "/home/alice/yolo11n.yaml",
            "epochs": 2,
            "imgsz": 32,
            "batch": 4,
            "device": "cpu",
            "data": "/home/alice/d.yaml",
            "api_key": "secret",
        },
    )()
    run_train(trainer, epochs=2, batches=2, val_batches=2)
    tree = Tree(recorded.spans())
    assert_closed_and_isolated(recorded)

    (train,) = tree.phases("train")
    assert train.parent is None and train.status.status_code is StatusCode.UNSET
    assert 0 <= train.attributes[sc.ATTR_UNTRACED] < (train.end_time - train.start_time) / 1e9
    assert train.attributes[sc.ATTR_OVERHEAD] > 0, "the instrumentation's own time, on the root"
    causes = (sc.BOUND_INPUT, sc.BOUND_COMPUTE, sc.BOUND_CALLBACKS, sc.BOUND_VALIDATION, sc.BOUND_CHECKPOINT)
    assert train.attributes[sc.ATTR_BOUND_BY] in causes, "what bound it (microseconds each here)"
    timed = (sc.ATTR_UNTRACED, sc.ATTR_OVERHEAD, sc.ATTR_BOUND_BY, sc.ATTR_BOUND_SHARE, sc.ATTR_BOUND_REASON)
    assert {k: v for k, v in train.attributes.items() if k not in timed} == {
        sc.ATTR_PHASE: "train",
        "ultralytics.task": "detect",
        "ultralytics.model": "yolo11n.yaml",
        "ultralytics.data": "d.yaml",
        "ultralytics.epochs": 2,
        "ultralytics.imgsz": 32,
        "ultralytics.batch.size": 4,
        "ultralytics.device": "cpu",
        sc.ATTR_EPOCHS_COMPLETED: 2,
    }
    assert all(s.context.trace_id == train.context.trace_id for s in tree.spans), "one tree"
    assert tree.parent_names(tree.phases("setup")) == ["train"]
    epochs = tree.phases("epoch")
    assert [e.attributes[sc.ATTR_EPOCH] for e in epochs] == [1, 2], "as Ultralytics shows it: 1/2, 2/2"
    assert tree.parent_names(epochs) == ["train", "train"]
    assert Counter(tree.parent(b).attributes[sc.ATTR_EPOCH] for b in tree.phases("batch")) == {1: 2, 2: 2}
    assert Counter(tree.parent_names(tree.phases("dataloader"))) == {"epoch": 4, "val": 6}
    (final_eval,) = tree.phases("final_eval")
    assert tree.parent(final_eval) is train
    vals = tree.phases("val")
    assert tree.parent_names(vals) == ["epoch", "epoch", "final_eval"]
    assert [v.attributes.get(sc.ATTR_EPOCH) for v in vals] == [1, 2, 2]

    # callback spans are children of the innermost open phase of their engine
    expected_parent = {
        "on_pretrain_routine_start": ["setup"],
        "on_pretrain_routine_end": ["setup"],
        "on_train_start": ["train"],
        "on_train_epoch_start": ["epoch"] * 2,
        "on_train_batch_start": ["batch"] * 4,
        "on_train_batch_end": ["batch"] * 4,
        "on_train_epoch_end": ["epoch"] * 2,
        "on_val_start": ["val"] * 3,
        "on_val_batch_start": ["val_batch"] * 6,
        "on_val_end": ["val"] * 3,
        "on_model_save": ["epoch"] * 2,
        "on_fit_epoch_end": ["epoch", "epoch", "final_eval"],
        "on_train_end": ["train"],
        "teardown": ["train"],
    }
    for event, parents in expected_parent.items():
        assert tree.parent_names(tree.callbacks(event)) == parents, event
    # phases contain their callbacks in time
    for span in tree.spans:
        parent = tree.parent(span)
        if parent is not None:
            assert parent.start_time <= span.start_time <= span.end_time <= parent.end_time, span.name

    counts = Counter()
    for attributes, point in recorded.points(sc.METRIC_PHASE_DURATION):  # train and val modes
        counts[attributes[sc.ATTR_PHASE]] += point.count
    assert counts == TWO_EPOCH_PHASES
    val_modes = {
        a[sc.ATTR_MODE] for a, _ in recorded.points(sc.METRIC_PHASE_DURATION) if a[sc.ATTR_PHASE] == "val"
    }
    assert val_modes == {"val"}, "a validation inside a training is val work in the metrics"


def test_model_val_is_a_root_val_span(recorded):
    validator = DetectionValidator()  # a Model's own dict, not a trainer's
    run_val(validator, batches=3)
    tree = Tree(recorded.spans())
    (val,) = tree.phases("val")
    assert val.parent is None
    assert set(tree.parent_names(tree.callbacks("on_val_batch_end"))) == {"val_batch"}
    assert set(tree.parent_names(tree.phases("val_batch"))) == {"val"}
    assert_closed_and_isolated(recorded)


def test_predict_tree(recorded):
    predictor = DetectionPredictor()
    run_predict(predictor, batches=4)
    tree = Tree(recorded.spans())
    (predict,) = tree.phases("predict")
    assert predict.parent is None
    batches = tree.phases("predict_batch")
    assert len(batches) == 3, "first 3 batches sampled by default"
    assert set(tree.parent_names(batches)) == {"predict"}
    assert tree.parent_names(tree.callbacks("on_predict_postprocess_end")) == ["predict_batch"] * 3
    assert tree.parent_names(tree.callbacks("on_predict_end")) == ["predict"]
    counts = {a[sc.ATTR_PHASE]: p.count for a, p in recorded.points(sc.METRIC_PHASE_DURATION)}
    assert counts == {"predict": 1, "predict_batch": 4}
    assert_closed_and_isolated(recorded)


def test_export_and_failed_export(recorded):
    exporter = Exporter()
    run_export(exporter)
    with pytest.raises(RuntimeError):
        run_export(exporter, fail=True)
    assert list(recorded.open_spans.open.values()) == ["export"]
    run_export(exporter)  # the next export on the same exporter closes the failed one
    tree = Tree(recorded.spans())
    exports = tree.phases("export")
    assert [e.status.status_code for e in exports] == [StatusCode.UNSET, StatusCode.ERROR, StatusCode.UNSET]
    assert "a new export started" in exports[1].status.description
    assert all(e.parent is None for e in exports)
    assert_closed_and_isolated(recorded)


def test_failed_export_closed_at_process_exit(recorded):
    exporter = Exporter()
    with pytest.raises(RuntimeError):
        run_export(exporter, fail=True)
    tracing.current_tracker().close_all("process exit")
    (export,) = Tree(recorded.spans()).phases("export")
    assert export.status.status_code is StatusCode.ERROR and export.status.description == "process exit"
    assert recorded.open_spans.open == {}


class Boom(Exception):
    pass


def test_exception_in_on_train_epoch_end(recorded):
    trainer = DetectionTrainer()

    def fail(t):
        raise Boom("bad epoch end")

    trainer.add_callback("on_train_epoch_end", fail)
    with pytest.raises(Boom):
        run_train(trainer)
    tree = Tree(recorded.spans())
    assert_closed_and_isolated(recorded)
    (epoch,) = tree.phases("epoch")
    assert epoch.status.status_code is StatusCode.ERROR
    assert epoch.status.description == "Boom: bad epoch end"
    (train,) = tree.phases("train")
    assert (train.status.status_code, train.status.description) == (StatusCode.ERROR, "Boom: bad epoch end")
    assert tree.parent_names(tree.callbacks("teardown")) == ["train"]
    (failed,) = [s for s in tree.callbacks("on_train_epoch_end") if s.status.status_code is StatusCode.ERROR]
    assert tree.parent(failed) is epoch


def test_keyboard_interrupt_mid_batch(recorded):
    trainer = DetectionTrainer()
    calls = []

    def interrupt(t):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    trainer.add_callback("on_train_batch_start", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_train(trainer, epochs=2, batches=2)
    tree = Tree(recorded.spans())
    assert_closed_and_isolated(recorded)
    statuses = {
        s.name: s.status.status_code
        for s in tree.spans
        if sc.ATTR_PHASE in s.attributes and s.status.status_code is StatusCode.ERROR
    }
    assert statuses == {"batch": StatusCode.ERROR, "epoch": StatusCode.ERROR, "train": StatusCode.ERROR}


def test_abandoned_predict_stream(recorded):
    predictor = DetectionPredictor()
    predictor.run_callbacks("on_predict_start")
    for _ in range(2):
        predictor.run_callbacks("on_predict_batch_start")
        predictor.run_callbacks("on_predict_postprocess_end")  # the consumer stops iterating here
    assert sorted(recorded.open_spans.open.values()) == ["predict", "predict_batch"]
    run_predict(predictor, batches=1)  # the same predictor starts a new run
    tree = Tree(recorded.spans())
    first, second = tree.phases("predict")
    assert first.status.status_code is StatusCode.ERROR
    assert "a new prediction started" in first.status.description
    assert second.status.status_code is StatusCode.UNSET
    assert_closed_and_isolated(recorded)


def test_abandoned_predict_stream_closed_when_the_predictor_is_collected(recorded):
    predictor = DetectionPredictor()
    predictor.run_callbacks("on_predict_start")
    predictor.run_callbacks("on_predict_batch_start")
    del predictor
    (predict,) = Tree(recorded.spans()).phases("predict")
    assert predict.status.status_code is StatusCode.ERROR
    assert "garbage collected" in predict.status.description
    assert recorded.open_spans.open == {}


def test_two_trainers_in_two_threads_make_two_trees(recorded):
    barrier = threading.Barrier(2)
    errors = []

    def train():
        try:
            trainer = DetectionTrainer()
            trainer.add_callback("on_train_batch_end", lambda t: barrier.wait(5))  # interleave
            run_train(trainer, epochs=2, batches=3, val_batches=1)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=train) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    tree = Tree(recorded.spans())
    trains = tree.phases("train")
    assert len(trains) == 2 and trains[0].context.trace_id != trains[1].context.trace_id
    for train in trains:
        members = [s for s in tree.spans if s.context.trace_id == train.context.trace_id]
        assert Counter(s.name for s in members if sc.ATTR_PHASE in s.attributes) == {
            "train": 1,
            "setup": 1,
            "epoch": 2,
            "batch": 6,
            "dataloader": 9,
            "val": 3,
            "val_batch": 3,
            "val_metrics": 3,
            "clear_memory": 3,
            "checkpoint": 2,
            "final_eval": 1,
            "strip_optimizer": 1,
            "finalize": 1,
            "cleanup": 1,
        }
        assert len([s for s in members if s.attributes.get(sc.ATTR_EVENT) == "on_train_batch_end"]) == 12
    assert_closed_and_isolated(recorded)


def test_user_span_around_training_is_the_parent_and_is_restored(recorded):
    tracer = recorded.tracer_provider.get_tracer("user")
    with tracer.start_as_current_span("experiment") as experiment:
        run_train(DetectionTrainer(), epochs=1, batches=1)
        assert trace.get_current_span() is experiment
    (train,) = Tree(recorded.spans()).phases("train")
    assert train.parent.span_id == experiment.get_span_context().span_id


def test_an_engine_collected_while_the_tracker_holds_its_lock_does_not_deadlock(recorded):
    """Weakref callbacks run whenever the garbage collector does, also inside the tracker's lock."""
    tracker = tracing.current_tracker()
    predictor = DetectionPredictor()
    predictor.run_callbacks("on_predict_start")

    def collect_inside_the_lock(engine=[predictor]):  # noqa: B006 - the only strong reference
        with tracker._lock:
            engine.clear()  # the predictor dies here: _forget runs on this thread, lock held

    del predictor
    worker = threading.Thread(target=collect_inside_the_lock, daemon=True)
    worker.start()
    worker.join(5)
    assert not worker.is_alive(), "deadlocked"
    (predict,) = Tree(recorded.spans()).phases("predict")
    assert "garbage collected" in predict.status.description


@pytest.mark.parametrize("ended_by", ["shutdown", "a new configuration"])
def test_a_training_cut_short_by_process_exit_ends_its_run_without_configuring_anew(
    recorded, caplog, ended_by
):
    # A shutdown (process exit, SIGTERM) ends an open run while its telemetry is still active, so the
    # run's table measures the unsampled path through it; a telemetry replaced first cannot: "not
    # measured", not a partial figure. Neither binds a new telemetry from the environment.
    trainer = DetectionTrainer()
    trainer.run_callbacks("on_pretrain_routine_start")
    trainer.run_callbacks("on_train_epoch_start")
    for _ in range(5):  # past the sampled batches: calls without spans
        trainer.run_callbacks("on_train_batch_start")
        trainer.run_callbacks("on_train_batch_end")
    trainer.run_callbacks("on_train_batch_start")  # the process exits here
    tracker = tracing.current_tracker()
    if ended_by == "shutdown":
        telemetry.shutdown()
        assert telemetry.providers.active is None
    else:
        telemetry.configure(Settings(enabled=False))
    report = tracker.last_report
    assert report is not None, "the run was finished, its table made"
    (train,) = Tree(recorded.spans()).phases("train")
    if ended_by == "shutdown":
        assert report.overhead_ns > 0 and train.attributes[sc.ATTR_OVERHEAD] == report.overhead_ns / 1e9
    else:
        assert report.overhead_ns is None and sc.ATTR_OVERHEAD not in train.attributes
        assert "instrumentation overhead: not measured" in report.render()
    assert not [r for r in caplog.records if "telemetry disabled" in r.getMessage()]


def test_the_root_ends_after_its_last_callback_though_the_clock_moves_while_the_table_is_made(
    recorded, monkeypatch
):
    # The table (made before the root ends) measures the unsampled path; a wall-clock offset that
    # moves meanwhile (a re-sync: CI saw 40 ns) must not end the root before its teardown callback.
    from otel_callbacks.tracing import clock

    def drifting_probe(tel):
        monkeypatch.setattr(clock, "_offset", clock._offset - 1_000_000)
        return 0.0, 0.0

    tracker = tracing.current_tracker()
    monkeypatch.setattr(tracker, "_calibrate", drifting_probe)
    monkeypatch.setattr(tracker, "fast_call_ns", None)
    run_train(DetectionTrainer(), epochs=1, batches=2, val_batches=1)
    tree = Tree(recorded.spans())
    (train,) = tree.phases("train")
    (teardown,) = tree.callbacks("teardown")
    assert teardown.end_time <= train.end_time, "a child never outlives its parent"


@pytest.mark.parametrize("breaks", ["printing", "making"])
def test_a_failing_timing_table_still_ends_the_root_and_is_counted(recorded, monkeypatch, breaks):
    # The table is made before the root ends (the root carries its overhead): its failure must not
    # leave the root open; one that fails only to print still gives the overhead.
    from otel_callbacks.tracing import tables
    from otel_callbacks.tracing.runs import Run

    def broken(*args):
        raise OSError("stdout closed")

    monkeypatch.setattr(*((tables, "emit") if breaks == "printing" else (Run, "finish")), broken)
    run_train(DetectionTrainer(), epochs=1, batches=2, val_batches=1)
    assert_closed_and_isolated(recorded)
    (train,) = Tree(recorded.spans()).phases("train")
    assert train.status.status_code is StatusCode.UNSET
    assert (sc.ATTR_OVERHEAD in train.attributes) is (breaks == "printing")
    assert set(telemetry.current().errors_seen) == {"OSError"}


def test_a_ctrl_c_while_the_timing_table_is_made_ends_the_root_and_goes_on(recorded, monkeypatch):
    from otel_callbacks.tracing import tables

    def interrupted(text):
        raise KeyboardInterrupt

    monkeypatch.setattr(tables, "emit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_train(DetectionTrainer(), epochs=1, batches=2, val_batches=1)
    assert_closed_and_isolated(recorded)
    assert len(Tree(recorded.spans()).phases("train")) == 1


# A 20 ms minimum: microsecond gaps stay under it even where a garbage collection runs in one.
@pytest.mark.parametrize("settings", [Settings(default_hook_spans=True, gap_span_min=0.02)], indirect=True)
def test_gaps_under_the_minimum_get_no_span_but_are_counted_and_untraced(recorded):
    class SlowSave(DetectionTrainer):
        def run_callbacks(self, event):
            if event == "on_model_save" and self.epoch == 1:  # the second epoch's checkpoint: 40 ms
                time.sleep(0.04)
            super().run_callbacks(event)

    run_train(SlowSave())
    tree = Tree(recorded.spans())
    (checkpoint,) = tree.phases("checkpoint")
    assert tree.parent(checkpoint).attributes[sc.ATTR_EPOCH] == 2, "the slow gap keeps its span"
    for gap in ("clear_memory", "val_metrics", "strip_optimizer", "finalize", "cleanup"):
        assert tree.phases(gap) == [], f"{gap}: microseconds, no span"
    counts = {a[sc.ATTR_PHASE]: p.count for a, p in recorded.points(sc.METRIC_PHASE_DURATION)}
    for gap in ("checkpoint", "clear_memory", "val_metrics", "strip_optimizer", "finalize", "cleanup"):
        assert counts[gap] == TWO_EPOCH_PHASES[gap], f"{gap}: every one in the metrics"
    first, second = sorted(tree.phases("epoch"), key=lambda s: s.start_time)
    assert first.attributes[sc.ATTR_UNTRACED] > 0, "the first epoch's checkpoint is its untraced time"
    assert second.attributes[sc.ATTR_UNTRACED] < 0.04, "the second's is its span's"


def test_a_run_started_inside_another_leaves_its_clock_alone(recorded, monkeypatch):
    # A model.val() of its own inside a training's callback: the wall clock stepped 5 s (NTP) must
    # not move the open training's later spans; the next run between runs follows the step.
    from otel_callbacks.tracing import clock

    real, moved = time.time_ns, []

    class ValidatesInside(DetectionTrainer):
        def run_callbacks(self, event):
            super().run_callbacks(event)
            if event == "on_train_epoch_end" and self.epoch == 0:
                monkeypatch.setattr(time, "time_ns", lambda: real() + 5_000_000_000)
                before = clock._offset
                run_val(DetectionValidator())
                moved.append(clock._offset - before)

    run_train(ValidatesInside())
    assert moved == [0]
    assert_closed_and_isolated(recorded)
    before = clock._offset
    run_val(DetectionValidator())
    assert 4.9e9 < clock._offset - before < 5.1e9
