"""The embedded default backend: OTLP-JSON-lines files, one per process.

Each line is one ``ExportTraceServiceRequest`` or ``ExportMetricsServiceRequest`` in the OTLP/JSON
encoding (hex ids, integer enums), as the Collector's ``otlpjsonfile`` receiver reads it, encoded
with the OTLP exporters' own protobuf encoders so the file holds exactly what OTLP would send.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

_ID_FIELDS = frozenset({"traceId", "spanId", "parentSpanId"})


def _ids(node: Any, convert: Any) -> Any:
    """Rewrite the id fields of an OTLP/JSON tree (protobuf's JSON is base64, OTLP's is hex)."""
    if isinstance(node, dict):
        return {
            k: convert(v) if k in _ID_FIELDS and isinstance(v, str) else _ids(v, convert)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_ids(v, convert) for v in node]
    return node


def to_json_line(message: Message) -> str:
    tree = json_format.MessageToDict(message, use_integers_for_enums=True)
    tree = _ids(tree, lambda v: base64.b64decode(v).hex())
    return json.dumps(tree, separators=(",", ":"))


def from_json_line(line: str) -> ExportTraceServiceRequest | ExportMetricsServiceRequest:
    """One OTLP/JSON request; ``ValueError`` saying what is wrong with anything else."""
    try:
        tree = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(tree, dict) or not ({"resourceSpans", "resourceMetrics"} & tree.keys()):
        raise ValueError("not an OTLP/JSON trace or metrics request (no resourceSpans or resourceMetrics)")
    message_type = ExportTraceServiceRequest if "resourceSpans" in tree else ExportMetricsServiceRequest
    try:
        tree = _ids(tree, lambda v: base64.b64encode(bytes.fromhex(v)).decode())
        return json_format.ParseDict(tree, message_type())
    except (ValueError, json_format.ParseError) as exc:
        raise ValueError(f"not a valid OTLP/JSON request: {str(exc).splitlines()[0]}") from None


def read_file(
    path: str | os.PathLike[str], bad_lines: list[str] | None = None
) -> Iterator[ExportTraceServiceRequest | ExportMetricsServiceRequest]:
    """Yield the OTLP requests a file holds, in the order they were written.

    A line that is not one (a process killed mid-write leaves half a line) raises ``ValueError`` as
    ``FILE:LINE: what is wrong``; given a ``bad_lines`` list, it is appended there and skipped, so
    every good line is still read.
    """
    with open(path, "rb") as lines:
        for number, raw in enumerate(lines, 1):
            try:
                line = raw.decode("utf-8")
                if line.strip():
                    yield from_json_line(line)
            except (UnicodeDecodeError, ValueError) as exc:
                reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)
                if bad_lines is None:
                    raise ValueError(f"{path}:{number}: {reason}") from None
                bad_lines.append(f"{path}:{number}: {reason}")


class OtlpJsonLinesFile:
    """One file shared by the span and the metric exporter; created on first write."""

    def __init__(self, directory: Path, service_name: str) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in service_name)
        self.path = directory / f"{safe}-{stamp}-{os.getpid()}.jsonl"
        self._lock = threading.Lock()

    def write(self, message: Message) -> None:
        line = to_json_line(message) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as out:
                out.write(line)


class FileSpanExporter(SpanExporter):
    def __init__(self, file: OtlpJsonLinesFile) -> None:
        self.file = file

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
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
