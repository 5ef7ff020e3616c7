"""The training-health instruments on the SDK's in-memory reader: results by name, NaN and Inf,
progress, and the images counter brought up to date at collection."""

from __future__ import annotations

import math

from otel_callbacks import semconv as sc
from otel_callbacks import telemetry
from tests.engines import DetectionTrainer, run_train


def values(recorded, metric):
    return {tuple(sorted(a.items())): p.value for a, p in recorded.points(metric)}


def result(recorded, metric, name):
    key = tuple(sorted({sc.ATTR_RESULT_NAME: name, sc.ATTR_MODE: sc.MODE_TRAIN}.items()))
    return values(recorded, metric).get(key)


def test_a_nan_loss_sets_non_finite_and_the_value_keeps_the_last_finite_one(recorded):
    health = telemetry.current().health
    health.record_results({"train/box_loss": 1.25, "metrics/mAP50-95(B)": 0.5}, sc.MODE_TRAIN)
    assert result(recorded, sc.METRIC_RESULT, "train/box_loss") == 1.25
    assert recorded.points(sc.METRIC_RESULT_NON_FINITE) == [], "absent for results that never were"
    for not_finite in (math.nan, math.inf, -math.inf):
        health.record_results({"train/box_loss": not_finite, "metrics/mAP50-95(B)": 0.25}, sc.MODE_TRAIN)
        assert result(recorded, sc.METRIC_RESULT_NON_FINITE, "train/box_loss") == 1
        assert result(recorded, sc.METRIC_RESULT, "train/box_loss") == 1.25
        assert result(recorded, sc.METRIC_RESULT, "metrics/mAP50-95(B)") == 0.25
    health.record_results({"train/box_loss": 0.75}, sc.MODE_TRAIN)
    assert result(recorded, sc.METRIC_RESULT_NON_FINITE, "train/box_loss") == 0, "finite again"
    assert result(recorded, sc.METRIC_RESULT, "train/box_loss") == 0.75
    assert result(recorded, sc.METRIC_RESULT_NON_FINITE, "metrics/mAP50-95(B)") is None


class SizedTrainer(DetectionTrainer):
    """A trainer with what the health metrics read: a dataset of 10 images at batch 4."""

    def __init__(self):
        super().__init__()
        self.batch_size = 4
        self.train_loader = type("Loader", (), {"dataset": list(range(10))})()


def test_images_count_each_started_batch_up_to_the_dataset_and_move_inside_an_epoch(recorded):
    trainer = SizedTrainer()
    seen = []

    def collect(trainer):
        seen.append(sum(p.value for _, p in recorded.points(sc.METRIC_IMAGES)))

    trainer.add_callback("on_train_batch_end", collect)
    run_train(trainer, epochs=2, batches=3)
    # Batches of 4, 4 and 2 images an epoch: a collection after each batch sees the images so far.
    assert seen == [4, 8, 10, 14, 18, 20]
    (point,) = recorded.points(sc.METRIC_IMAGES)
    assert point[1].value == 20 and point[0] == {sc.ATTR_MODE: sc.MODE_TRAIN}
    assert values(recorded, sc.METRIC_EPOCHS_COMPLETED) == {((sc.ATTR_MODE, sc.MODE_TRAIN),): 2}
    assert values(recorded, sc.METRIC_PROCESS_MEMORY)[()] > 10 * 2**20
    assert not recorded.points(sc.METRIC_GPU_PEAK_ALLOCATED), "no CUDA device: absent, not zero"
