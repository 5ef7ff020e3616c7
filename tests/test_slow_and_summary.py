"""Slow-callback detection (absolute and relative thresholds) and the end-of-run timing table."""

from __future__ import annotations

import logging
import re
import time

import pytest

from otel_callbacks import Limits, Settings, tracing
from otel_callbacks import semconv as sc
from tests.engines import DetectionTrainer, run_train


def train_loop(trainer, batches, step_s=0.0):
    """A training whose batches take ``step_s`` outside callbacks (the forward/backward pass)."""
    trainer.run_callbacks("on_pretrain_routine_start")
    trainer.run_callbacks("on_pretrain_routine_end")
    trainer.run_callbacks("on_train_epoch_start")
    for _ in range(batches):
        trainer.run_callbacks("on_train_batch_start")
        time.sleep(step_s)
        trainer.run_callbacks("on_train_batch_end")
    trainer.run_callbacks("on_fit_epoch_end")
    trainer.run_callbacks("teardown")


def slow_warnings(caplog):
    return [r.getMessage() for r in caplog.records if "slow callback" in r.getMessage()]


@pytest.mark.parametrize(
    "settings",
    [Settings(slow_threshold=10.0, slow_batch_fraction=0.5, batch_spans_first=0, batch_spans_every=0)],
    indirect=True,
)
def test_relative_threshold_names_the_callback_keras_never_did(recorded, caplog):
    trainer = DetectionTrainer()
    calls = []

    def sometimes_slow_logger(t):
        calls.append(1)
        if len(calls) in (12, 14):
            time.sleep(0.03)  # over half the ~40 ms median batch, far under the 10 s absolute

    trainer.add_callback("on_train_batch_end", sometimes_slow_logger)
    train_loop(trainer, batches=16, step_s=0.04)

    name = f"{__name__}.{sometimes_slow_logger.__qualname__}"
    spans = [s for s in recorded.callback_spans() if s.attributes[sc.ATTR_CALLBACK] == name]
    assert [s.attributes[sc.ATTR_BATCH_INDEX] for s in spans] == [11, 13], "slow calls keep their span"
    for span in spans:
        (event,) = span.events
        assert event.name == sc.EVENT_SLOW_CALLBACK
        assert 0.015 < event.attributes["threshold_s"] < 0.03 < event.attributes["duration_s"]
        assert span.attributes[sc.ATTR_SLOW] is True, "a tag to search slow calls by"
    others = [s for s in recorded.spans() if s not in spans]
    assert others and not any(sc.ATTR_SLOW in s.attributes for s in others)
    (warning,) = slow_warnings(caplog)  # once per callback per run
    assert name in warning and "on_train_batch_end" in warning
    assert "fraction of the median batch time" in warning
    ((attributes, point),) = recorded.points(sc.METRIC_CALLBACK_SLOW)
    assert point.value == 2 and attributes[sc.ATTR_CALLBACK] == name
    assert attributes[sc.ATTR_EVENT] == "on_train_batch_end"


@pytest.mark.parametrize(
    "settings",
    [
        Settings(
            slow_threshold=10.0,
            slow_batch_fraction=0.5,
            batch_spans_first=0,
            batch_spans_every=0,
            limits=Limits(batch_window=8, batch_min=3),  # past 8 batches: every 2 batches
        )
    ],
    indirect=True,
)
def test_relative_threshold_follows_the_batches_past_its_window(recorded, caplog):
    trainer = DetectionTrainer()
    calls = []

    def logger(t):
        calls.append(1)
        if len(calls) in (24, 26):  # 12 ms: over half the early 10 ms batches, under half of 40 ms
            time.sleep(0.012)
        elif len(calls) == 25:
            time.sleep(0.035)  # over half of 40 ms

    trainer.add_callback("on_train_batch_end", logger)
    trainer.run_callbacks("on_pretrain_routine_start")
    trainer.run_callbacks("on_train_epoch_start")
    for step_s in [0.01] * 10 + [0.04] * 16:
        trainer.run_callbacks("on_train_batch_start")
        time.sleep(step_s)
        trainer.run_callbacks("on_train_batch_end")
    trainer.run_callbacks("teardown")
    name = f"{__name__}.{logger.__qualname__}"
    spans = [s for s in recorded.callback_spans() if s.attributes[sc.ATTR_CALLBACK] == name]
    assert [s.attributes[sc.ATTR_BATCH_INDEX] for s in spans] == [24], "only the call slow for now"
    (event,) = spans[0].events
    assert 0.015 < event.attributes["threshold_s"] < 0.035 < event.attributes["duration_s"]


