"""Direct spans (telemetry/spans.py): the processors receive what the SDK would have given them,
and every setup where that is not certain goes through the SDK."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

import otel_callbacks
from otel_callbacks import Settings, telemetry
from otel_callbacks.telemetry.spans import DirectSpan, SpanStarter
from tests.engines import DetectionTrainer, run_train

# Measured, or new per configuration.
# (What bounds a training is timed too: the verdict, its share and its reason.)
VARYING = (
    "ultralytics.untraced_s",
    "otel_callbacks.overhead_s",
    "service.instance.id",
    "ultralytics.bound_by",
    "ultralytics.bound_by.share",
    "ultralytics.bound_by.reason",
)


def _attributes(attributes):
    """Sorted items; the varying ones only as their type."""
    return tuple(sorted((k, type(v).__name__ if k in VARYING else v) for k, v in attributes.items()))


def normalized(spans):
    """Everything a processor can read of the spans but ids and times, parents by name."""
    by_id = {s.context.span_id: s for s in spans}
    rows = []
    for s in spans:
        parent = by_id[s.parent.span_id].name if s.parent is not None else None
        rows.append(
            (
                s.name,
                parent,
                s.kind,
                int(s.context.trace_flags),
                str(s.context.trace_state),
                s.context.is_remote,
                _attributes(s.attributes),
                (s.status.status_code, s.status.description),
                tuple((e.name, tuple(sorted(e.attributes.items()))) for e in s.events),
                len(s.links),
                (s.dropped_attributes, s.dropped_events, s.dropped_links),
                (s.instrumentation_scope.name, s.instrumentation_scope.version),
                _attributes(s.resource.attributes),
                s.start_time <= s.end_time,
            )
        )
    return sorted(rows, key=repr)


def provider_with(exporter, **kwargs):
    provider = TracerProvider(**kwargs)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def _training(direct: bool):
    """A two-epoch synthetic training whose user callbacks annotate, nest and raise."""
    exporter = InMemorySpanExporter()
    provider = provider_with(exporter)
    telemetry.configure(
        Settings(default_hook_spans=True, summary=False, direct_spans=direct),
        tracer_provider=provider,
        meter_provider=MeterProvider(),
    )
    assert telemetry.current().spans.direct is direct
    user_tracer = provider.get_tracer("user")

    def annotate(trainer):
        span = trace.get_current_span()
        span.set_attribute("user.lr", 0.01)
        span.set_attribute("user.bad", object())  # cleaned as the SDK cleans it
        span.add_event("checkpoint", {"path.depth": 2})
        with user_tracer.start_as_current_span("user work"):
            pass

    def fail_once(trainer, failed=[]):  # noqa: B006 - raises on its first call only
        if not failed:
            failed.append(1)
            raise ValueError("first epoch end fails")

    trainer = DetectionTrainer(otel_callbacks.get_default_callbacks())
    trainer.add_callback("on_train_batch_end", annotate)
    trainer.add_callback("on_train_epoch_end", fail_once)
    with pytest.raises(ValueError, match="first epoch end fails"):
        run_train(trainer, epochs=2, batches=2)
    telemetry.shutdown()
    provider.shutdown()
    return exporter.get_finished_spans()


def test_direct_spans_export_what_the_sdk_would():
    direct, sdk = _training(direct=True), _training(direct=False)
    assert {type(s).__name__ for s in direct} == {"ReadableSpan"}
    assert len(direct) == len(sdk) > 20
    assert normalized(direct) == normalized(sdk)
    user = [s for s in direct if s.name == "user work"]
    assert user and all(s.parent is not None for s in user)
    annotated = [s for s in direct if s.attributes.get("user.lr") == 0.01]
    assert annotated and all(isinstance(s.attributes.get("user.bad"), (str, type(None))) for s in annotated)
    failed = [s for s in direct if s.status.status_code is StatusCode.ERROR]
    assert any(e.name == "exception" for s in failed for e in s.events)


class StartWatcher(SpanProcessor):
    def __init__(self):
        self.started = []

    def on_start(self, span, parent_context=None):
        self.started.append(span.name)


class QuietBatch(BatchSpanProcessor):
    """A subclass that changes nothing about starts."""


SETUPS = [
    pytest.param({}, None, True, id="SDK defaults, simple processor"),
    pytest.param({}, lambda: QuietBatch(InMemorySpanExporter()), True, id="batch processor subclass"),
    pytest.param({}, StartWatcher, False, id="a processor with on_start"),
    pytest.param({"sampler": ParentBased(ALWAYS_OFF)}, None, True, id="parent-based, other root"),
    pytest.param({"sampler": TraceIdRatioBased(0.5)}, None, False, id="ratio sampler"),
    pytest.param({"sampler": ALWAYS_ON}, None, True, id="always on"),
    pytest.param(
        {"sampler": ParentBased(ALWAYS_ON, local_parent_sampled=ALWAYS_OFF)},
        None,
        False,
        id="sampled local parent, child off",
    ),
    pytest.param({"span_limits": SpanLimits(max_attribute_length=8)}, None, False, id="length limit"),
    pytest.param({"span_limits": SpanLimits(max_span_attributes=4)}, None, False, id="few attributes"),
]


@pytest.mark.parametrize(("provider_kwargs", "processor", "direct"), SETUPS)
def test_direct_only_where_the_sdk_would_make_the_same_span(provider_kwargs, processor, direct):
    provider = provider_with(InMemorySpanExporter(), **provider_kwargs)
    if processor is not None:
        provider.add_span_processor(processor())
    assert SpanStarter(provider.get_tracer("t")).direct is direct


def test_not_for_internal_metrics_a_no_op_tracer_or_when_turned_off(monkeypatch):
    tracer = provider_with(InMemorySpanExporter()).get_tracer("t")
    assert SpanStarter(tracer).direct
    assert not SpanStarter(tracer, direct=False).direct
    assert not SpanStarter(trace.NoOpTracer()).direct
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    assert not SpanStarter(tracer).direct


def test_a_processor_added_later_is_judged_before_the_next_span():
    provider = provider_with(InMemorySpanExporter())
    starter = SpanStarter(provider.get_tracer("t"))
    root = starter.start_span("root")
    context = trace.set_span_in_context(root)
    assert isinstance(starter.start_span("child", context), DirectSpan)
    watcher = StartWatcher()
    provider.add_span_processor(watcher)
    child = starter.start_span("child", context)
    assert not isinstance(child, DirectSpan) and watcher.started == ["child"]
    assert not starter.direct


def test_roots_remote_and_unsampled_parents_go_through_the_sdk():
    exporter = InMemorySpanExporter()
    starter = SpanStarter(provider_with(exporter).get_tracer("t"))
    assert starter.direct
    root = starter.start_span("root")
    assert not isinstance(root, DirectSpan) and root.is_recording()
    remote = SpanContext(1, 2, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    under_remote = starter.start_span("r", trace.set_span_in_context(NonRecordingSpan(remote)))
    assert not isinstance(under_remote, DirectSpan)
    unsampled = SpanContext(1, 2, is_remote=False, trace_flags=TraceFlags(TraceFlags.DEFAULT))
    assert not starter.start_span("u", trace.set_span_in_context(NonRecordingSpan(unsampled))).is_recording()


def _api_calls(span):
    span.set_attributes({"a": 1, "b": ["x", "y"], "bad": object()})
    span.set_attribute("c", 2.5)
    span.add_event("e", {"k": "v"}, timestamp=5)
    span.add_link(SpanContext(3, 4, is_remote=True), {"why": "test"})
    span.update_name("renamed")
    span.set_status(StatusCode.UNSET)  # ignored
    span.record_exception(KeyError("k"), {"extra": True}, timestamp=6, escaped=True)
    span.set_status(Status(StatusCode.ERROR, "failed"))
    span.set_status(StatusCode.OK)
    span.set_status(StatusCode.ERROR, "after OK")  # OK is final
    span.end(end_time=10)
    span.end(end_time=11)  # warned, not exported twice
    span.set_attribute("late", 1)  # ignored after the end


def on_both_paths(attributes, act):
    """The spans each path exports for a child started with ``attributes`` and handed to ``act``
    (which ends it), and its root; checked to be the same, the direct path's returned."""
    results = {}
    for direct in (True, False):
        exporter = InMemorySpanExporter()
        starter = SpanStarter(provider_with(exporter).get_tracer("t"), direct=direct)
        root = starter.start_span("root", start_time=1)
        span = starter.start_span("child", trace.set_span_in_context(root), attributes, start_time=2)
        assert isinstance(span, DirectSpan) is direct and span.is_recording()
        act(span)
        assert not span.is_recording()
        root.end(end_time=20)
        results[direct] = exporter.get_finished_spans()
    assert normalized(results[True]) == normalized(results[False])
    return results[True]


