"""The embedded default backend: OTLP-JSON-lines files, one per process.

Each line is one ``ExportTraceServiceRequest`` or ``ExportMetricsServiceRequest`` in the OTLP/JSON
encoding (hex ids, integer enums), as the Collector's ``otlpjsonfile`` receiver reads it, encoded
with the OTLP exporters' own protobuf encoders so the file holds exactly what OTLP would send.
"""

from __future__ import annotations

import base64
import glob
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from .. import semconv

logger = logging.getLogger(semconv.LOGGER_NAME)

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
    """Yield the OTLP requests a file holds, in the order they were written, repaired (below); a
    file the embedded default writes to is read with its rotated files before it, oldest first.

    A line that is not one (a process killed mid-write leaves half a line) raises ``ValueError`` as
    ``FILE:LINE: what is wrong``; given a ``bad_lines`` list, it is appended there and skipped, so
    every good line is still read.
    """
    files = [*rotated_files(Path(path)), Path(path)]
    yield from repaired([r for each in files for r in _requests(each, bad_lines)])


_ROTATED = re.compile(r"(?P<current>.+\.(traces|metrics))\.(?P<number>\d+)\.jsonl")


def rotated_path(path: Path, number: int) -> Path:
    """The ``number``-th newest rotated file of ``path`` (``x.traces.jsonl`` -> ``x.traces.2.jsonl``)."""
    return path.with_name(f"{path.name.removesuffix('.jsonl')}.{number}.jsonl")


def rotated_files(path: Path) -> list[Path]:
    """The rotated files of a current file that exist, oldest first (none for a rotated file)."""
    if _ROTATED.fullmatch(path.name):
        return []
    found = {}
    for each in path.parent.glob(f"{glob.escape(path.name.removesuffix('.jsonl'))}.*.jsonl"):
        match = _ROTATED.fullmatch(each.name)
        if match and match["current"] + ".jsonl" == path.name:
            found[int(match["number"])] = each
    return [found[n] for n in sorted(found, reverse=True)]


def current_file(path: Path) -> Path | None:
    """The file a rotated file was rotated from; None for any other file."""
    match = _ROTATED.fullmatch(path.name)
    return path.with_name(match["current"] + ".jsonl") if match else None


def repaired(
    requests: list[ExportTraceServiceRequest | ExportMetricsServiceRequest],
) -> list[ExportTraceServiceRequest | ExportMetricsServiceRequest]:
    """One process's requests with its open-phase records resolved: a record whose phase's span came
    later is dropped; one whose phase never ended (SIGKILL, power loss) becomes that phase's span,
    with its name, id and parent, ERROR ``semconv.UNCLOSED``, ended at the last moment the requests hold (a
    span's end, an unclosed phase's start, a metric point where metrics are among them), so the tree
    has no orphans, no child outlives its parent and the phases keep their ids. (A record written
    before records had ids of their own carries its phase's id and parent, and no
    ``semconv.ATTR_OPEN_PARENT``.)"""
    closed: set[bytes] = set()
    records: list[tuple[Any, Any, bytes]] = []  # scope spans, record, its phase's id
    last = 0
    for request in requests:
        if isinstance(request, ExportMetricsServiceRequest):
            last = max(last, _last_point(request))
            continue
        for scope_spans in (ss for rs in request.resource_spans for ss in rs.scope_spans):
            for span in scope_spans.spans:
                marks = {kv.key: kv.value for kv in span.attributes if kv.key.startswith(semconv.ATTR_OPEN)}
                if semconv.ATTR_OPEN not in marks:
                    closed.add(span.span_id)
                    last = max(last, span.end_time_unix_nano)
                elif semconv.ATTR_OPEN_PARENT in marks:
                    span.span_id, parent = span.parent_span_id, marks[semconv.ATTR_OPEN_PARENT].string_value
                    span.parent_span_id = bytes.fromhex(parent)
                    records.append((scope_spans, span, span.span_id))
                else:
                    records.append((scope_spans, span, span.span_id))
    last = max([last, *(span.start_time_unix_nano for _, span, phase in records if phase not in closed)])
    for scope_spans, span, phase in records:
        if phase in closed:
            scope_spans.spans.remove(span)
            continue
        if span.name.endswith(semconv.OPEN_SUFFIX):  # (older records have the phase's name)
            span.name = span.name[: -len(semconv.OPEN_SUFFIX)]
        kept = [kv for kv in span.attributes if not kv.key.startswith(semconv.ATTR_OPEN)]
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
    ``.metrics.jsonl``, each created on its first write.

    Bounded like the standard library's rotating handler: a line that would take a file past
    ``max_bytes`` (0: no bound) first moves it to ``.1.jsonl`` (``.1`` to ``.2``, and so on), keeping
    ``backups`` rotated files; the oldest beyond them is dropped, counted in ``dropped`` and said once.
    """

    def __init__(self, directory: Path, service_name: str, max_bytes: int = 0, backups: int = 0) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in service_name)
        prefix = f"{safe}-{stamp}-{os.getpid()}"
        self.directory = directory
        self.traces_path = directory / f"{prefix}.traces.jsonl"
        self.metrics_path = directory / f"{prefix}.metrics.jsonl"
        self.max_bytes, self.backups = max_bytes, backups
        self.dropped = 0  # files dropped past the backups, both signals
        self._sizes: dict[Path, int] = {}
        self._lock = threading.Lock()

    def write(self, message: Message) -> None:
        line = (to_json_line(message) + "\n").encode()
        path = self.metrics_path if isinstance(message, ExportMetricsServiceRequest) else self.traces_path
        with self._lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            size = self._sizes.get(path)
            if size is None:
                size = path.stat().st_size if path.exists() else 0
            if self.max_bytes and size and size + len(line) > self.max_bytes:
                self._rotate(path)
                size = 0
            with open(path, "ab") as out:
                out.write(line)
            self._sizes[path] = size + len(line)

    def _rotate(self, path: Path) -> None:
        oldest = rotated_path(path, self.backups) if self.backups else path
        if oldest.exists():
            self.dropped += 1
            if self.dropped == 1:
                logger.warning(
                    "otel_callbacks: %s reached its OTEL_CALLBACKS_FILE_MAX_BYTES=%d with "
                    "OTEL_CALLBACKS_FILE_BACKUPS=%d rotated files kept: its oldest data is dropped "
                    "(each file dropped from now on is counted, not said)",
                    path,
                    self.max_bytes,
                    self.backups,
                )
            oldest.unlink()
        for number in range(self.backups - 1, 0, -1):
            if rotated_path(path, number).exists():
                rotated_path(path, number).rename(rotated_path(path, number + 1))
        if self.backups:
            path.rename(rotated_path(path, 1))
