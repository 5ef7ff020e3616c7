"""Telemetry: providers and exporters from the environment, the embedded OTLP-JSON-lines file,
buffered histograms and private randomness. It knows nothing of callbacks or Ultralytics."""

from __future__ import annotations

from . import providers
from .providers import Telemetry, configure, ensure_configured, shutdown
from .views import metric_views


def current() -> Telemetry | None:
    """The configured telemetry; None until :func:`configure` runs (lazily, on the first callback)."""
    return providers.active


__all__ = ["Telemetry", "configure", "current", "ensure_configured", "metric_views", "shutdown"]