@pytest.mark.parametrize(
    "settings",
    [Settings(slow_threshold=0.01, slow_batch_fraction=0.0, default_hook_spans=True)],
    indirect=True,
)
def test_absolute_threshold_for_non_batch_events_warns_once_per_run(recorded, caplog):
    trainer = DetectionTrainer()
    trainer.add_callback("on_train_epoch_end", lambda t: time.sleep(0.02))
    run_train(trainer, epochs=2, batches=1)
    run_train(trainer, epochs=1, batches=1)  # a second run warns again
    warnings = slow_warnings(caplog)
    assert len(warnings) == 2 and all("(threshold 0.0100 s, absolute)" in w for w in warnings)
    slow = [s for s in recorded.callback_spans() if s.events]
    assert [s.name for s in slow] == ["on_train_epoch_end <lambda>"] * 3, "the event and whose callback"
    ((_, point),) = recorded.points(sc.METRIC_CALLBACK_SLOW)
    assert point.value == 3


@pytest.mark.parametrize("settings", [Settings(slow_threshold=10.0, slow_batch_fraction=0.0)], indirect=True)
def test_relative_rule_can_be_turned_off(recorded, caplog):
    trainer = DetectionTrainer()
    trainer.add_callback("on_train_batch_end", lambda t: time.sleep(0.01))
    train_loop(trainer, batches=8, step_s=0.005)
    assert slow_warnings(caplog) == []
    assert recorded.points(sc.METRIC_CALLBACK_SLOW) == []


def test_table_numbers_match_the_spans_and_metrics_of_the_run(recorded, capsys):
    trainer = DetectionTrainer()
    trainer.add_callback("on_train_batch_end", lambda t: time.sleep(0.002))
    run_train(trainer, epochs=2, batches=5, val_batches=3)
    report = tracing.current_tracker().last_report
    assert report is not None and report.mode == "train"

    points = {(a[sc.ATTR_EVENT], a[sc.ATTR_CALLBACK]): p for a, p in recorded.durations()}
    rows = report.rows()
    assert {(e, c) for e, c, _ in rows} == set(points)
    for event, callback, stats in rows:
        point = points[(event, callback)]
        assert stats.calls == point.count
        assert stats.total_ns / 1e9 == pytest.approx(point.sum, rel=1e-9, abs=1e-12)
        assert point.min <= stats.p95_ns / 1e9 <= point.max
    assert [r[2].total_ns for r in rows] == sorted((r[2].total_ns for r in rows), reverse=True)
    top_event, top_callback, top = rows[0]
    assert top_event == "on_train_batch_end" and "<lambda>" in top_callback and top.calls == 10
    assert top.p95_ns >= 2_000_000

    (train,) = recorded.phase_spans("train")
    assert report.run_ns == pytest.approx(train.end_time - train.start_time, abs=200_000)
    assert train.attributes[sc.ATTR_OVERHEAD] == report.overhead_ns / 1e9 > 0, "the table's, on the root"
    phase_points = {}  # by phase, train and val modes together
    for attributes, point in recorded.points(sc.METRIC_PHASE_DURATION):
        count, total = phase_points.get(attributes[sc.ATTR_PHASE], (0, 0.0))
        phase_points[attributes[sc.ATTR_PHASE]] = (count + point.count, total + point.sum)
    by_phase = {}
    for path, (count, total) in report.phases.items():
        by_phase.setdefault(path[-1], [0, 0])
        by_phase[path[-1]][0] += count
        by_phase[path[-1]][1] += total
    for phase, (count, total) in by_phase.items():
        assert count == phase_points[phase][0], phase
        assert total / 1e9 == pytest.approx(phase_points[phase][1], rel=1e-9)
    assert set(report.phases) == {
        ("setup",),
        ("epoch",),
        ("epoch", "batch"),
        ("epoch", "dataloader"),
        ("epoch", "clear_memory"),
        ("epoch", "val"),
        ("epoch", "val", "dataloader"),
        ("epoch", "val", "val_batch"),
        ("epoch", "val", "val_metrics"),
        ("epoch", "checkpoint"),
        ("clear_memory",),
        ("final_eval",),
        ("final_eval", "strip_optimizer"),
        ("final_eval", "val"),
        ("final_eval", "val", "dataloader"),
        ("final_eval", "val", "val_batch"),
        ("final_eval", "val", "val_metrics"),
        ("finalize",),
        ("cleanup",),
    }
    assert report.phases["epoch", "batch"][0] == 10 and by_phase["val"][0] == 3
    assert 0 < report.overhead_ns < report.run_ns

    out = capsys.readouterr().out
    assert out.startswith("otel_callbacks: train run took")
    assert "phase breakdown:" in out and "instrumentation overhead:" in out
    assert out.count("train run took") == 1, "printed once"
    shares = phase_shares(out)
    assert shares["train"] == pytest.approx(100, abs=0.11)
    assert {"train/epoch/val/val_batch", "train/final_eval/strip_optimizer", "train/cleanup"} <= set(shares)
    for parent in shares:  # each level's lines, (no phase) included, add up to their parent (rounding aside)
        children = [p for p in shares if "/" in p and p.rsplit("/", 1)[0] == parent]
        if children:
            total = sum(shares[c] for c in children)
            assert total == pytest.approx(shares[parent], abs=0.05 * len(children) + 0.05), parent
    line = next(
        line for line in out.splitlines() if line.startswith("on_train_batch_end") and "<lambda>" in line
    )
    assert line.split()[2] == "10"


