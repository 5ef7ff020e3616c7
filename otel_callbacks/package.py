"""The instrumented library, as opentelemetry-instrumentation packages declare it."""

_instruments = ("ultralytics >= 8.3",)
