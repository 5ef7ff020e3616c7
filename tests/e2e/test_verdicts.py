"""What bounds a real training, in the report's answer, on its root and epochs: a dataset whose
``__getitem__`` sleeps makes it input-bound; an uploader callback that sleeps, bound by callbacks."""

from __future__ import annotations

import pytest

from otel_callbacks import semconv as sc
from otel_callbacks.apps import report as otel_report
from otel_callbacks.apps import report_answer
from tests.test_telemetry import run_python

TRAIN = """
import sys, time
import otel_callbacks
otel_callbacks.install()
from ultralytics import YOLO
from ultralytics.data.dataset import YOLODataset

if sys.argv[3] == "input":  # a slow disk: each training image takes a tenth of a second to load
    load = YOLODataset.__getitem__
    def __getitem__(self, index):
        if self.augment:
            time.sleep(0.1)
        return load(self, index)
    YOLODataset.__getitem__ = __getitem__

model = YOLO("yolo11n.yaml")
if sys.argv[3] == "callbacks":
    def checkpoint_uploader(trainer):
        time.sleep(3)
    model.add_callback("on_fit_epoch_end", checkpoint_uploader)
model.train(data=sys.argv[1], epochs=2, imgsz=32, batch=4, device="cpu", workers=0, plots=False,
            project=sys.argv[2], name="bound", exist_ok=True)
"""


@pytest.mark.parametrize(
    ("cause", "says"),
    [
        (sc.BOUND_INPUT, "the dataloader wait is"),
        (sc.BOUND_CALLBACKS, "checkpoint_uploader on on_fit_epoch_end"),
    ],
)
def test_a_real_training_says_what_bounds_it(data, tmp_path, cause, says):
    otel = tmp_path / "otel"
    code = f"import sys; sys.argv[1:] = [{str(data)!r}, {str(tmp_path)!r}, {cause!r}]\n" + TRAIN
    out = run_python(code, {"OTEL_CALLBACKS_DIR": str(otel)}, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"bound by {cause}: " in out.stdout, "the timing table says it"
    (run,) = [r for r in otel_report.read(sorted(otel.glob("*.jsonl"))).runs if r.name == sc.PHASE_TRAIN]
    root = run.spans[0].attributes
    assert root[sc.ATTR_BOUND_BY] == cause and says in root[sc.ATTR_BOUND_REASON]
    assert [e.attributes[sc.ATTR_BOUND_BY] for e in run.epochs()] == [cause, cause], "each epoch's own"
    answer = report_answer.answer(run)
    assert f"bound by {cause}: {root[sc.ATTR_BOUND_REASON]}" in answer, answer