@pytest.mark.parametrize("settings", [Settings(summary=False)], indirect=True)
def test_summary_can_be_turned_off(recorded, capsys, caplog):
    caplog.set_level(logging.INFO, logger=sc.LOGGER_NAME)
    run_train(DetectionTrainer(), epochs=1, batches=1)
    assert capsys.readouterr().out == ""
    assert not [r for r in caplog.records if "run took" in r.getMessage()]


def test_summary_also_goes_through_logging(recorded, caplog):
    caplog.set_level(logging.INFO, logger=sc.LOGGER_NAME)
    run_train(DetectionTrainer(), epochs=1, batches=1)
    assert any(r.getMessage().startswith("otel_callbacks: train run took") for r in caplog.records)


def phase_shares(table):
    """'% run' of each line of the phase breakdown, by path ("train/epoch/val", "train/(no phase)")."""
    lines = table.split("phase breakdown:")[1].splitlines()[2:]
    shares, path = {}, []
    for line in lines:
        if not line.startswith("  ") or "%" not in line:
            break
        label = line[2:24]
        depth = (len(label) - len(label.lstrip())) // 2
        path = [*path[:depth], label.strip()]
        shares["/".join(path)] = float(line.split()[-1].rstrip("%"))
    return shares


def test_the_table_nests_phases_and_folds_fast_callbacks_into_one_line(recorded, capsys):
    trainer = DetectionTrainer()
    trainer.add_callback("on_train_batch_end", lambda t: time.sleep(0.002))
    run_train(trainer, epochs=2, batches=3, val_batches=2)
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("on_")]
    assert len(rows) == 1 and "<lambda>" in rows[0], "only the callback over 0.1 ms gets its own row"
    assert re.search(r"^\d+ more callbacks with a mean under 0.1 ms: \d+ calls", out, re.M)
    assert re.search(r"^      batch\s+6 ", out, re.M), "batches nested two levels under train"
    assert re.search(r"^      val\s+1 ", out, re.M) and re.search(r"^      val\s+2 ", out, re.M)
    assert "(one that made a span)" in out


def test_relative_threshold_is_the_rule_of_the_median_whichever_way_it_is_found():
    """The extremes settle the rule without a sort when they can; the result is the sort's."""
    import random
    import statistics

    from otel_callbacks.tracing.engines import EngineState
    from otel_callbacks.tracing.slow import RELATIVE_FLOOR_NS, update_relative_threshold

    draw, limits = random.Random(3), Limits(batch_window=9, batch_min=3)
    for _ in range(2000):
        scale = draw.choice([100_000, 1_000_000, 10_000_000, 100_000_000])
        state = EngineState(lambda: None, draw.choice([5_000_000, 50_000_000, 10**10]), limits.batch_window)
        state.batch_times.extend(draw.randrange(1, 4 * scale) for _ in range(draw.randrange(3, 10)))
        fraction = draw.choice([0.25, 0.5, 1.0])
        update_relative_threshold(state, fraction, limits)
        median = statistics.median(state.batch_times)
        expected = min(state.slow_ns, max(RELATIVE_FLOOR_NS, int(fraction * median)))
        assert state.batch_slow_ns == expected, (list(state.batch_times), fraction, state.slow_ns)
