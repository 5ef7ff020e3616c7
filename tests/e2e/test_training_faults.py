"""Real trainings that go wrong, each fault triggered for real in a subprocess on the CPU: Ultralytics'
OOM retry and NaN recovery, a crash from the loss with the process kept alive, Ctrl-C, early stops
by ``time=`` and patience. Each reads the embedded default's file and asserts the tree (one root, no
orphans, no overlapping epoch attempts), the statuses and the reasons."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import pytest
from opentelemetry.trace import StatusCode

from otel_callbacks import semconv as sc
from otel_callbacks.apps import report as otel_report
from otel_callbacks.apps import report_answer
from otel_callbacks.apps.send import spans as request_spans
from otel_callbacks.telemetry import otlp_file
from tests.test_phases import Tree

ultralytics = pytest.importorskip("ultralytics")
from tests.e2e.versions import ULTRALYTICS_8_4  # noqa: E402

# The fault is raised from the training loss (BaseModel.loss with gradients on: not validation's).
TRAIN = """
import json, sys, time
import torch
import otel_callbacks
otel_callbacks.install()
from ultralytics import YOLO
from ultralytics.engine.trainer import BaseTrainer
from ultralytics.nn import tasks

fault, data, project, epochs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
seen = {"epoch": 0, "attempts": {}, "calls": 0}
original_loss = tasks.BaseModel.loss

def loss(self, batch, preds=None):
    total, items = original_loss(self, batch, preds)
    if not torch.is_grad_enabled():
        return total, items
    seen["calls"] += 1
    later = seen["epoch"] == 1 and seen["attempts"][1] == 1
    if fault == "oom" and seen["calls"] == 1:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (raised by the test)")
    if fault == "nan" and later:
        total = total * float("nan")
    if fault == "forward" and later:
        raise ValueError("loss exploded (raised by the test)")
    if fault == "interrupt" and later:
        raise KeyboardInterrupt
    if fault == "sleep" and seen["epoch"] >= 1:
        print("MID-EPOCH", flush=True)
        time.sleep(60)
    return total, items

tasks.BaseModel.loss = loss
original_validate = BaseTrainer.validate
def validate(self):
    metrics, fitness = original_validate(self)
    if fault == "patience":  # a fitness that never beats the first epoch's: EarlyStopping ends it
        return metrics, 1.0 if self.epoch == 0 else 0.5
    if fault == "nan" and seen["epoch"] == 1 and seen["attempts"][1] == 1:  # 8.3 needs both non-finite
        return metrics, float("nan")
    return metrics, fitness
BaseTrainer.validate = validate

def epoch_start(trainer):
    seen["epoch"] = trainer.epoch
    seen["attempts"][trainer.epoch] = seen["attempts"].get(trainer.epoch, 0) + 1

model = YOLO("yolo11n.yaml")
model.add_callback("on_train_epoch_start", epoch_start)
extra = {"patience": {"patience": 2}, "time": {"time": 0.0004}}.get(fault, {})
try:
    model.train(data=data, epochs=epochs, project=project, name="run", imgsz=32, batch=4, device="cpu",
                workers=0, seed=0, deterministic=True, amp=False, plots=False, exist_ok=True, **extra)
    print("FINISHED", flush=True)
except BaseException as error:  # the process lives on, as a notebook does
    print("RAISED " + type(error).__name__, flush=True)
    time.sleep(1.5)  # the file gets its spans while the process lives
    from pathlib import Path
    from otel_callbacks.telemetry import otlp_file
    files = Path(project, "otel").glob("*.jsonl")
    requests = [r for path in files for r in otlp_file.read_file(path) if hasattr(r, "resource_spans")]
    names = [s.name for r in requests for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]
    print("ALIVE " + json.dumps(names), flush=True)
