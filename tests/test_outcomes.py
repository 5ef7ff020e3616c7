"""Trainings that do not go to plan, fired as Ultralytics 8.4 and 8.3 fire them (tracing/outcomes.py):
retried epochs, early stops and crashes, each with the tree, the statuses and the reasons."""

from __future__ import annotations

import math
import sys
from itertools import pairwise

import pytest
from opentelemetry.trace import StatusCode

from otel_callbacks import semconv as sc
from otel_callbacks import tracing
from tests.engines import DetectionTrainer, DetectionValidator, run_val
from tests.test_inference_loops import spin
from tests.test_phases import Tree, assert_closed_and_isolated


class Device:
    type = "cpu"


class Stopper:
    def __init__(self, patience):
        self.patience, self.best_epoch = patience, 0


class Args:
    def __init__(self, epochs, time=None):
        self.epochs, self.time, self.batch = epochs, time, 16


class Trainer(DetectionTrainer):
    """BaseTrainer's attributes that say what its loop did."""

    def __init__(self, epochs=3, patience=100, time=None):
        super().__init__()
        self.args = Args(epochs, time)
        self.epochs, self.batch_size, self.device = epochs, 16, Device()
        self.stop, self.stopper, self.nan_recovery_attempts, self.loss = False, Stopper(patience), 0, 1.0


def train(trainer, plan, teardown_in_finally=True, batches=2):
    """``BaseTrainer._do_train``'s firings; ``plan(trainer, epoch, attempt)`` may change the trainer
    before the epoch's batches: return "oom" (a batch fails, the batch halves, the epoch restarts),
    "nan" (the epoch validates, last.pt is reloaded, the epoch restarts), or None."""
    validator = DetectionValidator(trainer.callbacks)

    def loop():
        trainer.run_callbacks("on_pretrain_routine_start")
        trainer.run_callbacks("on_pretrain_routine_end")
        trainer.run_callbacks("on_train_start")
        epoch, attempt = 0, 0
        while True:
            trainer.epoch = epoch
            trainer.run_callbacks("on_train_epoch_start")
            what = plan(trainer, epoch, attempt)
            attempt += 1
            for _ in range(batches):
                trainer.run_callbacks("on_train_batch_start")
                if what == "oom":
                    trainer.batch_size //= 2
                    break
                trainer.run_callbacks("on_train_batch_end")
            if what == "oom":
                continue
            trainer.run_callbacks("on_train_epoch_end")
            run_val(validator)
            if what == "nan":
                trainer.nan_recovery_attempts += 1
                trainer.loss = math.nan
                continue
            trainer.nan_recovery_attempts, trainer.loss, attempt = 0, 1.0, 0
            trainer.run_callbacks("on_model_save")
            trainer.stop |= epoch + 1 >= trainer.epochs
            trainer.run_callbacks("on_fit_epoch_end")
            if trainer.stop:
                break
            epoch += 1
        run_val(validator)
        trainer.run_callbacks("on_fit_epoch_end")
        trainer.run_callbacks("on_train_end")

    if not teardown_in_finally:  # Ultralytics 8.3
        loop()
        trainer.run_callbacks("teardown")
        return
    try:
        loop()
    finally:
        trainer.run_callbacks("teardown")


def restarts(recorded):
    counts = {a[sc.ATTR_RESTART_REASON]: p.value for a, p in recorded.points(sc.METRIC_EPOCH_RESTARTS)}
    assert set(counts) == set(sc.RESTART_REASONS), "every reason's series starts at 0"
    return {reason: count for reason, count in counts.items() if count}


def assert_one_tree(tree):
    (root,) = [s for s in tree.spans if s.parent is None]
    assert all(tree.parent(s) is not None for s in tree.spans if s is not root), "no orphans"
    return root


def assert_attempts_do_not_overlap(tree):
    epochs = sorted(tree.phases("epoch"), key=lambda s: s.start_time)
    for before, after in pairwise(epochs):
        assert before.end_time <= after.start_time, "epoch attempts are siblings in sequence"


