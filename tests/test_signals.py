"""SIGTERM (telemetry/signals.py) and SIGKILL, sent for real to a synthetic training in a subprocess:
the run ends ERROR with the reason, the file holds the whole tree, the process ends as the signal
would end it; an application's own handler is left alone or chained; a setting turns it off."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from opentelemetry.trace import StatusCode

from otel_callbacks import semconv as sc
from otel_callbacks.apps.send import spans as request_spans
from otel_callbacks.telemetry import otlp_file
from tests.test_phases import Tree

ROOT = Path(__file__).resolve().parents[1]

TRAINING = """
import signal, sys, time
from tests.engines import DetectionTrainer

if sys.argv[1] == "handler-first":
    signal.signal(signal.SIGTERM, lambda s, f: (print("APP", flush=True), sys.exit(0)))
trainer = DetectionTrainer()
trainer.run_callbacks("on_pretrain_routine_start")
trainer.run_callbacks("on_pretrain_routine_end")
for epoch in range(1000):
    trainer.epoch = epoch
    trainer.run_callbacks("on_train_epoch_start")
    if epoch == 1 and sys.argv[1] == "handler-later":  # the application's, after ours; chained at epoch 2
        signal.signal(signal.SIGTERM, lambda s, f: (print("APP", flush=True), sys.exit(3)))
    if epoch == 2:
        print("MID-EPOCH", flush=True)
        time.sleep(60)
    trainer.run_callbacks("on_train_epoch_end")
    trainer.run_callbacks("on_fit_epoch_end")
"""


def terminated(
    case: str, tmp_path: Path, number: int = signal.SIGTERM, wait: float = 0.0, **env: str
) -> tuple[subprocess.Popen, Tree, float]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PYTEST"))}
    environment.update(
        PYTHONPATH=str(ROOT), OTEL_CALLBACKS_DIR=str(tmp_path), OTEL_CALLBACKS_SUMMARY="0", **env
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", TRAINING, case], env=environment, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "MID-EPOCH"
    time.sleep(wait)
    sent = time.monotonic()
    proc.send_signal(number)
    proc.wait(30)
    elapsed = time.monotonic() - sent
    proc.output = proc.stdout.read()
    spans = [
        s
        for path in tmp_path.glob("*.jsonl")
        for r in otlp_file.read_file(path)
        if hasattr(r, "resource_spans")
        for s in request_spans(r)
    ]
    return proc, Tree(spans), elapsed


def test_sigterm_ends_the_run_flushes_and_terminates_as_the_signal_would(tmp_path):
    proc, tree, elapsed = terminated("default", tmp_path, OTEL_CALLBACKS_SHUTDOWN_TIMEOUT="3")
    assert proc.returncode == -signal.SIGTERM, "killed by SIGTERM, as without otel_callbacks"
    assert elapsed < 3 + 2, f"flushed within the shutdown timeout ({elapsed:.1f} s)"
    (root,) = [s for s in tree.spans if s.parent is None]
    assert (root.name, root.status.status_code, root.status.description) == (
        "train",
        StatusCode.ERROR,
        "terminated by SIGTERM",
    )
    assert all(tree.parent(s) is not None for s in tree.spans if s is not root), "no orphans"
    epochs = sorted(tree.phases("epoch"), key=lambda s: s.start_time)
    assert [e.status.status_code for e in epochs] == [StatusCode.UNSET, StatusCode.UNSET, StatusCode.ERROR]
    assert epochs[-1].status.description == "terminated by SIGTERM"


def test_an_application_handler_set_first_is_left_alone(tmp_path):
    proc, _, _ = terminated("handler-first", tmp_path)
    assert proc.returncode == 0 and "APP" in proc.output


def test_an_application_handler_set_later_is_chained(tmp_path):
    proc, tree, _ = terminated("handler-later", tmp_path)
    assert proc.returncode == 3 and "APP" in proc.output, "the application's handler decides"
    (root,) = tree.phases("train")
    assert root.status.description == "terminated by SIGTERM"


def test_the_setting_turns_it_off(tmp_path):
    # Killed as by default, after the file's export delay (0.5 s) has written the open records.
    proc, tree, _ = terminated("default", tmp_path, wait=0.8, OTEL_CALLBACKS_SIGTERM="false")
    assert proc.returncode == -signal.SIGTERM
    (root,) = tree.phases("train")
    assert root.status.description == sc.UNCLOSED, "nothing closed the run: the file's record says so"


def test_sigkill_loses_at_most_the_last_half_second_and_the_file_repairs_the_tree(tmp_path):
    """Killed 0.8 s after its second epoch ended: that epoch is in the file (the file is written every
    0.5 s); the run and the third epoch, never closed, come back from their open records."""
    proc, tree, _ = terminated("default", tmp_path, signal.SIGKILL, wait=0.8)
    assert proc.returncode == -signal.SIGKILL
    (root,) = [s for s in tree.spans if s.parent is None]
    assert all(tree.parent(s) is not None for s in tree.spans if s is not root), "no orphans"
    assert (root.name, root.status.status_code, root.status.description) == (
        "train",
        StatusCode.ERROR,
        "the process ended without closing this phase",
    )
    epochs = sorted(tree.phases("epoch"), key=lambda s: s.start_time)
    assert [e.attributes[sc.ATTR_EPOCH] for e in epochs] == [1, 2, 3]
    assert [e.status.status_code for e in epochs] == [StatusCode.UNSET, StatusCode.UNSET, StatusCode.ERROR]
    last_recorded = max(
        max(s.end_time for s in tree.spans if s.status.status_code is StatusCode.UNSET),
        epochs[2].start_time,  # the open record of the epoch the kill cut
    )
    assert root.end_time == epochs[2].end_time == last_recorded, "ended at the last moment the file holds"
    assert all(sc.ATTR_OPEN not in s.attributes for s in tree.spans)


def test_a_ddp_launch_open_when_the_telemetry_shuts_down_ends_with_the_reason(recorded, monkeypatch):
    """The launcher's span around its workers (torch.distributed.run forwards SIGTERM to them)."""
    from otel_callbacks import telemetry
    from otel_callbacks.ultralytics import ddp

    class Launcher:
        world_size, args = 2, None

    monkeypatch.delenv("TRACEPARENT", raising=False)
    ddp._start(Launcher())
    assert "TRACEPARENT" in os.environ, "handed to the workers"
    telemetry.current().shutdown(reason="terminated by SIGTERM")
    (launch,) = recorded.spans("train")
    assert launch.attributes[sc.ATTR_LAUNCHER] is True
    assert (launch.status.status_code, launch.status.description) == (
        StatusCode.ERROR,
        "terminated by SIGTERM",
    )
    assert "TRACEPARENT" not in os.environ, "the environment as it was"


