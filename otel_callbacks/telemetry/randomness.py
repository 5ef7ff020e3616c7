"""Keep telemetry off the global ``random`` sequence.

Ultralytics seeds Python's global ``random`` for reproducible augmentation. The OpenTelemetry SDK
draws span ids from it, and the OTLP exporters draw their retry jitter from it (in a background
thread, so the draw lands at an arbitrary point of the training's sequence). Either would make an
instrumented training differ from a plain one, so otel_callbacks uses private generators for both.
"""

from __future__ import annotations

import random
import sys

from opentelemetry import trace
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

# Modules that call ``random.uniform`` for retry jitter (opentelemetry-exporter-otlp 1.3x - 1.4x).
_JITTER_MODULES = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
)


class PrivateRandomIdGenerator(RandomIdGenerator):
    """The SDK's random ids, from a generator of our own (seeded from ``os.urandom``)."""

    def __init__(self) -> None:
        self._random = random.Random()

    def generate_span_id(self) -> int:
        span_id = self._random.getrandbits(64)
        while span_id == trace.INVALID_SPAN_ID:
            span_id = self._random.getrandbits(64)
        return span_id

    def generate_trace_id(self) -> int:
        trace_id = self._random.getrandbits(128)
        while trace_id == trace.INVALID_TRACE_ID:
            trace_id = self._random.getrandbits(128)
        return trace_id


def isolate_exporter_jitter() -> None:
    """Point the imported OTLP exporters' ``random`` at a private generator (same distribution)."""
    for name in _JITTER_MODULES:
        module = sys.modules.get(name)
        if module is not None and getattr(module, "random", None) is random:
            module.random = random.Random()