def test_an_out_of_memory_retry_is_a_retried_epoch_and_the_run_stays_ok(recorded):
    def plan(trainer, epoch, attempt):
        return "oom" if epoch == 0 and attempt < 2 else None  # 16 -> 8 -> 4

    train(Trainer(epochs=2), plan)
    tree = Tree(recorded.spans())
    assert_closed_and_isolated(recorded)
    root = assert_one_tree(tree)
    assert root.status.status_code is StatusCode.UNSET
    epochs = sorted(tree.phases("epoch"), key=lambda s: s.start_time)
    assert [e.attributes[sc.ATTR_EPOCH] for e in epochs] == [1, 1, 1, 2]
    assert [e.status.description for e in epochs] == [
        "CPU out of memory: batch 16 -> 8, epoch 1 restarted",
        "CPU out of memory: batch 8 -> 4, epoch 1 restarted",
        None,
        None,
    ]
    assert_attempts_do_not_overlap(tree)
    failed_batches = [b for b in tree.phases("batch") if b.status.status_code is StatusCode.ERROR]
    assert [b.status.description for b in failed_batches] == [e.status.description for e in epochs[:2]]
    assert tree.parent_names(failed_batches) == ["epoch", "epoch"]
    events = [e for e in root.events if e.name == sc.EVENT_EPOCH_RESTART]
    assert [(e.attributes[sc.ATTR_RESTART_REASON], e.attributes[sc.ATTR_EPOCH]) for e in events] == [
        (sc.RESTART_OUT_OF_MEMORY, 1)
    ] * 2
    assert restarts(recorded) == {sc.RESTART_OUT_OF_MEMORY: 2}
    assert sc.ATTR_STOP_REASON not in root.attributes and root.attributes[sc.ATTR_EPOCHS_COMPLETED] == 2


@pytest.mark.parametrize("teardown_in_finally", [True, False], ids=["8.4", "8.3"])
def test_a_nan_recovery_redoes_the_epoch_and_the_run_stays_ok(recorded, teardown_in_finally):
    def plan(trainer, epoch, attempt):
        return "nan" if epoch == 1 and attempt == 0 else None

    train(Trainer(epochs=3), plan, teardown_in_finally)
    tree = Tree(recorded.spans())
    assert_closed_and_isolated(recorded)
    root = assert_one_tree(tree)
    assert root.status.status_code is StatusCode.UNSET
    epochs = sorted(tree.phases("epoch"), key=lambda s: s.start_time)
    assert [e.attributes[sc.ATTR_EPOCH] for e in epochs] == [1, 2, 2, 3]
    assert epochs[1].status.description == "loss NaN/Inf: last.pt reloaded, epoch 2 redone"
    assert [e.status.status_code for e in epochs[2:]] == [StatusCode.UNSET] * 2
    assert_attempts_do_not_overlap(tree)
    (abandoned_val,) = [v for v in tree.phases("val") if tree.parent(v) is epochs[1]]
    assert abandoned_val.end_time <= epochs[1].end_time, "the attempt holds its validation"
    assert restarts(recorded) == {sc.RESTART_NAN: 1}


def test_a_training_stopped_by_patience_says_so_on_its_root(recorded):
    def plan(trainer, epoch, attempt):
        trainer.stop = epoch == 3  # EarlyStopping: best at epoch 1, patience 3
        trainer.stopper.best_epoch = 1

    train(Trainer(epochs=10, patience=3), plan)
    (root,) = Tree(recorded.spans()).phases("train")
    assert root.attributes[sc.ATTR_STOP_REASON] == sc.STOP_EARLY_STOPPING
    assert root.attributes[sc.ATTR_EPOCHS_COMPLETED] == 4 and root.attributes["ultralytics.epochs"] == 10
    (event,) = [e for e in root.events if e.name == sc.EVENT_EARLY_STOP]
    assert event.attributes[sc.ATTR_MESSAGE] == (
        "early stopping: no better fitness in 3 epochs since epoch 1 (patience=3): 4 of 10 epochs"
    )
    assert root.status.status_code is StatusCode.UNSET


