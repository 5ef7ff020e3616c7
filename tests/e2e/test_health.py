"""Training health as metrics on a real CPU training, compared with what Ultralytics wrote itself."""

from __future__ import annotations

import csv

import pytest

from otel_callbacks import install
from otel_callbacks import semconv as sc

ultralytics = pytest.importorskip("ultralytics")
from ultralytics import YOLO  # noqa: E402

TRAIN_IMAGES = 8  # demo.make_dataset's train split; batch 4: two batches an epoch


def by_name(recorded, metric):
    return {a.get(sc.ATTR_RESULT_NAME): p.value for a, p in recorded.points(metric)}


@pytest.mark.parametrize("recorded", ["direct"], indirect=True)
def test_the_health_metrics_carry_what_results_csv_says(recorded, train_args):
    install()
    model = YOLO("yolo11n.yaml")
    mid_epoch = []

    def images_so_far(trainer):  # a reader collecting in the second epoch's first batch
        if trainer.epoch == 1 and not mid_epoch:
            mid_epoch.append(sum(p.value for _, p in recorded.points(sc.METRIC_IMAGES)))

    model.add_callback("on_train_batch_end", images_so_far)
    model.train(**train_args)
    assert mid_epoch == [TRAIN_IMAGES + 4], "the counter moves inside an epoch"

    rows = list(csv.DictReader((model.trainer.save_dir / "results.csv").open()))
    last = {k.strip(): float(v) for k, v in rows[-1].items() if k.strip() not in ("epoch", "time")}
    results = by_name(recorded, sc.METRIC_RESULT)
    assert set(last) <= set(results) and "fitness" in results
    for name, value in last.items():
        assert results[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    modes = {a[sc.ATTR_MODE] for a, _ in recorded.points(sc.METRIC_RESULT)}
    assert modes == {sc.MODE_TRAIN}, "the final evaluation and epochs are the training's"
    assert not recorded.points(sc.METRIC_RESULT_NON_FINITE)

    ((_, images),) = recorded.points(sc.METRIC_IMAGES)
    assert images.value == 2 * TRAIN_IMAGES
    (completed,) = recorded.points(sc.METRIC_EPOCHS_COMPLETED)
    (planned,) = recorded.points(sc.METRIC_EPOCHS_PLANNED)
    assert completed[1].value == planned[1].value == train_args["epochs"] == len(rows)
    (resident,) = recorded.points(sc.METRIC_PROCESS_MEMORY)
    assert resident[1].value > 100 * 2**20, "a training process holds PyTorch and the model"
    for absent in (sc.METRIC_GPU_PEAK_ALLOCATED, sc.METRIC_GPU_PEAK_RESERVED, sc.METRIC_GPU_UTILIZATION):
        assert not recorded.points(absent), f"{absent}: no GPU, no series"
