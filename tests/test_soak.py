"""Long trainings keep every promise: the soak harness past every internal threshold.

CI runs the short version with lowered thresholds (each crossed many times); ``pytest --long``
runs 10M callback calls at the default thresholds with no collection until the end, and prints
the figures that BENCHMARKS.md records.
"""

from __future__ import annotations

import gc
import threading
from collections import Counter

import pytest

from otel_callbacks import Limits, Settings, telemetry, tracing
from otel_callbacks import semconv as sc
from otel_callbacks.tracing import runs
from tests.soak import Soak, durations_by_callback, held_values, random_states
from tests.test_phases import Tree

LOWERED = Settings(
    summary=False,
    max_spans=400,
    batch_spans_first=2,
    batch_spans_every=7,
    limits=Limits(buffer_limit=100, reservoir_size=50, batch_window=8, batch_min=3, failures=5),
)
SHORT = {"epochs": 40, "batches": 300, "val_batches": 30}
LONG = {"epochs": 100, "batches": 25_000, "val_batches": 100}  # about 10M callback calls
SKELETON = ("train", "setup", "epoch", "val", "final_eval")  # phases that get spans past the budget
# A batch sampled just below the budget completes: its phase, its dataloader wait, two callbacks
# (a default hook and a counter) on each of its two events.
ONE_BATCH = 2 + 2 * 2


@pytest.fixture
def soak(request):
    return Soak(**(LONG if request.config.getoption("--long") else SHORT))


@pytest.fixture
def settings(request):
    return Settings(summary=False) if request.config.getoption("--long") else LOWERED


def test_a_long_training_keeps_every_promise(recorded, soak, settings):
    before = random_states()
    soak.run()
    held, lists = held_values()
    assert held <= lists * settings.limits.buffer_limit, "no list grew past the buffer limit"
    points = durations_by_callback(recorded)  # the first collection, after the whole run
    assert random_states() == before, "no global generator was drawn from, collections included"

    growth = soak.rss["end"] - soak.rss["warm"]
    print("\nsoak:", soak.figures(), f"(growth {growth / (1 << 20):+.1f} MiB)")
    assert growth < 16 << 20, soak.figures()

    for key, calls in soak.truth.items():
        assert points[key].count == calls, key
    report = tracing.current_tracker().last_report
    assert report is not None and report.mode == "train"
    for (event, callback), stats in report.callbacks.items():
        point = points[(event, callback)]
        assert stats.calls == point.count, (event, callback)
        assert stats.total_ns / 1e9 == pytest.approx(point.sum, rel=1e-9, abs=1e-9)
        assert len(stats.reservoir) == min(stats.calls, settings.limits.reservoir_size)
    crossed = [s for s in report.callbacks.values() if s.calls > settings.limits.reservoir_size]
    assert crossed, "the reservoir threshold was crossed"

    spans = recorded.spans()
    assert recorded.open_spans.open == {}
    skeleton = [s for s in spans if s.attributes.get(sc.ATTR_PHASE) in SKELETON]
    slow = [s for s in spans if any(e.name == sc.EVENT_SLOW_CALLBACK for e in s.events)]
    budget = settings.max_spans + ONE_BATCH
    assert len(spans) <= budget + len(skeleton) + len(slow), "spans within the budget"
    assert Counter(s.name for s in skeleton)["epoch"] == soak.epochs, "the skeleton stays whole"
    assert len(spans) < soak.calls / 10, "the budget was reached long before the end"

    gc.collect()
    tracker = tracing.current_tracker()
    assert tracker.states == {} and tracker._trainers == {}, "no engine state outlives its trainer"
    assert telemetry.current().errors_seen == {}


def test_four_trainers_in_four_threads_keep_their_own_trees_and_tables(recorded, monkeypatch):
    reports = []
    finish = runs.Run.finish
    monkeypatch.setattr(runs.Run, "finish", lambda run, *a: reports.append(finish(run, *a)) or reports[-1])
    soaks = [Soak(epochs=6, batches=150, val_batches=10) for _ in range(4)]
    before = random_states()
    threads = [threading.Thread(target=s.run, args=(f"thread{i}",)) for i, s in enumerate(soaks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert random_states() == before
    points = durations_by_callback(recorded)
    tree = Tree(recorded.spans())
    trains = tree.phases("train")
    assert len(trains) == 4 and len({t.context.trace_id for t in trains}) == 4
    traces = {s.context.trace_id for s in tree.spans}
    assert traces == {t.context.trace_id for t in trains}, "every span belongs to one of the four runs"
    for i, soak in enumerate(soaks):
        tag = f"{Soak.__module__}.thread{i}_"
        mine = [s for s in tree.spans if s.attributes.get(sc.ATTR_CALLBACK, "").startswith(tag)]
        assert len({s.context.trace_id for s in mine}) == 1, "one thread's callbacks stay in one tree"
        (report,) = [r for r in reports if any(c.startswith(tag) for _, c in r.callbacks)]  # one run each
        for key, calls in soak.truth.items():
            assert points[key].count == calls and report.callbacks[key].calls == calls, key
        defaults = report.callbacks[("on_train_batch_end", "otel_callbacks.hooks.on_train_batch_end")]
        assert defaults.calls == 6 * 150, "the shared default hook's calls went to this run's table"
