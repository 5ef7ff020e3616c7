"""The OpenTelemetry Instrumentor, for ``opentelemetry-instrument`` and zero-code use.

Registered under the ``opentelemetry_instrumentor`` entry point as ``ultralytics``, so
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=ultralytics`` turns it off.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from .package import _instruments
from .ultralytics.dropin import install, uninstall


class UltralyticsInstrumentor(BaseInstrumentor):
    """``opentelemetry-instrument`` entry point: instruments Ultralytics with no code change.

    ``instrument(tracer_provider=..., meter_provider=...)`` uses those providers.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        tracer_provider, meter_provider = kwargs.get("tracer_provider"), kwargs.get("meter_provider")
        if tracer_provider is not None or meter_provider is not None:
            from .telemetry import configure

            configure(tracer_provider=tracer_provider, meter_provider=meter_provider)
        install()

    def _uninstrument(self, **kwargs: Any) -> None:
        uninstall()