FORKED = """
import multiprocessing, os, sys, time
from tests.engines import DetectionTrainer

trainer = DetectionTrainer()
for event in ("on_pretrain_routine_start", "on_pretrain_routine_end", "on_train_start"):
    trainer.run_callbacks(event)
trainer.epoch = 0
trainer.run_callbacks("on_train_epoch_start")  # the run and its epoch open; SIGTERM armed
time.sleep(0.8)  # their records in the file
child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))
child.start()
time.sleep(0.5)
child.terminate()  # SIGTERM, into the handler it inherited
child.join()
assert child.exitcode == -15, child.exitcode
pid = os.fork()
if pid == 0:
    sys.exit(0)  # a normal exit: the child's atexit runs
assert os.waitpid(pid, 0)[1] == 0
for event in ("on_train_batch_start", "on_train_batch_end", "on_train_epoch_end", "on_fit_epoch_end",
              "on_train_end", "teardown"):
    trainer.run_callbacks(event)
"""


def test_a_forked_child_never_ends_or_writes_the_parents_spans(tmp_path):
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PYTEST"))}
    environment.update(PYTHONPATH=str(ROOT), OTEL_CALLBACKS_DIR=str(tmp_path), OTEL_CALLBACKS_SUMMARY="0")
    out = subprocess.run([sys.executable, "-c", FORKED], env=environment, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    files = list(tmp_path.glob("*.traces*.jsonl"))
    assert len(files) == 1, "the parent's file alone"
    raw = [s for r in otlp_file._requests(files[0], None) for s in request_spans(r)]
    ids = [s.context.span_id for s in raw]
    assert len(ids) == len(set(ids)), "each span id once: no copy of the parent's spans from a child"
    assert {s.status.description for s in raw} == {None}, "nothing ended by the children's SIGTERM or exit"
    (train,) = [s for s in raw if s.name == "train" and sc.ATTR_OPEN not in s.attributes]
    assert train.status.status_code is StatusCode.UNSET
    assert any(sc.ATTR_OPEN in s.attributes for s in raw), "the parent's records were written before"
