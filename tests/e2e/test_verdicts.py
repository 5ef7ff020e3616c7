"""What bounds a real training, in the report's answer, on its root and epochs: a dataset whose
``__getitem__`` sleeps makes it input-bound; an uploader callback that sleeps, bound by callbacks. And
comparisons that know noise on real trainings: two runs of the same training read no significant
change on any row; the one whose dataloader sleeps is flagged, and fails ``--fail-if-slower``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from otel_callbacks import semconv as sc
from otel_callbacks.apps import report as otel_report
from otel_callbacks.apps import report_answer
from otel_callbacks.apps.report_compare import compare, said
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


@pytest.fixture(scope="module")
def trainings(data, tmp_path_factory):
    """The trainings' telemetry directories: the same one twice, one with a slow dataset, one with a
    slow callback."""
    root = tmp_path_factory.mktemp("trainings")
    for name in ("plain", "again", sc.BOUND_INPUT, sc.BOUND_CALLBACKS):
        code = f"import sys; sys.argv[1:] = [{str(data)!r}, {str(root / name)!r}, {name!r}]\n" + TRAIN
        out = run_python(code, {"OTEL_CALLBACKS_DIR": str(root / name / "otel")}, timeout=600, cwd=root)
        assert out.returncode == 0, out.stderr[-3000:]
        (root / name / "table.txt").write_text(out.stdout)
    return root


@pytest.mark.parametrize(
    ("cause", "says"),
    [
        (sc.BOUND_INPUT, "the dataloader wait is"),
        (sc.BOUND_CALLBACKS, "checkpoint_uploader on on_fit_epoch_end"),
    ],
)
def test_a_real_training_says_what_bounds_it(trainings, cause, says):
    assert f"bound by {cause}: " in (trainings / cause / "table.txt").read_text(), "the timing table says it"
    run = train_run(trainings / cause)
    root = run.spans[0].attributes
    assert root[sc.ATTR_BOUND_BY] == cause and says in root[sc.ATTR_BOUND_REASON]
    assert [e.attributes[sc.ATTR_BOUND_BY] for e in run.epochs()] == [cause, cause], "each epoch's own"
    answer = report_answer.answer(run)
    assert f"bound by {cause}: {root[sc.ATTR_BOUND_REASON]}" in answer, answer


def train_run(directory: Path) -> otel_report.RunView:
    (run,) = [r for r in files(directory).runs if r.name == sc.PHASE_TRAIN]
    return run


def files(directory: Path) -> otel_report.Report:
    return otel_report.read(sorted((directory / "otel").glob("*.jsonl")))


def test_two_real_runs_of_the_same_training_read_no_significant_change(trainings):
    changes = compare(files(trainings / "plain"), files(trainings / "again"))
    assert [(c.name, said(c)) for c in changes if c.significant] == []
    assert {c.name for c in changes if c.noise is not None} >= {
        "epoch, mean",
        sc.PHASE_BATCH,
        sc.PHASE_DATALOADER,
    }


def test_a_real_training_whose_dataloader_slowed_fails_the_gate(trainings, tmp_path):
    changes = compare(files(trainings / "plain"), files(trainings / sc.BOUND_INPUT))
    (dataloader,) = [c for c in changes if c.name == sc.PHASE_DATALOADER]
    assert dataloader.significant
    code = "from otel_callbacks.apps.cli import main; raise SystemExit(main())"
    before, after = str(trainings / "plain" / "otel"), str(trainings / sc.BOUND_INPUT / "otel")
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "report",
            before,
            after,
            "-o",
            str(tmp_path / "r.html"),
            "--fail-if-slower",
            "30",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1, out.stderr
    assert "otel-callbacks report: slower beyond noise and 30%: " in out.stderr
