"""The embedded default's exporters: finished spans and metric deltas as lines of its file, and the
records of long phases still open (``OpenPhase``), made on the export thread."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .. import semconv
from .otlp_file import OtlpJsonLinesFile
from .spans import DirectSpan


def open_record(span: Any) -> ReadableSpan | None:
    """A record of a span still open: ended at its start, marked ``semconv.ATTR_OPEN``."""
    if isinstance(span, DirectSpan):
        name, context, parent, resource = span._name, span._context, span._parent, span._tracer.resource
        attributes, start, scope = span._attributes, span._start_time, span._pipeline.scope
    elif isinstance(span, ReadableSpan) and span.start_time is not None:
        name, context, parent, resource = span.name, span.context, span.parent, span.resource
        attributes, start, scope = span.attributes, span.start_time, span.instrumentation_scope
    else:
        return None
    return ReadableSpan(
        name,
        context,
        parent,
        resource,
        {**(attributes or {}), semconv.ATTR_OPEN: True},
        start_time=start,
        end_time=start,
        instrumentation_scope=scope,
    )


class OpenPhase:
    """A long phase handed to the span pipeline as it opened (``Telemetry.announce``). The caller's
    thread only queues it; the file exporter, on the export thread, writes its record if the phase
    is still open then, and nothing if it has ended (its span is on its way): a run that ends within
    the export delay costs no record."""

    __slots__ = ("span",)

    def __init__(self, span: Any) -> None:
        self.span = span

    @property
    def context(self) -> Any:  # what a span processor reads to drop what is not sampled
        return self.span.get_span_context()

    def record(self) -> ReadableSpan | None:
        for _ in range(3):  # its attributes may change under us (another thread, the caller's)
            if not self.span.is_recording():
                return None
            with contextlib.suppress(RuntimeError):
                return open_record(self.span)
        return None


class FileSpanExporter(SpanExporter):
    def __init__(self, file: OtlpJsonLinesFile) -> None:
        self.file = file

    def export(self, spans: Sequence[ReadableSpan | OpenPhase]) -> SpanExportResult:
        records = [s.record() if isinstance(s, OpenPhase) else s for s in spans]
        records = [r for r in records if r is not None]
        if records:
            self.file.write(encode_spans(records))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


class FileMetricExporter(MetricExporter):
    def __init__(self, file: OtlpJsonLinesFile) -> None:
        # Delta: each line adds to the previous ones, so a replayed file never double counts.
        super().__init__(preferred_temporality=_all_delta())
        self.file = file

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        if any(rm.scope_metrics for rm in metrics_data.resource_metrics):
            self.file.write(encode_metrics(metrics_data))
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def _all_delta() -> dict[type, AggregationTemporality]:
    from opentelemetry.sdk.metrics import Counter, Histogram, UpDownCounter

    return {
        Counter: AggregationTemporality.DELTA,
        Histogram: AggregationTemporality.DELTA,
        UpDownCounter: AggregationTemporality.CUMULATIVE,
    }
