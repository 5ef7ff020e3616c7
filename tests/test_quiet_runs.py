"""Quiet predict runs (tracing/quiet_runs.py): the runs of an inference loop that sampling passed over
take a short path, and whatever needs more of one (a slow or failed call, an unexpected firing, an
abort, a long run) makes it what the generic path makes of such a run, from its start."""

from __future__ import annotations

import gc
from dataclasses import replace

import pytest
from opentelemetry.trace import StatusCode

from otel_callbacks import semconv as sc
from otel_callbacks import telemetry
from otel_callbacks.hooks import PREDICTOR_EVENTS
from otel_callbacks.tracing import current_tracker
from tests.engines import DetectionPredictor, run_predict
from tests.test_inference_loops import QUIET, spin

# The first run is traced (the interval's first), every later one quiet.
QUIETER = replace(QUIET, predict_traces_first=0, predict_traces_interval=3600.0, slow_threshold=0.05)
BATCH_STARTS = ("on_predict_batch_start", "otel_callbacks.hooks.on_predict_batch_start")


def quiet_predictor(recorded):
    """A predictor past its traced first run; skips where every run is traced (processors that see
    span starts cannot have deferred roots)."""
    if not telemetry.current().spans.direct:
        pytest.skip("every run is traced where the processors see span starts")
    predictor = DetectionPredictor()
    run_predict(predictor)
    recorded.exporter.clear()
    return predictor


def calls_of(recorded, event):
    return sum(p.count for a, p in recorded.points(sc.METRIC_CALLBACK_DURATION) if a[sc.ATTR_EVENT] == event)


def roots(recorded):
    return [s for s in recorded.spans() if s.parent is None]


@pytest.mark.parametrize("settings", [QUIETER], indirect=True)
def test_quiet_runs_count_every_call_and_phase_and_make_no_span(recorded):
    predictor = quiet_predictor(recorded)
    for run in range(20):
        run_predict(predictor, batches=2)
        if run == 7:
            recorded.points(sc.METRIC_CALLBACK_DURATION)  # a collection between runs
    predictor.run_callbacks("on_predict_start")
    predictor.run_callbacks("on_predict_batch_start")
    recorded.points(sc.METRIC_CALLBACK_DURATION)  # and one inside a run
    for event in ("on_predict_postprocess_end", "on_predict_batch_end", "on_predict_end"):
        predictor.run_callbacks(event)
    assert recorded.spans() == [], "a healthy short quiet run exports nothing"
    assert calls_of(recorded, "on_predict_batch_start") == 1 * 3 + 20 * 2 + 1
    phases = {a[sc.ATTR_PHASE]: p.count for a, p in recorded.points(sc.METRIC_PHASE_DURATION)}
    assert phases[sc.PHASE_PREDICT] == 1 + 20 + 1 and phases[sc.PHASE_PREDICT_BATCH] == 3 + 40 + 1
    overhead = current_tracker().last_overhead_ns
    assert overhead is not None and 0 < overhead < 50_000_000, "a quiet run's own overhead is measured"


@pytest.mark.parametrize("settings", [replace(QUIETER, table_min_duration=0.2)], indirect=True)
def test_a_quiet_run_that_runs_long_gets_its_root_from_its_start_and_a_table_of_its_own_calls(
    recorded, capsys
):
    predictor = quiet_predictor(recorded)
    run_predict(predictor, batches=2)  # a quiet run before, whose values a collection drains later
    predictor.run_callbacks("on_predict_start")
    for batch in range(3):
        predictor.run_callbacks("on_predict_batch_start")
        if batch == 1:
            recorded.points(sc.METRIC_CALLBACK_DURATION)  # drains both runs' values mid-run
            spin(250_000_000)  # the run passes the table's duration: the next firing materializes it
        predictor.run_callbacks("on_predict_postprocess_end")
        predictor.run_callbacks("on_predict_batch_end")
    predictor.run_callbacks("on_predict_end")
    report = current_tracker().last_report
    assert report.callbacks[BATCH_STARTS].calls == 3, "its own calls, drained or not, none of the run before"
    assert report.phases[(sc.PHASE_PREDICT_BATCH,)][0] == 3, "its batches before it materialized too"
    assert report.run_ns >= 250_000_000
    (root,) = roots(recorded)
    assert root.name == sc.PHASE_PREDICT and root.status.status_code is StatusCode.UNSET
    assert root.end_time - root.start_time == pytest.approx(report.run_ns, abs=2_000_000), "from its start"
    assert capsys.readouterr().out.count("otel_callbacks: predict run took") == 1


