"""The embedded default backend: OTLP-JSON-lines files, one per process.

Each line is one ``ExportTraceServiceRequest`` or ``ExportMetricsServiceRequest`` in the OTLP/JSON
encoding (hex ids, integer enums), as the Collector's ``otlpjsonfile`` receiver reads it, encoded
with the OTLP exporters' own protobuf encoders so the file holds exactly what OTLP would send.
"""

from __future__ import annotations

import base64
import contextlib
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
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .. import semconv
from .spans import DirectSpan

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
    """Yield the OTLP requests a file holds, in the order they were written, repaired (below).

    A line that is not one (a process killed mid-write leaves half a line) raises ``ValueError`` as
    ``FILE:LINE: what is wrong``; given a ``bad_lines`` list, it is appended there and skipped, so
    every good line is still read.
    """
    yield from repaired(list(_requests(path, bad_lines)))


def repaired(
    requests: list[ExportTraceServiceRequest | ExportMetricsServiceRequest],
) -> list[ExportTraceServiceRequest | ExportMetricsServiceRequest]:
    """One process's requests with its open-phase records resolved: a record whose span ended later
    is dropped; one whose span never ended (SIGKILL, power loss) becomes that span, ERROR
    ``semconv.UNCLOSED``, ended at the last moment the requests hold (a span's end, an unclosed
    phase's start, a metric point where metrics are among them), so the tree has no orphans, no
    child outlives its parent and the phases keep their ids."""
    closed: set[bytes] = set()
    records: list[tuple[Any, Any]] = []
    last = 0
    for request in requests:
        if isinstance(request, ExportMetricsServiceRequest):
            last = max(last, _last_point(request))
            continue
        for scope_spans in (ss for rs in request.resource_spans for ss in rs.scope_spans):
            for span in scope_spans.spans:
                if any(kv.key == semconv.ATTR_OPEN for kv in span.attributes):
                    records.append((scope_spans, span))
                else:
                    closed.add(span.span_id)
                    last = max(last, span.end_time_unix_nano)
    last = max([last, *(span.start_time_unix_nano for _, span in records if span.span_id not in closed)])
    for scope_spans, span in records:
        if span.span_id in closed:
            scope_spans.spans.remove(span)
            continue
        kept = [kv for kv in span.attributes if kv.key != semconv.ATTR_OPEN]
        del span.attributes[:]
        span.attributes.extend(kept)
        span.end_time_unix_nano = last
        span.status.code = Status.STATUS_CODE_ERROR
        span.status.message = semconv.UNCLOSED
    return [r for r in requests if not isinstance(r, ExportTraceServiceRequest) or _has_spans(r)]


def _has_spans(request: ExportTraceServiceRequest) -> bool:
    return any(ss.spans for rs in request.resource_spans for ss in rs.scope_spans)


def _last_point(request: ExportMetricsServiceRequest) -> int:
    last = 0
    for metric in (m for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics):
        kind = metric.WhichOneof("data")
        for point in getattr(metric, kind).data_points if kind else ():
            last = max(last, point.time_unix_nano)
    return last


def _requests(
    path: str | os.PathLike[str], bad_lines: list[str] | None
) -> Iterator[ExportTraceServiceRequest | ExportMetricsServiceRequest]:
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
    """A process's two files, one per signal as OpenTelemetry's file exporters write them (a trace
    viewer's upload takes the traces file as it is): ``<service>-<time>-<pid>.traces.jsonl`` and
    ``.metrics.jsonl``, each created on its first write."""

    def __init__(self, directory: Path, service_name: str) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in service_name)
        prefix = f"{safe}-{stamp}-{os.getpid()}"
        self.directory = directory
        self.traces_path = directory / f"{prefix}.traces.jsonl"
        self.metrics_path = directory / f"{prefix}.metrics.jsonl"
        self._lock = threading.Lock()

    def write(self, message: Message) -> None:
        line = to_json_line(message) + "\n"
        path = self.metrics_path if isinstance(message, ExportMetricsServiceRequest) else self.traces_path
        with self._lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as out:
                out.write(line)


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