@pytest.mark.parametrize(
    ("kwargs", "reason", "message"),
    [
        ({"time": 0.01}, sc.STOP_TIME_LIMIT, "time limit reached (time=0.01 h): 2 of 10 epochs"),
        ({}, sc.STOP_EXTERNAL, "stopped by trainer.stop: 2 of 10 epochs"),
    ],
)
def test_a_training_stopped_by_time_or_from_outside_says_so(recorded, kwargs, reason, message):
    def plan(trainer, epoch, attempt):
        trainer.stop = epoch == 1

    train(Trainer(epochs=10, **kwargs), plan)
    (root,) = Tree(recorded.spans()).phases("train")
    assert root.attributes[sc.ATTR_STOP_REASON] == reason
    (event,) = [e for e in root.events if e.name == sc.EVENT_EARLY_STOP]
    assert event.attributes[sc.ATTR_MESSAGE] == message


class Forward(Exception):
    pass


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (Forward("loss exploded"), "Forward: loss exploded"),
        (KeyboardInterrupt(), "interrupted (KeyboardInterrupt)"),
    ],
    ids=["forward-pass", "ctrl-c"],
)
def test_an_exception_from_the_forward_pass_names_the_cause_at_the_root(recorded, error, status):
    def plan(trainer, epoch, attempt):
        if epoch == 1:
            trainer.run_callbacks("on_train_batch_start")
            raise error  # from the training loop itself, not from a callback

    with pytest.raises(type(error)) as raised:
        train(Trainer(epochs=3), plan)
    assert raised.value is error
    tree = Tree(recorded.spans())
    assert_closed_and_isolated(recorded)
    root = assert_one_tree(tree)
    assert (root.status.status_code, root.status.description) == (StatusCode.ERROR, status)
    assert root.attributes[sc.ATTR_ERROR_TYPE] == type(error).__qualname__
    (exception,) = [e for e in root.events if e.name == "exception"]
    assert exception.attributes["exception.type"].endswith(type(error).__qualname__)
    assert "plan" in exception.attributes["exception.stacktrace"], "the traceback of the raise"
    (epoch_2,) = [e for e in tree.phases("epoch") if e.attributes[sc.ATTR_EPOCH] == 2]
    assert (epoch_2.status.description, epoch_2.attributes[sc.ATTR_ERROR_TYPE]) == (
        status,
        type(error).__qualname__,
    )
    (batch,) = [b for b in tree.phases("batch") if b.status.status_code is StatusCode.ERROR]
    assert batch.status.description == status and tree.parent(batch) is epoch_2
    assert tree.parent_names(tree.callbacks("teardown")) == ["train"], "teardown's callbacks in the run"


def test_a_crash_during_validation_ends_the_validation_with_it(recorded):
    trainer = Trainer(epochs=3)
    validator = DetectionValidator(trainer.callbacks)

    def fail(v):
        raise Forward("bad val batch")

    trainer.callbacks["on_val_batch_end"].append(fail)
    trainer.run_callbacks("on_pretrain_routine_start")
    trainer.run_callbacks("on_pretrain_routine_end")
    trainer.run_callbacks("on_train_epoch_start")
    trainer.run_callbacks("on_train_epoch_end")
    with pytest.raises(Forward):
        try:
            run_val(validator)
        finally:
            trainer.run_callbacks("teardown")
    tree = Tree(recorded.spans())
    assert_closed_and_isolated(recorded)
    assert_one_tree(tree)
    (val,) = tree.phases("val")
    assert val.status.description == "Forward: bad val batch"
    (root,) = tree.phases("train")
    assert len([e for e in root.events if e.name == "exception"]) == 1, "recorded once, when it raised"
    assert root.status.description == "Forward: bad val batch"


def test_a_crash_without_teardown_is_ended_by_the_adapters_report(recorded):
    """Ultralytics 8.3 fires no teardown after a crash: ``BaseTrainer.train``'s wrapper reports it."""
    trainer = Trainer(epochs=3)
    error = Forward("dataloader died")

    def plan(t, epoch, attempt):
        if epoch == 1:
            raise error

    with pytest.raises(Forward):
        train(trainer, plan, teardown_in_finally=False)
    assert "train" in recorded.open_spans.open.values(), "8.3 leaves the run open"
    spin(5_000_000)  # the adapter reports it a while after the engine's last firing
    tracing.current_tracker().crashed(trainer, error)
    tracing.current_tracker().crashed(trainer, error)  # and again (8.4 closed it at teardown): nothing
    tree = Tree(recorded.spans())
    assert_closed_and_isolated(recorded)
    root = assert_one_tree(tree)
    for span in tree.spans:  # CI saw the root end 0.4 ms before the epoch and batch the crash ended
        parent = tree.parent(span)
        assert parent is None or span.end_time <= parent.end_time, span.name
    assert root.status.description == "Forward: dataloader died"
    assert [e.name for e in root.events].count("exception") == 1


