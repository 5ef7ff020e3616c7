"""The exporters' failure logs, one line per kind of failure, the rest counted.

While a backend is down the OTLP exporters and the SDK's batch processors log every failed or
retried export: hundreds of lines over a long training. For the providers otel_callbacks builds,
the first record of each kind passes (with a note that the rest are counted) and every record is
counted in ``otel_callbacks.telemetry.errors`` (``error.type`` = ``export``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

# Where the SDK and the OTLP exporters log export failures, retries and drops.
EXPORT_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.metrics._internal.export",
)
ERROR_TYPE = "export"
_ONCE = "otel_callbacks: logged once; repeats are counted in otel_callbacks.telemetry.errors"


class OncePerKind(logging.Filter):
    """Lets the first WARNING+ record of each (logger, message template) through."""

    def __init__(self, count: Callable[[], None]) -> None:
        super().__init__("otel_callbacks")
        self._count = count
        self._seen: set[tuple[str, object]] = set()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        self._count()
        note = f" ({_ONCE})"
        noted = isinstance(record.msg, str) and record.msg.endswith(note)  # by another one's filter
        key = (record.name, record.msg[: -len(note)] if noted else record.msg)
        with self._lock:
            first = key not in self._seen
            self._seen.add(key)
        if first and not noted:
            record.msg = f"{record.msg}{note}"
        return first


def install_filter(count: Callable[[], None]) -> OncePerKind:
    once = OncePerKind(count)
    for name in EXPORT_LOGGERS:
        logging.getLogger(name).addFilter(once)
    return once


def remove_filter(once: OncePerKind) -> None:
    for name in EXPORT_LOGGERS:
        logging.getLogger(name).removeFilter(once)
