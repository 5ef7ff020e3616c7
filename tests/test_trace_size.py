"""A 300-epoch x 1000-batch training makes a trace Jaeger can open: the span budget bounds it,
slow invocations are never dropped, and the metrics still count every call."""

from __future__ import annotations

import time
from collections import Counter
from types import SimpleNamespace

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


GAPS = ("checkpoint", "clear_memory", "val_metrics", "strip_optimizer", "finalize", "cleanup")


@pytest.mark.parametrize("settings", [Settings(summary=False)], indirect=True)  # the budget a user gets
def test_every_epoch_of_a_long_training_keeps_sampled_batches_to_the_last(recorded):
    """The budget is planned over the planned epochs: no epoch, the last ones included, is left
    without batch spans, the trace stays within the budget, and no gap under 1 ms is a span."""
    trainer = DetectionTrainer()
    trainer.args = SimpleNamespace(epochs=300)  # what Ultralytics' trainer knows when training starts
    trainer.add_callback("on_train_batch_end", lambda t: None)
    run_train(trainer, epochs=300, batches=1000, val_batches=5)

    spans = recorded.spans()
    assert len(spans) <= Settings().max_spans, len(spans)
    phases = [s for s in spans if sc.ATTR_PHASE in s.attributes]
    sampled = Counter(s.attributes[sc.ATTR_EPOCH] for s in phases if s.name == "batch")
    assert set(sampled) == set(range(1, 301)), (
        f"epochs without batch spans: {set(range(1, 301)) - set(sampled)}"
    )
    assert min(sampled.values()) >= 3, "at least the first batches of every epoch"
    epochs = {s.attributes[sc.ATTR_EPOCH]: s for s in phases if s.name == "epoch"}
    cut = {
        n: e.attributes[sc.ATTR_SAMPLING_CUT_AT]
        for n, e in epochs.items()
        if sc.ATTR_SAMPLING_CUT_AT in e.attributes
    }
    assert cut, (
        "the share of an epoch is smaller than its 13 sampled batches: the epoch says where it was cut"
    )
    for number, at in cut.items():
        indices = [
            s.attributes[sc.ATTR_BATCH_INDEX]
            for s in phases
            if s.name == "batch" and s.attributes[sc.ATTR_EPOCH] == number
        ]
        assert max(indices) < at, (number, at, indices)
    assert not [s.name for s in phases if s.name in GAPS and s.end_time - s.start_time < 1e6], (
        "no gap under 1 ms"
    )
