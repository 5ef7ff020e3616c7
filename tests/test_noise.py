"""Comparisons that know noise (apps/report_compare.py): a change is beyond noise where the means differ
by more than three standard errors from each run's own spread and by more than the drift between two
runs; two runs of the same training read no significant change; a dataloader made slower is flagged,
and ``report A B --fail-if-slower PCT`` exits 1 on it, with one line naming it."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from otel_callbacks import semconv as sc
from otel_callbacks.apps.report import CallbackRow, read
from otel_callbacks.apps.report_compare import Change, Sample, compare
from tests.test_telemetry import run_python

MS = 1e-3
DRAWN = importlib.util.find_spec("plotly") is not None  # the page; the gate works without it


def test_a_histograms_values_spread_over_their_bucket():
    row = CallbackRow(
        "train", "e", "c", "user", calls=4, total_s=4 * 0.15, buckets=[0, 4, 0], bounds=[0.1, 0.2]
    )
    sample = Sample.of_histogram(row)
    assert (sample.n, sample.mean) == (4, pytest.approx(0.15))
    assert sample.var == pytest.approx(0.1**2 / 12), "all in one bucket: the bucket's own spread"


@pytest.mark.parametrize(
    ("before", "after", "beyond"),
    [
        (Sample(50, 10 * MS, (0.5 * MS) ** 2), Sample(50, 10.2 * MS, (0.5 * MS) ** 2), False),  # within drift
        (Sample(50, 10 * MS, (0.5 * MS) ** 2), Sample(50, 13 * MS, (0.5 * MS) ** 2), True),  # +30%, tight
        (Sample(3, 10 * MS, (8 * MS) ** 2), Sample(3, 13 * MS, (8 * MS) ** 2), False),  # +30%, too spread out
        (Sample(1, 10 * MS, 0.0), Sample(1, 20 * MS, 0.0), False),  # one value each: no spread to judge by
    ],
)
def test_a_change_is_beyond_noise_past_three_standard_errors_and_the_drift(before, after, beyond):
    change = Change("phase", "dataloader", before, after)
    assert change.significant is beyond
    if before.n == 1:
        assert change.noise is None


TRAIN = """
import sys, time
import otel_callbacks
from tests.engines import DetectionTrainer, run_train

wait = float(sys.argv[1])  # the dataloader; forward and backward take 4 ms
run_train(DetectionTrainer(), epochs=3, batches=30, val_batches=2,
          wait=lambda: time.sleep(wait), compute=lambda: time.sleep(0.004))
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs of the same training and one whose dataloader waits 60% longer, a file set each."""
    root = tmp_path_factory.mktemp("runs")
    for name, wait in (("first", 0.005), ("again", 0.005), ("slower", 0.008)):
        out = run_python(
            f"import sys; sys.argv[1:] = ['{wait}']\n" + TRAIN, {"OTEL_CALLBACKS_DIR": str(root / name)}
        )
        assert out.returncode == 0, out.stderr
    return root


def test_two_runs_of_the_same_training_read_no_significant_change(runs):
    changes = compare(
        read(sorted((runs / "first").glob("*.jsonl"))), read(sorted((runs / "again").glob("*.jsonl")))
    )
    assert [c.name for c in changes if c.significant] == []
    judged = [c for c in changes if c.noise is not None]
    assert {c.name for c in judged} >= {"epoch, mean", sc.PHASE_BATCH, sc.PHASE_DATALOADER}


def test_a_slower_dataloader_is_beyond_noise(runs):
    changes = compare(
        read(sorted((runs / "first").glob("*.jsonl"))), read(sorted((runs / "slower").glob("*.jsonl")))
    )
    (dataloader,) = [c for c in changes if c.name == sc.PHASE_DATALOADER]
    assert dataloader.significant and dataloader.before.n == 90, "every wait, from the metrics"
    (batch,) = [c for c in changes if c.name == sc.PHASE_BATCH]
    assert not batch.significant, "the step did not change"


def report(*args: str) -> subprocess.CompletedProcess:
    code = "from otel_callbacks.apps.cli import main; raise SystemExit(main())"
    return subprocess.run([sys.executable, "-c", code, "report", *args], capture_output=True, text=True)


def test_fail_if_slower_is_a_ci_gate(runs, tmp_path):
    page = str(tmp_path / "page.html")
    same = report(str(runs / "first"), str(runs / "again"), "-o", page, "--fail-if-slower", "10")
    assert same.returncode == 0, same.stderr
    assert "nothing slower beyond noise and 10%" in same.stdout
    if not DRAWN:  # a CI gate needs no Plotly (the OpenTelemetry 1.28 stage has none)
        assert "no page written (it needs Plotly" in same.stdout
    else:
        page_text = Path(page).read_text()
        assert "no significant change: every difference judged is within the runs&#x27; noise" in page_text
    slower = report(str(runs / "first"), str(runs / "slower"), "-o", page, "--fail-if-slower", "10")
    assert slower.returncode == 1, slower.stderr
    (line,) = slower.stderr.strip().splitlines()
    assert line.startswith("otel-callbacks report: slower beyond noise and 10%: dataloader (phase), mean: ")
    assert "beyond noise of" in line
    assert (
        report(str(runs / "first"), str(runs / "slower"), "-o", page, "--fail-if-slower", "100").returncode
        == 0
    )
    if DRAWN:
        assert re.search(r"<p class='noise'>\d change\(s\) beyond noise[;<]", Path(page).read_text())
    one = report(str(runs / "first"), "-o", page, "--fail-if-slower", "10")
    assert one.returncode == 2 and "--fail-if-slower takes a percentage >= 0 and two runs" in one.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = report(str(runs / "first"), str(empty), "-o", page, "--fail-if-slower", "10")
    assert nothing.returncode == 2, nothing.stderr
