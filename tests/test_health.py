"""The training-health instruments on the SDK's in-memory reader: results by name, NaN and Inf,
progress, and the images counter brought up to date at collection."""

from __future__ import annotations

import importlib.util
import math

from otel_callbacks import semconv as sc
from otel_callbacks import telemetry
from tests.engines import DetectionTrainer, run_train


def snapshot(recorded):
    """One collection: metric name -> {sorted attribute items: value} (SDK 1.28's synchronous gauge
    reports a value at the first collection after it was set only, so each check reads once)."""
    data = recorded.reader.get_metrics_data()
    found = {}
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                found[metric.name] = {
                    tuple(sorted(p.attributes.items())): getattr(p, "value", None)
                    for p in metric.data.data_points
                }
    return found


def result(values, metric, name):
    key = tuple(sorted({sc.ATTR_RESULT_NAME: name, sc.ATTR_MODE: sc.MODE_TRAIN}.items()))
    return values.get(metric, {}).get(key)


def test_a_nan_loss_sets_non_finite_and_the_value_keeps_the_last_finite_one(recorded):
    health = telemetry.current().health
    health.record_results({"train/box_loss": 1.25, "metrics/mAP50-95(B)": 0.5}, sc.MODE_TRAIN)
    values = snapshot(recorded)
    assert result(values, sc.METRIC_RESULT, "train/box_loss") == 1.25
    assert sc.METRIC_RESULT_NON_FINITE not in values, "absent for results that never were"
    for not_finite in (math.nan, math.inf, -math.inf):
        health.record_results({"train/box_loss": not_finite, "metrics/mAP50-95(B)": 0.25}, sc.MODE_TRAIN)
        values = snapshot(recorded)
        assert result(values, sc.METRIC_RESULT_NON_FINITE, "train/box_loss") == 1
        assert result(values, sc.METRIC_RESULT, "train/box_loss") in (1.25, None), "never NaN"
        assert result(values, sc.METRIC_RESULT, "metrics/mAP50-95(B)") == 0.25
    health.record_results({"train/box_loss": 0.75}, sc.MODE_TRAIN)
    values = snapshot(recorded)
    assert result(values, sc.METRIC_RESULT_NON_FINITE, "train/box_loss") == 0, "finite again"
    assert result(values, sc.METRIC_RESULT, "train/box_loss") == 0.75
    assert result(values, sc.METRIC_RESULT_NON_FINITE, "metrics/mAP50-95(B)") is None


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
    values = snapshot(recorded)
    train = ((sc.ATTR_MODE, sc.MODE_TRAIN),)
    assert values[sc.METRIC_IMAGES] == {train: 20}
    assert values[sc.METRIC_EPOCHS_COMPLETED] == {train: 2}
    if importlib.util.find_spec("psutil"):  # Ultralytics' dependency; absent, so is the series
        assert values[sc.METRIC_PROCESS_MEMORY][()] > 10 * 2**20
    else:
        assert sc.METRIC_PROCESS_MEMORY not in values
    assert sc.METRIC_GPU_PEAK_ALLOCATED not in values, "no CUDA device: absent, not zero"
