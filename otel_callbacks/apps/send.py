"""Replay the embedded default's OTLP-JSON-lines file into any exporter, for machines that trained
without a network: the file's requests become the SDK's own span and metric objects again, so the
exporter configured by ``OTEL_*`` variables (OTLP gRPC or HTTP, console, ...) sends them as is."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from ..telemetry import otlp_file
from ..telemetry.exporters import exporter_names, new_exporter

BATCH = 512  # spans per export call, as the SDK's batch processor sends them


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(v) for v in value.array_value.values)
    if kind == "kvlist_value":  # not an SDK attribute type: keep it readable
        return str({kv.key: _value(kv.value) for kv in value.kvlist_value.values})
    return getattr(value, kind) if kind else None


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


def _resource(resource: Any, schema_url: str) -> Resource:
    """The file's resource with the environment's over it (``OTEL_RESOURCE_ATTRIBUTES``,
    ``OTEL_SERVICE_NAME``), merged as the SDK merges resources: the later one wins per key."""
    from opentelemetry.sdk.resources import OTELResourceDetector

    return Resource(_attributes(resource.attributes), schema_url or None).merge(
        OTELResourceDetector().detect()
    )


def _scope(scope: Any, schema_url: str) -> InstrumentationScope:
    return InstrumentationScope(
        scope.name, scope.version or None, schema_url or None, _attributes(scope.attributes)
    )


def _context(trace_id: bytes, span_id: bytes, flags: int = 1, trace_state: str = "") -> SpanContext:
    return SpanContext(
        int.from_bytes(trace_id, "big"),
        int.from_bytes(span_id, "big"),
        is_remote=False,
        trace_flags=TraceFlags(flags & 0xFF or TraceFlags.SAMPLED),
        trace_state=TraceState.from_header([trace_state]) if trace_state else None,
    )


def spans(request: Any) -> Iterator[ReadableSpan]:
    """The spans of one ``ExportTraceServiceRequest`` as the SDK's ``ReadableSpan``."""
    for resource_spans in request.resource_spans:
        resource = _resource(resource_spans.resource, resource_spans.schema_url)
        for scope_spans in resource_spans.scope_spans:
            scope = _scope(scope_spans.scope, scope_spans.schema_url)
            for span in scope_spans.spans:
                code = StatusCode(span.status.code)
                yield ReadableSpan(
                    name=span.name,
                    context=_context(span.trace_id, span.span_id, span.flags, span.trace_state),
                    parent=_context(span.trace_id, span.parent_span_id) if span.parent_span_id else None,
                    resource=resource,
                    attributes=_attributes(span.attributes),
                    events=[Event(e.name, _attributes(e.attributes), e.time_unix_nano) for e in span.events],
                    links=[
                        Link(
                            _context(link.trace_id, link.span_id, link.flags, link.trace_state),
                            _attributes(link.attributes),
                        )
                        for link in span.links
                    ],
                    kind=SpanKind(max(span.kind - 1, 0)),  # OTLP counts UNSPECIFIED as 0
                    status=Status(code, span.status.message or None)
                    if code is StatusCode.ERROR
                    else Status(code),
                    start_time=span.start_time_unix_nano,
                    end_time=span.end_time_unix_nano,
                    instrumentation_scope=scope,
                )


def _number_points(points: Iterable[Any]) -> list[NumberDataPoint]:
    return [
        NumberDataPoint(
            _attributes(p.attributes),
            p.start_time_unix_nano,
            p.time_unix_nano,
            p.as_int if p.WhichOneof("value") == "as_int" else p.as_double,
            exemplars=[],
        )
        for p in points
    ]


def _metric(metric: Any) -> Metric | None:
    kind = metric.WhichOneof("data")
    if kind == "histogram":
        points = [
            HistogramDataPoint(
                _attributes(p.attributes),
                p.start_time_unix_nano,
                p.time_unix_nano,
                p.count,
                p.sum,
                list(p.bucket_counts),
                list(p.explicit_bounds),
                p.min,
                p.max,
                exemplars=[],
            )
            for p in metric.histogram.data_points
        ]
        data: Any = Histogram(points, AggregationTemporality(metric.histogram.aggregation_temporality))
    elif kind == "sum":
        data = Sum(
            _number_points(metric.sum.data_points),
            AggregationTemporality(metric.sum.aggregation_temporality),
            metric.sum.is_monotonic,
        )
    elif kind == "gauge":
        data = Gauge(_number_points(metric.gauge.data_points))
    else:  # exponential histograms and summaries are never written by otel_callbacks
        return None
    return Metric(metric.name, metric.description, metric.unit, data)


