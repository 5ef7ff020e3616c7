"""A 300-epoch x 1000-batch training makes a trace Jaeger can open: the span budget bounds it,
slow invocations are never dropped, and the metrics still count every call."""

from __future__ import annotations

import time

import pytest

from otel_callbacks import Settings
from otel_callbacks import semconv as sc
from tests.engines import DetectionTrainer, run_train

SLOW = {(0, 500), (42, 7), (150, 999), (299, 0), (299, 640)}  # (epoch, batch) that take 3 ms


@pytest.mark.parametrize("settings", [Settings(slow_threshold=0.002)], indirect=True)
def test_long_training_stays_under_ten_thousand_spans_and_keeps_every_slow_call(recorded):
    trainer = DetectionTrainer()
    batch = {"index": -1}

    def count(t):
        batch["index"] += 1

    def sometimes_slow(t):
        if (t.epoch, batch["index"]) in SLOW:
            time.sleep(0.003)

    trainer.callbacks["on_train_epoch_start"].insert(0, lambda t: batch.update(index=-1))
    trainer.add_callback("on_train_batch_start", count)
    trainer.add_callback("on_train_batch_end", sometimes_slow)
    run_train(trainer, epochs=300, batches=1000, val_batches=5)

    spans = recorded.spans()
    assert len(spans) < 10_000, len(spans)
    print(f"{len(spans)} spans")
    assert recorded.open_spans.open == {}
    slow = {
        (s.attributes[sc.ATTR_EPOCH] - 1, s.attributes[sc.ATTR_BATCH_INDEX])
        for s in spans
        if s.attributes.get(sc.ATTR_CALLBACK, "").endswith("sometimes_slow")
        and any(e.name == sc.EVENT_SLOW_CALLBACK for e in s.events)
    }
    assert slow >= SLOW, "every slow invocation keeps its span, budget or not"
    phases = [s.name for s in spans if sc.ATTR_PHASE in s.attributes]
    assert phases.count("epoch") == 300 and phases.count("val") == 301, "the run's skeleton is complete"
    assert phases.count("train") == 1 and phases.count("final_eval") == 1
    counts = {(a[sc.ATTR_EVENT], a[sc.ATTR_CALLBACK]): p.count for a, p in recorded.durations()}
    assert counts[("on_train_batch_end", f"{__name__}.{sometimes_slow.__qualname__}")] == 300_000
    assert counts[("on_train_batch_start", "otel_callbacks.hooks.on_train_batch_start")] == 300_000
