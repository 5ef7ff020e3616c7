"""The contract's counters, made once per telemetry."""

from __future__ import annotations

from opentelemetry import metrics

from .. import semconv
from .histograms import NO_CONTEXT


def counters(meter: metrics.Meter) -> tuple[metrics.Counter, metrics.Counter, metrics.Counter]:
    """Slow calls, restarted epochs (each reason from 0: Prometheus' ``increase()`` then sees the
    first restart) and the telemetry's own failures."""
    slow = meter.create_counter(
        semconv.METRIC_CALLBACK_SLOW,
        unit="{invocation}",
        description="Callback invocations over the slow threshold",
    )
    restarts = meter.create_counter(
        semconv.METRIC_EPOCH_RESTARTS,
        unit="{restart}",
        description="Epochs that Ultralytics started again (OOM retry, NaN recovery), by reason",
    )
    for reason in semconv.RESTART_REASONS:
        attributes = {semconv.ATTR_RESTART_REASON: reason, semconv.ATTR_MODE: semconv.MODE_TRAIN}
        restarts.add(0, attributes, context=NO_CONTEXT)
    errors = meter.create_counter(
        semconv.METRIC_TELEMETRY_ERRORS,
        unit="{error}",
        description="Failures of the telemetry layer itself (never of the training)",
    )
    return slow, restarts, errors
