"""Exporters and the providers built around them, from OpenTelemetry's own variables.

Exporters come from the entry points that the SDK and the exporter packages register; with none
named, each signal goes to its embedded OTLP-JSON-lines file.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from typing import Any

from ..config import SettingsError
from .views import metric_views


def new_exporter(signal: str, name: str) -> Any:
    """A new exporter (or metric reader) for ``signal`` by its OTEL_*_EXPORTER name, from the
    entry points the SDK and exporter packages register; ``otlp`` follows the protocol variables."""
    if name == "otlp":
        protocol = (
            os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
            or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf"
        ).strip()
        protocols = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
        if protocol not in protocols:
            raise SettingsError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported; accepted: grpc, http/protobuf"
            )
        name = protocols[protocol]
    group = f"opentelemetry_{signal}_exporter"
    found = {ep.name: ep for ep in entry_points(group=group)}
    if name not in found:
        hint = " (pip install 'otel-callbacks[otlp]')" if name.startswith("otlp") else ""
        raise SettingsError(
            f"OTEL_{signal.upper()}_EXPORTER names {name!r}, which no installed package provides{hint}; "
            f"available: {', '.join(sorted(found | {'none': None})) or 'none'}"
        )
    return found[name].load()()


def exporter_names(signal: str, default: str | None = None) -> list[str] | None:
    """The names in OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER; ``[default]`` (or None) when unset."""
    raw = os.environ.get(f"OTEL_{signal.upper()}_EXPORTER", "").strip()
    if not raw:
        return None if default is None else [default]
    return [n.strip() for n in raw.split(",") if n.strip() and n.strip() != "none"]


def _chosen(signal: str, file_exporter: Any, file: Any) -> dict[str, Any]:
    """The exporters OTEL_<SIGNAL>_EXPORTER names, by name; unset: the embedded file's."""
    names = exporter_names(signal)
    if names is None:
        return {_FILE: file_exporter(file)}
    return {name: new_exporter(signal, name) for name in names}


def build_tracer_provider(resource: Any, file: Any) -> tuple[Any, list[Any], list[str]]:
    """The provider, the span processors built here (those that take open phases: ``announce``), and
    where traces go, described."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from .file_exporters import FileSpanExporter
    from .open_phases import OpenRecords

    exporters = _chosen("traces", FileSpanExporter, file)
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)  # our exit is bounded
    # Spans are exported every EXPORT_DELAY_MS (the SDK's default is 5 s), so that an open phase's
    # record reaches the backend soon after the phase opens and a killed process loses at most that
    # much of what had finished; OTEL_BSP_SCHEDULE_DELAY wins.
    delay = None if os.environ.get("OTEL_BSP_SCHEDULE_DELAY", "").strip() else EXPORT_DELAY_MS
    processors = [BatchSpanProcessor(OpenRecords(e), schedule_delay_millis=delay) for e in exporters.values()]
    for processor in processors:
        provider.add_span_processor(processor)
    return provider, processors, _describe(exporters, file and file.traces_path)


def build_meter_provider(resource: Any, file: Any) -> Any:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader

    from .file_exporters import FileMetricExporter

    exporters = _chosen("metrics", FileMetricExporter, file)
    readers = [
        e if isinstance(e, MetricReader) else PeriodicExportingMetricReader(e) for e in exporters.values()
    ]
    provider = MeterProvider(
        resource=resource, metric_readers=readers, views=metric_views(), shutdown_on_exit=False
    )
    return provider, _describe(exporters, file and file.metrics_path)


_FILE = "file"
EXPORT_DELAY_MS = 500


def _describe(exporters: dict[str, Any], path: Any) -> list[str]:
    """Where a signal goes, for people: its file's path, or each exporter and its endpoint."""
    described = []
    for name, exporter in exporters.items():
        endpoint = getattr(exporter, "_endpoint", None)
        if name == _FILE:
            described.append(f"{_FILE} {path.resolve()}")
        else:
            described.append(f"{name} to {endpoint}" if isinstance(endpoint, str) else name)
    return described or ["nowhere (none)"]


def application_provider(provider: Any) -> Any:
    """The global provider if the application set one, else None (the API's proxy or no-op)."""
    name = type(provider).__name__
    return None if name.startswith(("Proxy", "NoOp", "_Proxy", "_NoOp", "_Default")) else provider
