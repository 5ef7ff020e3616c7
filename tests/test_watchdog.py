"""The watchdog (tracing/watchdog.py): a callback that hangs is counted slow and gets stall spans with
every thread's stack while it still hangs; its return counts nothing more; the spans back off and
stop at their bound; a healthy run gets none; an interval of 0 turns it off."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from itertools import pairwise

import pytest

from otel_callbacks import Settings
from otel_callbacks import semconv as sc
from otel_callbacks.config import Limits, SettingsError
from otel_callbacks.tracing import watchdog
from otel_callbacks.tracing.slow import _HungCalls
from tests.e2e.backends import wait_until
from tests.engines import DetectionTrainer, run_predict, run_train
from tests.test_quiet_runs import QUIETER, quiet_predictor

WATCHED = Settings(default_hook_spans=True, gap_span_min=0, slow_threshold=0.1, watchdog_interval=0.02)


@pytest.fixture(autouse=True)
def _watchdog_interval_restored():
    """The process's watchdog looks at the shortest interval asked for: back to its own after a test."""
    yield
    if watchdog._watchdog is not None:
        watchdog._watchdog.interval = Settings.watchdog_interval


def slow_points(recorded) -> int:
    return sum(point.value for _, point in recorded.points(sc.METRIC_CALLBACK_SLOW))


def stalls(recorded) -> list:
    return sorted((s for s in recorded.spans() if s.name == sc.SPAN_STALL), key=lambda s: s.end_time)


class Hang:
    """A training in a thread of its own whose first callback on ``event`` blocks until released (or
    ``most`` seconds)."""

    def __init__(self, most: float = 30.0, event: str = "on_fit_epoch_end"):
        self.release = threading.Event()
        trainer = DetectionTrainer()

        def checkpoint_uploader(trainer):
            if not self.release.is_set():
                self.release.wait(most)
                self.release.set()

        trainer.add_callback(event, checkpoint_uploader)
        self.thread = threading.Thread(
            target=run_train, args=(trainer,), kwargs={"epochs": 1}, name="trainer"
        )
        self.thread.start()

    def end(self) -> None:
        self.release.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


@pytest.mark.parametrize("settings", [WATCHED], indirect=True)
def test_a_hung_callback_is_counted_slow_and_gets_a_stall_span_while_it_hangs(recorded):
    hang = Hang()
    try:
        wait_until(lambda: slow_points(recorded) == 1, 10, "the hung call counted slow")
        stall = wait_until(lambda: stalls(recorded), 10, "a stall span")[0]
        assert hang.thread.is_alive(), "all of it while the call hangs"
    finally:
        hang.end()
    assert slow_points(recorded) == 1, "its return counts nothing more"
    calls = [s for s in recorded.spans() if s.name != sc.SPAN_STALL]
    (call,) = [s for s in calls if s.attributes.get(sc.ATTR_SLOW)]  # its span and event, at its return
    assert call.attributes[sc.ATTR_CALLBACK].endswith("checkpoint_uploader")
    assert stall.parent.span_id == call.parent.span_id, "in the call's phase"
    assert 0 <= stall.start_time - call.start_time < 5_000_000, "from the call's start"
    attributes = stall.attributes
    assert attributes[sc.ATTR_EVENT] == "on_fit_epoch_end"
    assert attributes[sc.ATTR_CALLBACK] == call.attributes[sc.ATTR_CALLBACK]
    assert attributes[sc.ATTR_EPOCH] == 1 and attributes[sc.ATTR_THREAD_NAME] == "trainer"
    assert attributes[sc.ATTR_STALL_DURATION] >= 0.1
    stacks = attributes[sc.ATTR_STALL_STACKS]
    assert stacks.startswith("Thread ") and "(trainer, most recent call first)" in stacks.splitlines()[0]
    assert "in checkpoint_uploader" in stacks and "in wait" in stacks, "the hung thread's stack, first"
    assert "(MainThread, most recent call first)" in stacks, "every thread's"
    assert "otel_callbacks-watchdog" not in stacks


@pytest.mark.parametrize(
    "settings", [replace(WATCHED, batch_spans_first=0, batch_spans_every=0)], indirect=True
)
def test_a_per_batch_callback_that_hangs_in_an_unsampled_batch_is_seen_too(recorded):
    hang = Hang(event="on_train_batch_end")  # the wrapper's shortest path: no span of its own yet
    try:
        stall = wait_until(lambda: stalls(recorded), 10, "a stall span")[0]
        assert slow_points(recorded) == 1
    finally:
        hang.end()
    assert slow_points(recorded) == 1
    assert (
        stall.attributes[sc.ATTR_EVENT] == "on_train_batch_end" and stall.attributes[sc.ATTR_BATCH_INDEX] == 0
    )
    assert stall.parent is not None and stall.parent.span_id in {s.context.span_id for s in recorded.spans()}


@pytest.mark.parametrize("settings", [WATCHED], indirect=True)
def test_stall_spans_back_off_each_twice_as_long_into_the_hang_as_the_one_before(recorded):
    hang = Hang()
    try:
        wait_until(lambda: len(stalls(recorded)) >= 3, 10, "three stall spans")
    finally:
        hang.end()
    durations = [s.attributes[sc.ATTR_STALL_DURATION] for s in stalls(recorded)]
    assert durations[0] >= 0.1, "the first past the threshold"
    assert all(later >= 2 * earlier for earlier, later in pairwise(durations)), durations


BOUNDED = [
    replace(WATCHED, limits=Limits(stall_spans=2)),
    replace(WATCHED, limits=Limits(stall_spans_per_run=2)),
]


