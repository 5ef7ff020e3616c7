"""Long phases handed to the span pipeline as they open, and the record of one still open: what a
backend shows of a phase while it runs, and what the embedded file keeps of a phase that a killed
process never ended (no protobuf here: imported with the providers, whatever the exporters)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanContext

from .. import semconv
from .randomness import PrivateRandomIdGenerator
from .spans import DirectSpan

_IDS = PrivateRandomIdGenerator()  # the records' own span ids (never the global random)


def open_record(span: Any) -> ReadableSpan | None:
    """A record of a span still open: a child of it with an id of its own, ended 1 ns after its start
    (Jaeger flags a span that ends where it starts with a warning: "negative duration"), named
    ``<name> (in progress)``, marked ``semconv.ATTR_OPEN`` and naming the span's parent
    (``semconv.ATTR_OPEN_PARENT``), so that a backend or a file holds each span id once and a reader
    can make the span from it where the span never came. The logfire convention of pending spans."""
    if isinstance(span, DirectSpan):
        name, context, parent, resource = span._name, span._context, span._parent, span._tracer.resource
        attributes, start, scope = span._attributes, span._start_time, span._pipeline.scope
    elif isinstance(span, ReadableSpan) and span.start_time is not None:
        name, context, parent, resource = span.name, span.context, span.parent, span.resource
        attributes, start, scope = span.attributes, span.start_time, span.instrumentation_scope
    else:
        return None
    own_id = _IDS.generate_span_id()
    own = SpanContext(context.trace_id, own_id, False, context.trace_flags, context.trace_state)
    marks = {
        semconv.ATTR_OPEN: True,
        semconv.ATTR_OPEN_PARENT: format(parent.span_id, "016x") if parent is not None else "",
    }
    return ReadableSpan(
        name + semconv.OPEN_SUFFIX,
        own,
        context,
        resource,
        {**(attributes or {}), **marks},
        start_time=start,
        end_time=start + 1,
        instrumentation_scope=scope,
    )


class OpenPhase:
    """A long phase handed to the span pipeline as it opened (``Telemetry.announce``). The caller's
    thread only queues it; on the export thread, :class:`OpenRecords` exports its record if the phase
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


class OpenRecords(SpanExporter):
    """An exporter of ours as the span processors we build see it: the open phases among the spans
    become their records (or nothing), so that every backend gets them as the embedded file does. The
    processors of an application's provider never see an open phase."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter

    def export(self, spans: Sequence[ReadableSpan | OpenPhase]) -> SpanExportResult:
        records = [s.record() if isinstance(s, OpenPhase) else s for s in spans]
        records = [r for r in records if r is not None]
        return self.exporter.export(records) if records else SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.exporter.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.exporter.shutdown()
