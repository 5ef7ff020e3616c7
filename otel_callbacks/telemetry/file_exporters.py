"""The embedded default's exporters: finished spans (and the records of long phases still open,
``open_phases.OpenRecords``) and metric deltas as lines of its file."""

from __future__ import annotations

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

from .otlp_file import OtlpJsonLinesFile


class FileSpanExporter(SpanExporter):
    def __init__(self, file: OtlpJsonLinesFile) -> None:
        self.file = file

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if spans:
            self.file.write(encode_spans(spans))
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