def metrics_data(request: Any) -> MetricsData:
    """One ``ExportMetricsServiceRequest`` as the SDK's ``MetricsData``."""
    return MetricsData(
        [
            ResourceMetrics(
                _resource(rm.resource, rm.schema_url),
                [
                    ScopeMetrics(
                        _scope(sm.scope, sm.schema_url),
                        [m for m in map(_metric, sm.metrics) if m is not None],
                        sm.schema_url,
                    )
                    for sm in rm.scope_metrics
                ],
                rm.schema_url,
            )
            for rm in request.resource_metrics
        ]
    )


@dataclass
class Signal:
    """What happened to one signal's data in a replay."""

    exporters: list[str]  # the exporters it went to; empty: not sent
    not_sent: str = ""  # why, when it was not sent
    read: int = 0  # spans, or metric points, read from the files
    exported: int = 0  # of them, in export calls that every exporter accepted
    calls: int = 0
    failed_calls: int = 0


@dataclass
class Sent:
    traces: Signal
    metrics: Signal
    bad_lines: list[str] = field(default_factory=list)  # FILE:LINE: what is wrong

    @property
    def failed(self) -> bool:
        return bool(self.bad_lines or self.traces.failed_calls or self.metrics.failed_calls)


_OTHER = {"traces": "metrics", "metrics": "traces"}


def replay_exporter_names(signal: str) -> tuple[list[str], str]:
    """The exporters a replay sends ``signal`` to, or none and the reason.

    A replay is for a backend, not for another file: with neither ``OTEL_TRACES_EXPORTER`` nor
    ``OTEL_METRICS_EXPORTER`` set, both signals go to ``otlp``. With only the other one set, this
    signal goes to ``otlp`` only where an OTLP endpoint variable is set; otherwise it is not sent
    (rather than retried for seconds against a default endpoint that nothing listens on).
    """
    variable = f"OTEL_{signal.upper()}_EXPORTER"
    names = exporter_names(signal)
    if names is not None:
        return names, "" if names else f"{variable}=none"
    if exporter_names(_OTHER[signal]) is None:
        return ["otlp"], ""
    endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
    if any(os.environ.get(e, "").strip() for e in endpoints):
        return ["otlp"], ""
    other = f"OTEL_{_OTHER[signal].upper()}_EXPORTER"
    return [], f"{variable} is unset while {other} is set, and no OTLP endpoint is"


def _exporters(signal: str) -> tuple[Signal, list[Any]]:
    from opentelemetry.sdk.metrics.export import MetricReader

    names, not_sent = replay_exporter_names(signal)
    exporters = [new_exporter(signal, name) for name in names]
    pushed = [(n, e) for n, e in zip(names, exporters, strict=True) if not isinstance(e, MetricReader)]
    pulled = [n for n in names if n not in {n for n, _ in pushed}]
    if pulled and not pushed:
        not_sent = f"{', '.join(pulled)} is scraped, not pushed: nothing to replay into"
    return Signal([n for n, _ in pushed], not_sent), [e for _, e in pushed]


def _export(signal: Signal, exporters: list[Any], batch: Any, size: int) -> None:
    if not exporters:
        return
    signal.calls += 1
    ok = True
    for exporter in exporters:
        try:
            result = exporter.export(batch)
        except Exception:
            result = None
        ok = ok and result in (SpanExportResult.SUCCESS, MetricExportResult.SUCCESS)
    if ok:
        signal.exported += size
    else:
        signal.failed_calls += 1


def send(paths: Iterable[str | os.PathLike[str]]) -> Sent:
    """Export every good span and metric point in the files with the exporters the ``OTEL_*``
    variables name (see :func:`replay_exporter_names`); bad lines are skipped and listed."""
    traces, span_exporters = _exporters("traces")
    metrics, metric_exporters = _exporters("metrics")
    sent = Sent(traces, metrics)
    pending: list[ReadableSpan] = []

    def flush_spans() -> None:
        _export(traces, span_exporters, pending, len(pending))
        pending.clear()

    try:
        for path in paths:
            for request in otlp_file.read_file(path, sent.bad_lines):
                if hasattr(request, "resource_spans"):
                    batch = list(spans(request))
                    traces.read += len(batch)
                    pending.extend(batch)
                    if len(pending) >= BATCH:
                        flush_spans()
                    continue
                data = metrics_data(request)
                points = sum(
                    len(m.data.data_points)
                    for rm in data.resource_metrics
                    for sm in rm.scope_metrics
                    for m in sm.metrics
                )
                metrics.read += points
                _export(metrics, metric_exporters, data, points)
        if pending:
            flush_spans()
    finally:
        for exporter in (*span_exporters, *metric_exporters):
            exporter.shutdown()
    return sent