@pytest.mark.parametrize("teardown_in_finally", [True, False], ids=["8.4", "8.3"])
@pytest.mark.parametrize("code", [0, None, 3])
def test_a_clean_exit_is_an_early_stop_and_any_other_exit_a_failure(recorded, code, teardown_in_finally):
    """Ray Tune ends every trial with ``SystemExit`` from ``tune.report`` in ``on_fit_epoch_end``."""
    trainer = Trainer(epochs=2)

    def report(t):
        if t.epoch == 1:
            sys.exit(code)

    trainer.add_callback("on_fit_epoch_end", report)
    with pytest.raises(SystemExit) as raised:
        train(trainer, lambda *a: None, teardown_in_finally)
    if not teardown_in_finally:  # 8.3: BaseTrainer.train's wrapper reports it
        tracing.current_tracker().crashed(trainer, raised.value)
    tree = Tree(recorded.spans())
    assert_closed_and_isolated(recorded)
    root = assert_one_tree(tree)
    (epoch_2,) = [e for e in tree.phases("epoch") if e.attributes[sc.ATTR_EPOCH] == 2]
    (callback,) = [s for s in tree.spans if tree.parent(s) is epoch_2 and s.name == "on_fit_epoch_end report"]
    assert [e.name for e in callback.events] == ["exception"], "the exit is on the span it left"
    if code == 3:
        for span in (root, epoch_2, callback):
            assert span.status.status_code is StatusCode.ERROR, span.name
        assert root.status.description == "exited (SystemExit 3)"
        return
    for span in tree.spans:
        assert span.status.status_code is StatusCode.UNSET, span.name
        assert sc.ATTR_ERROR_TYPE not in span.attributes, span.name
    assert root.attributes[sc.ATTR_STOP_REASON] == sc.STOP_EXIT
    assert root.attributes[sc.ATTR_EPOCHS_COMPLETED] == 2, "the epoch reached its last hook"
    (stop,) = [e for e in root.events if e.name == sc.EVENT_EARLY_STOP]
    message = f"exited (SystemExit {code}) at on_fit_epoch_end of epoch 2 of 2"
    assert stop.attributes[sc.ATTR_MESSAGE] == message
    assert tree.phases("final_eval") == [], "it never ran"
    failed = [a for a, _ in recorded.durations() if sc.ATTR_ERROR_TYPE in a]
    assert failed == [], "no failed call in the metrics"


@pytest.mark.parametrize("teardown_in_finally", [True, False], ids=["8.4", "8.3"])
def test_a_clean_exit_inside_an_epoch_counts_the_epochs_before_it(recorded, teardown_in_finally):
    trainer = Trainer(epochs=3)

    def leave(t):
        if t.epoch == 1:
            sys.exit()

    trainer.add_callback("on_train_batch_end", leave)
    with pytest.raises(SystemExit) as raised:
        train(trainer, lambda *a: None, teardown_in_finally)
    if not teardown_in_finally:
        tracing.current_tracker().crashed(trainer, raised.value)
    root = assert_one_tree(Tree(recorded.spans()))
    assert root.status.status_code is StatusCode.UNSET
    assert root.attributes[sc.ATTR_EPOCHS_COMPLETED] == 1
    (stop,) = [e for e in root.events if e.name == sc.EVENT_EARLY_STOP]
    assert (
        stop.attributes[sc.ATTR_MESSAGE] == "exited (SystemExit None) at on_train_batch_end of epoch 2 of 3"
    )


def test_a_training_inside_an_except_block_is_not_its_crash(recorded):
    try:
        raise Forward("the application's own, handled")
    except Forward:
        train(Trainer(epochs=1), lambda *a: None)
    (root,) = Tree(recorded.spans()).phases("train")
    assert root.status.status_code is StatusCode.UNSET