@pytest.mark.parametrize("settings", [QUIETER], indirect=True)
def test_a_slow_call_in_a_quiet_run_is_a_child_of_the_runs_root(recorded):
    predictor = quiet_predictor(recorded)
    predictor.add_callback("on_predict_postprocess_end", lambda engine: spin(60_000_000))
    run_predict(predictor, batches=2)
    (root,) = roots(recorded)
    slow = [s for s in recorded.spans() if s.parent is not None]
    assert [s.attributes[sc.ATTR_BATCH_INDEX] for s in slow] == [0, 1]
    assert all(s.parent.span_id == root.context.span_id and s.attributes[sc.ATTR_SLOW] for s in slow)
    assert root.start_time <= slow[0].start_time and slow[-1].end_time <= root.end_time


@pytest.mark.parametrize("settings", [QUIETER], indirect=True)
def test_a_quiet_run_that_fails_ends_with_its_root_in_error(recorded):
    predictor = quiet_predictor(recorded)

    frames = iter(["bad frame"])

    def broken(engine):
        frame = next(frames, None)
        if frame:
            raise ValueError(frame)

    predictor.add_callback("on_predict_batch_end", broken)
    with pytest.raises(ValueError, match="bad frame"):
        run_predict(predictor)
    run_predict(predictor)  # the next frame's run ends the failed one
    (root,) = roots(recorded)
    assert root.status.status_code is StatusCode.ERROR
    (call,) = [s for s in recorded.spans() if s.parent is not None]
    assert call.name == "on_predict_batch_end broken" and call.status.status_code is StatusCode.ERROR
    assert call.attributes[sc.ATTR_ERROR_TYPE] == "ValueError"
    assert call.parent.span_id == root.context.span_id
    assert calls_of(recorded, "on_predict_batch_end") == 3 + 2 + 6, "the failed call counted too"


@pytest.mark.parametrize("settings", [QUIETER], indirect=True)
def test_an_unexpected_firing_in_a_quiet_run_goes_on_the_generic_path(recorded):
    predictor = quiet_predictor(recorded)
    predictor.run_callbacks("on_predict_start")
    predictor.run_callbacks("on_predict_batch_start")
    predictor.run_callbacks("on_predict_batch_start")  # the batch before never ended
    predictor.run_callbacks("on_predict_batch_end")
    predictor.run_callbacks("on_predict_end")
    (root,) = roots(recorded)
    assert root.status.status_code is StatusCode.ERROR
    assert root.status.description == "predict batch did not end before the next one started"
    assert current_tracker().last_report.phases[(sc.PHASE_PREDICT_BATCH,)][0] == 2


@pytest.mark.parametrize("settings", [QUIETER], indirect=True)
def test_a_quiet_run_open_at_exit_or_when_its_predictor_dies_ends_in_error(recorded):
    predictor = quiet_predictor(recorded)
    predictor.run_callbacks("on_predict_start")
    predictor.run_callbacks("on_predict_batch_start")
    current_tracker().close_all("process exit")
    other = DetectionPredictor()
    other.run_callbacks("on_predict_start")  # quiet too
    del other
    gc.collect()
    ended = sorted(roots(recorded), key=lambda s: s.start_time)
    assert [s.status.status_code for s in ended] == [StatusCode.ERROR] * 2
    assert ended[0].status.description == "process exit"
    assert "garbage collected" in ended[1].status.description
    phases = {a[sc.ATTR_PHASE]: p.count for a, p in recorded.points(sc.METRIC_PHASE_DURATION)}
    assert phases[sc.PHASE_PREDICT] == 1 + 2 and phases[sc.PHASE_PREDICT_BATCH] == 3 + 1