"""


def training_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "OTEL_CALLBACKS_DIR": str(tmp_path / "otel"),
        "OTEL_CALLBACKS_SUMMARY": "false",
        "OTEL_BSP_MAX_QUEUE_SIZE": "100000",
    }


def run_training(fault: str, data: Path, tmp_path: Path, epochs: int = 3) -> tuple[str, Tree]:
    out = subprocess.run(
        [sys.executable, "-c", TRAIN, fault, str(data), str(tmp_path), str(epochs)],
        env=training_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout, file_tree(tmp_path / "otel")


def signalled(number: int, data: Path, tmp_path: Path) -> subprocess.Popen:
    """A training sent ``number`` in its second epoch, in the middle of a batch."""
    proc = subprocess.Popen(
        [sys.executable, "-c", TRAIN, "sleep", str(data), str(tmp_path), "3"],
        env=training_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    while (line := proc.stdout.readline()) and line.strip() != "MID-EPOCH":
        pass
    assert line, "the training reached its second epoch"
    time.sleep(1.5)  # past the file's write delay: what finished before the signal is kept
    proc.send_signal(number)
    proc.wait(60)
    return proc


def file_tree(directory: Path) -> Tree:
    spans = [
        span
        for path in sorted(directory.glob("*.jsonl"))
        for request in otlp_file.read_file(path)
        if hasattr(request, "resource_spans")
        for span in request_spans(request)
    ]
    return Tree(spans)


def one_root(tree: Tree):
    roots = [s for s in tree.spans if s.parent is None]
    assert [r.name for r in roots] == ["train"], "one root"
    orphans = [s.name for s in tree.spans if s.parent is not None and tree.parent(s) is None]
    assert not orphans, f"orphans: {orphans}"
    epochs = sorted(tree.phases("epoch"), key=lambda s: s.start_time)
    for before, after in pairwise(epochs):
        assert before.end_time <= after.start_time, "epoch attempts do not overlap"
    return roots[0], epochs


def restart_events(root):
    return [e for e in root.events if e.name == sc.EVENT_EPOCH_RESTART]


@pytest.mark.skipif(not ULTRALYTICS_8_4, reason="Ultralytics 8.3 has no OOM auto-retry: the OOM crashes it")
def test_an_out_of_memory_retry_is_a_retried_epoch(data, tmp_path):
    stdout, tree = run_training("oom", data, tmp_path, epochs=2)
    assert "FINISHED" in stdout
    root, epochs = one_root(tree)
    assert root.status.status_code is StatusCode.UNSET
    assert [e.attributes[sc.ATTR_EPOCH] for e in epochs] == [1, 1, 2]
    assert epochs[0].status.description == "CPU out of memory: batch 4 -> 2, epoch 1 restarted"
    assert [e.status.status_code for e in epochs[1:]] == [StatusCode.UNSET] * 2
    (event,) = restart_events(root)
    assert event.attributes[sc.ATTR_RESTART_REASON] == sc.RESTART_OUT_OF_MEMORY


def test_a_nan_loss_recovery_is_a_redone_epoch(data, tmp_path):
    stdout, tree = run_training("nan", data, tmp_path, epochs=3)
    assert "FINISHED" in stdout
    root, epochs = one_root(tree)
    assert root.status.status_code is StatusCode.UNSET
    assert [e.attributes[sc.ATTR_EPOCH] for e in epochs] == [1, 2, 2, 3]
    assert epochs[1].status.description == "loss NaN/Inf: last.pt reloaded, epoch 2 redone"
    assert [e.status.status_code for e in (epochs[0], *epochs[2:])] == [StatusCode.UNSET] * 3
    (event,) = restart_events(root)
    assert event.attributes[sc.ATTR_RESTART_REASON] == sc.RESTART_NAN


@pytest.mark.parametrize(
    ("fault", "error_type", "status"),
    [
        ("forward", "ValueError", "ValueError: loss exploded (raised by the test)"),
        ("interrupt", "KeyboardInterrupt", "interrupted (KeyboardInterrupt)"),
    ],
)
def test_a_crash_names_its_cause_while_the_process_lives(data, tmp_path, fault, error_type, status):
    stdout, _ = run_training(fault, data, tmp_path, epochs=3)
    assert f"RAISED {error_type}" in stdout
    # What the file held while the process still lived (before its exit flushed anything).
    alive = next(line for line in stdout.splitlines() if line.startswith("ALIVE "))
    assert "train" in json.loads(alive[len("ALIVE ") :]), "the root was in the file while the process lived"
    tree = file_tree(tmp_path / "otel")
    root, epochs = one_root(tree)
    assert (root.status.status_code, root.status.description) == (StatusCode.ERROR, status)
    assert root.attributes[sc.ATTR_ERROR_TYPE] == error_type
    (exception,) = [e for e in root.events if e.name == "exception"]
    assert exception.attributes["exception.type"] == error_type
    assert "in loss" in exception.attributes["exception.stacktrace"], "the traceback reaches the raise"
    assert [e.attributes[sc.ATTR_EPOCH] for e in epochs] == [1, 2]
    assert epochs[0].status.status_code is StatusCode.UNSET
    assert (epochs[1].status.description, epochs[1].attributes[sc.ATTR_ERROR_TYPE]) == (status, error_type)


@pytest.mark.parametrize(
    ("fault", "reason", "epochs"),
    [("patience", sc.STOP_EARLY_STOPPING, 10), ("time", sc.STOP_TIME_LIMIT, 10)],
)
def test_an_early_end_says_why(data, tmp_path, fault, reason, epochs):
    stdout, tree = run_training(fault, data, tmp_path, epochs=epochs)
    assert "FINISHED" in stdout
    root, spans = one_root(tree)
    assert root.status.status_code is StatusCode.UNSET, root.status.description
    assert root.attributes[sc.ATTR_STOP_REASON] == reason
    completed = root.attributes[sc.ATTR_EPOCHS_COMPLETED]
    assert completed == max(e.attributes[sc.ATTR_EPOCH] for e in spans) < epochs
    (event,) = [e for e in root.events if e.name == sc.EVENT_EARLY_STOP]
    assert event.attributes[sc.ATTR_MESSAGE].endswith(f"{completed} of {epochs} epochs")


def test_sigterm_mid_epoch_ends_the_run_and_exits_as_the_signal_would(data, tmp_path):
    proc = signalled(signal.SIGTERM, data, tmp_path)
    assert proc.returncode == -signal.SIGTERM
    root, epochs = one_root(file_tree(tmp_path / "otel"))
    assert (root.status.status_code, root.status.description) == (StatusCode.ERROR, "terminated by SIGTERM")
    assert [e.attributes[sc.ATTR_EPOCH] for e in epochs] == [1, 2]
    assert epochs[0].status.status_code is StatusCode.UNSET, "the epoch that finished is kept"
    assert epochs[1].status.description == "terminated by SIGTERM"
    assert root.attributes[sc.ATTR_OVERHEAD] > 0, "measured before the root ended"


def test_sigkill_mid_epoch_leaves_a_file_that_replays_as_a_whole_tree(data, tmp_path):
    proc = signalled(signal.SIGKILL, data, tmp_path)
    assert proc.returncode == -signal.SIGKILL
    root, epochs = one_root(file_tree(tmp_path / "otel"))  # read as send and report read it
    assert (root.status.status_code, root.status.description) == (StatusCode.ERROR, sc.UNCLOSED)
    assert [e.attributes[sc.ATTR_EPOCH] for e in epochs] == [1, 2]
    assert epochs[0].status.status_code is StatusCode.UNSET, "the epoch that finished is kept"
    assert epochs[1].status.description == sc.UNCLOSED
    (run,) = otel_report.read(sorted((tmp_path / "otel").glob("*.jsonl"))).runs
    assert run.spans[0].status == f"ERROR: {sc.UNCLOSED}", "the report shows the killed run's root"
    assert report_answer.outcome(run).startswith("killed: the process ended without closing it")
    assert not any("own time" in line for line in report_answer.answer(run)), "never measured"
