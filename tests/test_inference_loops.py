"""Inference loops (a predict run per frame): no table per short run but one summary by kind, embedded
files bounded by rotation and read back as one set, open records made off the caller's thread."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from otel_callbacks import semconv as sc
from otel_callbacks import telemetry
from otel_callbacks.apps.cli import expand
from otel_callbacks.apps.send import spans as request_spans
from otel_callbacks.config import Limits, Settings
from otel_callbacks.telemetry import otlp_file
from otel_callbacks.telemetry.file_exporters import FileSpanExporter
from otel_callbacks.telemetry.open_phases import OpenPhase, OpenRecords
from otel_callbacks.tracing import current_tracker
from tests.engines import DetectionPredictor, DetectionTrainer, run_predict, run_train
from tests.otlp_receiver import Receiver

QUIET = Settings(table_min_duration=5.0, summary_interval=3600.0)


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.stop()


def failing_predict(predictor):
    predictor.run_callbacks("on_predict_start")
    predictor.run_callbacks("on_predict_batch_start")  # the model raised here: no end events


@pytest.mark.parametrize("settings", [QUIET], indirect=True)
def test_short_predict_runs_print_nothing_until_one_summary_at_exit(recorded, capsys):
    predictor = DetectionPredictor()
    for call in range(300):
        (failing_predict if call in (10, 20) else run_predict)(predictor)
    assert capsys.readouterr().out == "", "no table per short run"
    run_train(DetectionTrainer(), epochs=1, batches=2, val_batches=1)  # a training prints its table
    table = capsys.readouterr().out
    assert table.startswith("otel_callbacks: train run took") and "short runs" not in table
    telemetry.shutdown()
    summary = capsys.readouterr().out.splitlines()
    assert summary[0].startswith("otel_callbacks: 300 short runs since") and len(summary) == 3, summary
    kind, runs, mean, p95, slowest, failures = summary[2].split()
    assert (kind, runs, failures) == ("predict", "300", "2"), "every run and every failure counted"
    assert 0 < float(mean) <= float(slowest) and 0 < float(p95) <= float(slowest)


@pytest.mark.parametrize(
    "settings",
    # Due at every run; quiet runs noted in lists of 8 at most.
    [replace(QUIET, summary_interval=1e-9, limits=Limits(reservoir_size=4, buffer_limit=8))],
    indirect=True,
)
def test_a_summary_is_due_once_an_interval_and_counts_past_its_reservoir(recorded, capsys):
    predictor = DetectionPredictor()
    run_predict(predictor)
    first = capsys.readouterr().out
    assert first.startswith("otel_callbacks: 1 short runs since"), "due: printed with the run"
    tables = current_tracker()._tables
    tables.interval_ns = 1 << 62  # no longer due: the runs pile up past the reservoir of 4
    for _ in range(50):  # traced runs and quiet ones (where the tracer defers roots)
        run_predict(predictor)
    assert capsys.readouterr().out == ""
    predict = tables.short[sc.MODE_PREDICT]
    assert predict.durations.calls >= 40, "quiet runs folded in every 8"
    tables.flush()
    assert "otel_callbacks: 50 short runs since" in capsys.readouterr().out
    assert predict.durations.calls == 50 and len(predict.durations.reservoir) == 4


@pytest.mark.parametrize("settings", [replace(QUIET, table_min_duration=0.0)], indirect=True)
def test_a_run_as_long_as_the_threshold_prints_its_own_table(recorded, capsys):
    run_predict(DetectionPredictor())
    assert capsys.readouterr().out.startswith("otel_callbacks: predict run took")
    telemetry.shutdown()
    assert "short runs" not in capsys.readouterr().out


@pytest.mark.parametrize("settings", [replace(QUIET, summary=False)], indirect=True)
def test_the_summary_setting_silences_the_short_runs_too(recorded, capsys):
    run_predict(DetectionPredictor())
    telemetry.shutdown()
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("variable", "value"),
    [("OTEL_CALLBACKS_TABLE_MIN_DURATION", "-1"), ("OTEL_CALLBACKS_SUMMARY_INTERVAL", "0"),
     ("OTEL_CALLBACKS_FILE_MAX_BYTES", "64MB"), ("OTEL_CALLBACKS_FILE_BACKUPS", "-2")],
)  # fmt: skip
def test_invalid_values_name_the_variable_and_what_is_accepted(variable, value):
    with pytest.raises(ValueError, match=rf"{variable}='{value}' is not accepted; expected"):
        Settings.from_env({variable: value})


# The run's overhead ---------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [QUIET], indirect=True)
def test_the_runs_overhead_counts_its_start_and_end(recorded, monkeypatch):
    from otel_callbacks.tracing import run_lifecycle, runs

    slow_start = 2_000_000  # 2 ms added to opening the run's phase
    opened = run_lifecycle.RunLifecycle._new_run

    def slow_new_run(self, *args):
        opened(self, *args)
        spin(slow_start)

    monkeypatch.setattr(run_lifecycle.RunLifecycle, "_new_run", slow_new_run)
    closed = runs.Run.finish

    def slow_finish(self, end, fast):
        spin(slow_start)  # closing the run, before its table
        return closed(self, end, fast)

    monkeypatch.setattr(runs.Run, "finish", slow_finish)
    run_predict(DetectionPredictor())
    assert current_tracker().last_report.overhead_ns >= 2 * slow_start


@pytest.mark.parametrize("settings", [QUIET], indirect=True)
def test_the_one_time_probe_is_not_the_first_runs_overhead(recorded, monkeypatch):
    tracker = current_tracker()
    monkeypatch.setattr(tracker, "fast_call_ns", None)
    monkeypatch.setattr(tracker, "_calibrate", lambda tel: spin(50_000_000) or (100.0, 10.0))
    run_predict(DetectionPredictor())
    assert tracker.fast_call_ns == 100.0, "probed at the first run's end"
    assert tracker.last_report.overhead_ns < 50_000_000


def spin(ns):
    from time import perf_counter_ns

    until = perf_counter_ns() + ns
    while perf_counter_ns() < until:
        pass


@pytest.mark.parametrize("settings", [QUIET], indirect=True)
def test_an_engines_runs_share_its_duration_lists_and_each_table_counts_its_own(recorded):
    predictor, tracker = DetectionPredictor(), current_tracker()
    batch_starts = ("on_predict_batch_start", "otel_callbacks.hooks.on_predict_batch_start")
    run_predict(predictor, batches=3)  # its values are still in the lists when it ends
    first = tracker.last_report.callbacks[batch_starts].calls
    predictor.run_callbacks("on_predict_start")
    predictor.run_callbacks("on_predict_batch_start")
    recorded.points(sc.METRIC_CALLBACK_DURATION)  # a collection in the middle of the second run
    for event in ("on_predict_postprocess_end", "on_predict_batch_end"):
        predictor.run_callbacks(event)
    run_predict_batches(predictor, 2)
    predictor.run_callbacks("on_predict_end")
    second = tracker.last_report.callbacks[batch_starts].calls
    assert (first, second) == (3, 3), "each run's table: its own calls, none of the other's"
    counted = sum(
        p.count
        for a, p in recorded.points(sc.METRIC_CALLBACK_DURATION)
        if a[sc.ATTR_EVENT] == "on_predict_batch_start"
    )
    assert counted == 6, "the histogram: every call"


def run_predict_batches(predictor, batches):
    for _ in range(batches):
        for event in ("on_predict_batch_start", "on_predict_postprocess_end", "on_predict_batch_end"):
            predictor.run_callbacks(event)


# Rotation -----------------------------------------------------------------------------------


def write_spans(file, count, open_every=0):
    """``count`` one-span requests; every ``open_every``-th span first as an open record."""
    tracer = TracerProvider().get_tracer("t")
    exporter = OpenRecords(FileSpanExporter(file))
    for index in range(count):
        span = tracer.start_span(f"s{index}")
        if open_every and index % open_every == 0:
            exporter.export([OpenPhase(span)])
        span.end()
        exporter.export([span])


def test_the_file_rotates_at_its_cap_keeps_its_backups_and_drops_the_oldest_once_said(tmp_path, caplog):
    file = otlp_file.OtlpJsonLinesFile(tmp_path, "svc", max_bytes=4000, backups=2)
    with caplog.at_level(logging.WARNING, logger=sc.LOGGER_NAME):
        write_spans(file, 200)
    current = file.traces_path
    rotated = otlp_file.rotated_files(current)
    assert [p.name for p in rotated] == [f"{current.stem}.{n}.jsonl" for n in (2, 1)]
    assert sorted(tmp_path.iterdir()) == sorted([current, *rotated]), "nothing beyond the backups"
    assert all(p.stat().st_size <= 4000 for p in [current, *rotated])
    assert file.dropped > 0
    said = [r for r in caplog.records if "OTEL_CALLBACKS_FILE_MAX_BYTES=4000" in r.getMessage()]
    assert len(said) == 1, "said once, counted after"
    names = [s.name for r in otlp_file.read_file(current) for s in request_spans(r)]
    numbers = [int(n[1:]) for n in names]
    assert numbers == list(range(numbers[0], 200)), (
        "the set read as one, oldest first, nothing lost within it"
    )


def test_an_open_record_in_a_rotated_file_is_resolved_by_its_span_in_the_current_one(tmp_path):
    file = otlp_file.OtlpJsonLinesFile(tmp_path, "svc", max_bytes=1500, backups=50)
    tracer = TracerProvider().get_tracer("t")
    exporter = OpenRecords(FileSpanExporter(file))
    root = tracer.start_span("run")
    exporter.export([OpenPhase(root)])  # written: the root is still open
    write_spans(file, 30)
    root.end()
    exporter.export([root])
    assert otlp_file.rotated_files(file.traces_path), "the open record was rotated away from its span"
    (run,) = [s for r in otlp_file.read_file(file.traces_path) for s in request_spans(r) if s.name == "run"]
    assert run.status.status_code is StatusCode.UNSET and sc.ATTR_OPEN not in run.attributes
    files, missing = expand([str(tmp_path)])
    assert files == [file.traces_path] and not missing, (
        "a directory's rotated files go with their current one"
    )


def test_without_backups_the_full_file_is_dropped_and_started_again(tmp_path):
    file = otlp_file.OtlpJsonLinesFile(tmp_path, "svc", max_bytes=2000, backups=0)
    write_spans(file, 50)
    assert list(tmp_path.iterdir()) == [file.traces_path] and file.traces_path.stat().st_size <= 2000
    assert file.dropped > 0


# Open records -------------------------------------------------------------------------------


def test_an_open_record_is_made_at_export_only_for_a_phase_still_open(tmp_path):
    file = otlp_file.OtlpJsonLinesFile(tmp_path, "svc")
    exporter = OpenRecords(FileSpanExporter(file))
    tracer = TracerProvider().get_tracer("t")
    ended, still_open = tracer.start_span("ended"), tracer.start_span("open", attributes={"k": 1})
    queued = [OpenPhase(ended), OpenPhase(still_open)]
    ended.end()  # within the export delay: its record is never made
    exporter.export([*queued, ended])
    spans = [s for r in otlp_file._requests(file.traces_path, None) for s in request_spans(r)]
    assert [(s.name, dict(s.attributes)) for s in spans] == [
        ("open (in progress)", {"k": 1, sc.ATTR_OPEN: True, sc.ATTR_OPEN_PARENT: ""}),  # a root: no parent
        ("ended", {}),
    ]
    record, phase = spans[0], still_open.get_span_context()
    assert record.end_time - record.start_time == 1, "a zero-length row (Jaeger warns of a 0 ns span)"
    assert record.parent.span_id == phase.span_id and record.context.span_id != phase.span_id, (
        "an id of its own"
    )
    assert record.context.trace_id == phase.trace_id


def test_announcing_writes_nothing_on_the_callers_thread(tmp_path, monkeypatch):
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_BSP_SCHEDULE_DELAY"):
        monkeypatch.delenv(name, raising=False)
    tel = telemetry.configure(Settings(output_dir=tmp_path, summary=False))
    span = tel.tracer.start_span("train")
    tel.announce(span)
    assert not tel.output.traces_path.exists(), "queued for the export thread, not written"
    tel.force_flush(5)
    (record,) = [s for r in otlp_file._requests(tel.output.traces_path, None) for s in request_spans(r)]
    assert record.name == "train (in progress)" and record.attributes[sc.ATTR_OPEN] is True
    span.end()


def test_an_otlp_backend_gets_the_record_of_a_phase_while_it_runs_and_no_other_processor_does(
    receiver, tmp_path, monkeypatch
):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.delenv("OTEL_BSP_SCHEDULE_DELAY", raising=False)
    tel = telemetry.configure(Settings(output_dir=tmp_path, summary=False))
    mine = InMemorySpanExporter()
    tel.owned[0].add_span_processor(SimpleSpanProcessor(mine))  # an application's, on our provider
    span = tel.tracer.start_span("epoch", attributes={sc.ATTR_EPOCH: 3})
    tel.announce(span)
    # Exported by the processor's own schedule (EXPORT_DELAY_MS), with nothing flushed.
    (record,) = wait_for(receiver.spans, 10)
    assert (record.name, record.start_time_unix_nano) == (
        "epoch (in progress)",
        record.end_time_unix_nano - 1,
    )
    assert record.parent_span_id == span.get_span_context().span_id.to_bytes(8, "big")
    assert {kv.key: kv.value for kv in record.attributes}[sc.ATTR_EPOCH].int_value == 3
    span.end()
    telemetry.shutdown()
    assert [s.name for s in receiver.spans()] == ["epoch (in progress)", "epoch"]
    assert [s.name for s in mine.get_finished_spans()] == ["epoch"], "an open phase reaches ours only"


def wait_for(read, timeout):
    deadline = time.monotonic() + timeout
    while not (got := read()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return got


def test_a_finished_runs_file_read_as_it_is_holds_each_span_id_once_and_one_root(tmp_path, monkeypatch):
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_BSP_SCHEDULE_DELAY"):
        monkeypatch.delenv(name, raising=False)
    tel = telemetry.configure(Settings(output_dir=tmp_path, summary=False))
    trainer = DetectionTrainer()
    # The export thread writes the records of the phases open at the first epoch's start.
    trainer.add_callback("on_train_epoch_start", lambda t: t.epoch == 0 and tel.force_flush(5))
    run_train(trainer, epochs=2, batches=2)
    telemetry.shutdown()
    raw = [s for r in otlp_file._requests(tel.output.traces_path, None) for s in request_spans(r)]
    ids = [s.context.span_id for s in raw]
    assert len(ids) == len(set(ids)), "each span id once, as Jaeger's Upload and a collector read it"
    assert [s.name for s in raw if s.parent is None] == ["train"], "one root"
    by_id = {s.context.span_id: s for s in raw}
    records = [s for s in raw if sc.ATTR_OPEN in s.attributes]
    assert sorted(r.name for r in records) == ["epoch (in progress)", "train (in progress)"]
    for record in records:  # a zero-length row under its phase, at its start
        phase = by_id[record.parent.span_id]
        assert (
            (phase.name + sc.OPEN_SUFFIX, phase.start_time)
            == (record.name, record.start_time)
            == (record.name, record.end_time - 1)
        )
    read = [s for r in otlp_file.read_file(tel.output.traces_path) for s in request_spans(r)]
    assert sorted(s.context.span_id for s in read) == sorted(set(ids) - {r.context.span_id for r in records})


# Sampled predict runs -------------------------------------------------------------------------

SAMPLED = replace(
    QUIET,
    default_hook_spans=True,
    predict_traces_first=3,
    predict_traces_interval=3600.0,
    slow_threshold=0.05,
)


def predict_loop(calls, slow=(), failing=()):
    """``calls`` predict runs on one predictor; the calls in ``slow`` make a 60 ms callback, those in
    ``failing`` raise out of the model (no end events: the next run's start fails them)."""
    predictor, call = DetectionPredictor(), [0]

    def postprocess(engine):
        if call[0] in slow:
            spin(60_000_000)

    predictor.add_callback("on_predict_postprocess_end", postprocess)
    for call[0] in range(calls):
        (failing_predict if call[0] in failing else run_predict)(predictor)
    run_predict(predictor)  # ends the last failed one, if any
    return calls + 1


@pytest.mark.parametrize("settings", [SAMPLED], indirect=True)
def test_short_healthy_predict_runs_are_sampled_and_every_slow_or_failed_one_kept(recorded):
    runs = predict_loop(20, slow={5, 12}, failing={8})
    spans = recorded.spans()
    roots = sorted((s for s in spans if s.parent is None), key=lambda s: s.start_time)
    counts = {a[sc.ATTR_PHASE]: p.count for a, p in recorded.points(sc.METRIC_PHASE_DURATION)}
    assert counts[sc.PHASE_PREDICT] == runs, "the metrics count every run"
    if not telemetry.current().spans.direct:  # processors that see span starts: every run traced
        assert len(roots) == runs
        return
    assert len(roots) == 3 + 3, "the first three, the two slow ones and the failed one"
    by_trace = {
        r.context.trace_id: [s for s in spans if s.context.trace_id == r.context.trace_id] for r in roots
    }
    ids = {s.context.span_id for s in spans}
    assert all(s.parent.span_id in ids for s in spans if s.parent is not None), "no orphans"
    kept = roots[3:]
    assert [r.status.status_code for r in kept] == [StatusCode.UNSET, StatusCode.ERROR, StatusCode.UNSET]
    for root in (kept[0], kept[2]):
        children = [s for s in by_trace[root.context.trace_id] if s.parent is not None]
        assert [s.attributes[sc.ATTR_BATCH_INDEX] for s in children] == [0, 1, 2], "its three slow calls"
        for slow in children:
            assert slow.name == "on_predict_postprocess_end postprocess" and slow.attributes[sc.ATTR_SLOW]
            assert slow.parent.span_id == root.context.span_id
            assert slow.end_time - slow.start_time >= 60_000_000
    assert by_trace[kept[1].context.trace_id] == [kept[1]], "a failed run keeps its root, with the reason"
    assert "a new prediction started before on_predict_end" in kept[1].status.description


def test_predict_sampling_takes_the_first_runs_then_one_per_interval():
    from otel_callbacks.tracing.predict_runs import PredictSampling

    sampling = PredictSampling(Settings(predict_traces_first=2, predict_traces_interval=10e-9))
    assert [sampling.traced(now) for now in (0, 1, 2, 5, 11, 12, 21)] == [1, 1, 0, 0, 1, 0, 1]
    every = PredictSampling(Settings(predict_traces_first=0, predict_traces_interval=0))
    assert all(every.traced(now) for now in range(5))


@pytest.mark.parametrize("settings", [SAMPLED], indirect=True)
def test_a_root_sampler_of_the_applications_keeps_its_meaning(settings, monkeypatch):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(1.0)))  # roots: the sampler's call
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.configure(settings, tracer_provider=provider, meter_provider=MeterProvider())
    assert telemetry.current().spans.direct, "children would be direct spans; roots stay the sampler's"
    runs = predict_loop(10)
    assert len([s for s in exporter.get_finished_spans() if s.parent is None]) == runs