@pytest.mark.parametrize("settings", [QUIETER], indirect=True)
def test_a_quiet_runs_overhead_counts_its_start_and_closes_but_not_its_summary(recorded, monkeypatch):
    from otel_callbacks.tracing import quiet_runs, tables, tracker

    predictor = quiet_predictor(recorded)
    begin, batch_time, quiet_run = (
        quiet_runs.QuietRun.begin,
        tracker.PhaseTracker._batch_time,
        tables.Tables.quiet_run,
    )
    monkeypatch.setattr(quiet_runs.QuietRun, "begin", lambda *a: (spin(2_000_000), begin(*a)))
    monkeypatch.setattr(tracker.PhaseTracker, "_batch_time", lambda *a: (spin(2_000_000), batch_time(*a)))
    monkeypatch.setattr(tables.Tables, "quiet_run", lambda *a: (spin(50_000_000), quiet_run(*a)))
    run_predict(predictor, batches=1)
    assert 4_000_000 <= current_tracker().last_overhead_ns < 50_000_000, "as a table, the summary is not"


@pytest.mark.parametrize("settings", [replace(QUIETER, table_min_duration=0.2)], indirect=True)
def test_a_quiet_run_after_a_traced_one_tables_its_own_calls(recorded):
    predictor = quiet_predictor(recorded)
    run_predict(predictor, batches=2)  # quiet
    with recorded.tracer_provider.get_tracer("app").start_as_current_span("request"):
        run_predict(predictor, batches=4)  # traced, as the request's child: its own statistics
    predictor.run_callbacks("on_predict_start")  # quiet again, and long
    for _ in range(3):
        predictor.run_callbacks("on_predict_batch_start")
        predictor.run_callbacks("on_predict_postprocess_end")
        predictor.run_callbacks("on_predict_batch_end")
    spin(250_000_000)
    predictor.run_callbacks("on_predict_end")
    assert current_tracker().last_report.callbacks[BATCH_STARTS].calls == 3


@pytest.mark.parametrize("settings", [QUIETER], indirect=True)
def test_a_crash_out_of_a_quiet_run_ends_its_root_with_the_error(recorded):
    predictor = quiet_predictor(recorded)
    predictor.run_callbacks("on_predict_start")
    predictor.run_callbacks("on_predict_batch_start")
    current_tracker().crashed(predictor, RuntimeError("CUDA out of memory"))  # what the adapter reports
    (root,) = roots(recorded)
    assert root.status.status_code is StatusCode.ERROR
    assert root.status.description == "RuntimeError: CUDA out of memory"


@pytest.mark.parametrize("settings", [replace(QUIETER, summary_interval=1e-9)], indirect=True)
def test_a_failing_summary_never_reaches_the_prediction(recorded, monkeypatch):
    from otel_callbacks.tracing import tables

    predictor = quiet_predictor(recorded)

    def closed_stdout(text):
        raise BrokenPipeError("stdout closed")

    monkeypatch.setattr(tables, "emit", closed_stdout)
    for _ in range(3):
        run_predict(predictor)  # the summary is due at every run
    assert telemetry.current().errors_seen["BrokenPipeError"] >= 3
    phases = {a[sc.ATTR_PHASE]: p.count for a, p in recorded.points(sc.METRIC_PHASE_DURATION)}
    assert phases[sc.PHASE_PREDICT] == 1 + 3


@pytest.mark.parametrize("settings", [QUIETER], indirect=True)
def test_a_quiet_runs_calls_count_the_wrappers_cost_not_a_whole_firings_each(recorded, monkeypatch):
    # Its firings and closes are timed as they happen: each call adds the cost of a call inside a
    # firing (calibration.CallCosts.call_ns), not that of a firing of its own again.
    predictor = quiet_predictor(recorded)
    tracker = current_tracker()
    monkeypatch.setattr(tracker, "fast_call_ns", 1e9)
    monkeypatch.setattr(tracker, "inner_call_ns", 1e6)
    run_predict(predictor, batches=1)
    calls = sum(len(predictor.callbacks[event]) for event in PREDICTOR_EVENTS)
    assert calls * 1e6 <= tracker.last_overhead_ns < 1e9