def test_the_span_api_behaves_as_the_sdks(caplog):
    with caplog.at_level(logging.WARNING):
        child, root = on_both_paths({"n": 1, "odd": {}}, _api_calls)
    assert (child.name, root.name) == ("renamed", "root")
    assert (child.start_time, child.end_time) == (2, 10)
    assert {k: child.attributes[k] for k in "nabc"} == {"n": 1, "a": 1, "b": ("x", "y"), "c": 2.5}
    assert "late" not in child.attributes
    assert child.status.status_code is StatusCode.OK
    assert [e.name for e in child.events] == ["e", "exception"]
    assert child.events[1].attributes["exception.type"] == "KeyError"


def test_keys_and_values_the_sdk_would_clean_are_cleaned_as_it_does(caplog):
    def act(span):
        span.set_attributes({"": 3, "fine": 4.0})
        span.set_attributes({7: "number key", "also": True})
        span.end()

    with caplog.at_level(logging.WARNING):
        child, _ = on_both_paths({"": 1, "ok": 2, "list": [1, 2], "bytes": b"x", "none": None}, act)
    assert "" not in child.attributes and child.attributes["fine"] == 4.0


def test_past_the_default_limits_the_same_is_kept_and_counted_as_dropped(caplog):
    def act(span):
        span.set_attributes({f"more{i}": i for i in range(100)})
        for i in range(150):
            span.add_event(f"e{i}", {f"a{j}": j for j in range(3)})
        span.end()

    with caplog.at_level(logging.ERROR):  # the SDK warns for each attribute it drops
        child, _ = on_both_paths({f"k{i}": i for i in range(100)}, act)
    assert (len(child.attributes), child.dropped_attributes) == (128, 72)
    assert (len(child.events), child.dropped_events) == (128, 22)


def test_unset_span_limits_mean_no_bound():
    unset = SpanLimits(
        max_span_attributes=SpanLimits.UNSET,
        max_events=SpanLimits.UNSET,
        max_event_attributes=SpanLimits.UNSET,
    )
    exporter = InMemorySpanExporter()
    starter = SpanStarter(provider_with(exporter, span_limits=unset).get_tracer("t"))
    assert starter.direct
    root = starter.start_span("root")
    span = starter.start_span("child", trace.set_span_in_context(root), {f"k{i}": i for i in range(200)})
    span.set_attributes({f"more{i}": i for i in range(200)})
    for i in range(200):
        span.add_event(f"e{i}")
    span.end()
    (child,) = [s for s in exporter.get_finished_spans() if s.name == "child"]
    assert len(child.attributes) == 400 and len(child.events) == 200