@pytest.mark.parametrize("settings", [SAMPLED], indirect=True)
def test_a_prediction_inside_an_applications_span_is_always_traced_as_its_child(recorded):
    tracer = recorded.tracer_provider.get_tracer("app")
    predictor = DetectionPredictor()
    for _ in range(10):  # past the first three
        with tracer.start_as_current_span("request") as request:
            run_predict(predictor)
        predicts = [s for s in recorded.spans() if s.name == sc.PHASE_PREDICT]
        assert predicts[-1].parent.span_id == request.get_span_context().span_id
    assert len([s for s in recorded.spans() if s.name == sc.PHASE_PREDICT]) == 10


@pytest.mark.parametrize(
    "settings", [replace(SAMPLED, slow_threshold=10.0, table_min_duration=0.1)], indirect=True
)
def test_a_long_predict_run_keeps_its_trace_and_prints_its_table(recorded, capsys):
    runs = predict_loop(6, slow={4})  # run 4: 3 x 60 ms, none of it slow, the run past 0.1 s
    roots = sorted((s for s in recorded.spans() if s.parent is None), key=lambda s: s.start_time)
    if telemetry.current().spans.direct:
        assert len(roots) == 3 + 1, "the first three, and the long one"
        assert roots[-1].end_time - roots[-1].start_time >= 180_000_000
    else:
        assert len(roots) == runs
    assert capsys.readouterr().out.count("otel_callbacks: predict run took") == 1, "its own table"