@pytest.mark.parametrize("settings", BOUNDED, indirect=True, ids=["per call", "per run"])
def test_stall_spans_stop_at_their_bound(recorded):
    hang = Hang()
    try:
        made = wait_until(lambda: len(found := stalls(recorded)) == 2 and found, 10, "two stall spans")
        time.sleep(2 * made[-1].attributes[sc.ATTR_STALL_DURATION] + 0.3)  # past the third one's time
    finally:
        hang.end()
    assert len(stalls(recorded)) == 2


def first_stall_of_a_hang(recorded):
    hang = Hang()
    try:
        return wait_until(lambda: stalls(recorded), 10, "a stall span")[0]
    finally:
        hang.end()


@pytest.mark.parametrize("settings", [WATCHED], indirect=True)
def test_the_stacks_keep_their_depth(recorded, monkeypatch):
    monkeypatch.setattr(watchdog, "_STACK_DEPTH", 2)
    stall = first_stall_of_a_hang(recorded)
    for thread in stall.attributes[sc.ATTR_STALL_STACKS].split("\n\n"):
        assert len(thread.splitlines()) <= 1 + 2, thread  # its header, its two innermost calls


@pytest.mark.parametrize("settings", [WATCHED], indirect=True)
def test_the_stacks_are_cut_at_their_size(recorded, monkeypatch):
    monkeypatch.setattr(watchdog, "_STACKS_MAX", 300)
    stall = first_stall_of_a_hang(recorded)
    stacks = stall.attributes[sc.ATTR_STALL_STACKS]
    assert len(stacks) <= 300 and stacks.endswith("\n... (cut)") and stacks.startswith("Thread ")


@pytest.mark.parametrize("settings", [WATCHED], indirect=True)
def test_a_healthy_training_gets_no_stall_and_no_slow_count(recorded):
    run_train(DetectionTrainer(), epochs=3, batches=20)
    assert stalls(recorded) == [] and slow_points(recorded) == 0


@pytest.mark.parametrize("settings", [replace(WATCHED, watchdog_interval=0)], indirect=True)
def test_an_interval_of_zero_turns_the_watchdog_off(recorded):
    hang = Hang(most=0.4)
    hang.thread.join(30)
    assert slow_points(recorded) == 1 and stalls(recorded) == [], "counted at its return only"


def test_the_interval_is_validated():
    with pytest.raises(SettingsError, match="OTEL_CALLBACKS_WATCHDOG_INTERVAL"):
        Settings.from_env({"OTEL_CALLBACKS_WATCHDOG_INTERVAL": "-1"})
    assert Settings.from_env({"OTEL_CALLBACKS_WATCHDOG_INTERVAL": "0"}).watchdog_interval == 0


@pytest.mark.parametrize(
    "settings", [replace(QUIETER, slow_threshold=0.1, watchdog_interval=0.02)], indirect=True
)
def test_a_quiet_predict_run_that_hangs_is_counted_while_it_hangs_with_no_stall_span(recorded):
    predictor = quiet_predictor(recorded)  # its next run is quiet: no root until something needs one
    release = threading.Event()
    predictor.add_callback("on_predict_postprocess_end", lambda predictor: release.wait(30))
    thread = threading.Thread(target=run_predict, args=(predictor,), kwargs={"batches": 1})
    thread.start()
    try:
        wait_until(lambda: slow_points(recorded) == 1, 10, "the hung call counted slow")
        time.sleep(0.3)  # past two thresholds
        assert stalls(recorded) == [], "no root to hang a stall span from"
    finally:
        release.set()
        thread.join(30)
    assert slow_points(recorded) == 1, "its return counts nothing more"
    (root,) = [s for s in recorded.spans() if s.parent is None]
    assert root.name == sc.PHASE_PREDICT, "its return made the run's root, as a slow call does"


def since_progress(recorded) -> list[float]:
    return [point.value for _, point in recorded.points(sc.METRIC_SINCE_PROGRESS)]


@pytest.mark.parametrize("settings", [WATCHED], indirect=True)
def test_the_seconds_since_the_training_moved_grow_while_it_hangs_and_are_zero_once_it_ends(recorded):
    assert since_progress(recorded) == [], "no training yet: no point"
    hang = Hang()
    try:
        wait_until(lambda: stalls(recorded), 10, "the hang")
        time.sleep(0.3)
        (first,) = since_progress(recorded)
        time.sleep(0.2)
        (second,) = since_progress(recorded)
        assert 0.3 <= first < second, (first, second)
    finally:
        hang.end()
    assert since_progress(recorded) == [0.0], "the alert on it resolves when the training ends"
    run_train(DetectionTrainer(), epochs=1, batches=2)
    assert since_progress(recorded) in ([0.0], []), "and stays so"


def test_a_slow_call_is_counted_once_whoever_sees_it_first():
    calls = _HungCalls()
    hung, finishing, nested_outer = (1, 10), (1, 20), (2, 30)
    assert calls.count(hung) and not calls.count(hung), "the watchdog counts a hung call once"
    assert calls.returns(hung), "its return counts nothing more"
    assert not calls.count(hung), "nor a later look that still sees its frame finishing"
    assert not calls.returns(finishing), "a slow call that returns first is counted by its return"
    assert not calls.count(finishing), "and not by a look that still sees its frame"
    calls.keep_only({nested_outer})  # both frames ended; an outer call still runs
    assert calls.claimed == set(), "forgotten once their frames ended: bounded"
    assert calls.count(nested_outer) and not calls.count(nested_outer)


def test_the_watchdog_knows_where_the_wrapper_runs_its_callback():
    # A frame on any other line is the wrapper's own work, before or after the callback: not a hang.
    assert len(watchdog.calls) == 2 and all(watchdog.calls.values())
