"""The active telemetry: providers and instruments, set up once from the environment, never twice.

A tracer or meter provider that the application already installed is used as it is. Otherwise
this module builds private ones (it never sets the global providers, so the application stays free
to set its own) from OpenTelemetry's variables, taking exporters from the entry points that the
SDK and the exporter packages register, and falling back to the embedded OTLP-JSON-lines file.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation

from .. import semconv
from ..config import Settings
from ..version import __version__
from . import exporter_logs, signals
from .counters import counters
from .exporters import application_provider, build_meter_provider, build_tracer_provider
from .health import HealthInstruments
from .histograms import NO_CONTEXT, BufferedHistogram, duration_histogram, exemplars_on
from .open_phases import OpenPhase
from .randomness import PrivateRandomIdGenerator, isolate_exporter_jitter
from .spans import SpanStarter
from .views import has_metric_views, slow_exemplars_safe

logger = logging.getLogger(semconv.LOGGER_NAME)

active: Telemetry | None = None
"""The configured telemetry; ``None`` until :func:`configure` runs (lazily, on the first callback)."""

_lock = threading.RLock()


class Telemetry:
    """Everything the wrappers need at call time: one object, so rebinding is one identity check."""

    def __init__(
        self,
        settings: Settings,
        tracer_provider: trace.TracerProvider | None,
        meter_provider: metrics.MeterProvider | None,
        owned: Iterable[Any] = (),
        output: Any = None,
        destinations: dict[str, list[str]] | None = None,
        open_phase_processors: Iterable[Any] = (),
    ) -> None:
        self.settings = settings
        self.destinations = destinations or {}
        """Where each signal goes ("traces", "metrics"), described for people."""
        self.enabled = settings.enabled
        self.owned = list(owned)  # providers built here, shut down at exit
        self.output = output  # the embedded default's files (traces, metrics), when it is used
        self.open_phase_processors = list(open_phase_processors)
        """The span processors built here, which take long phases as they open (``announce``)."""
        self.tracer = trace.get_tracer(semconv.TRACER_NAME, __version__, tracer_provider=tracer_provider)
        if hasattr(self.tracer, "id_generator"):  # an SDK tracer: ours alone, whoever owns the provider
            self.tracer.id_generator = PrivateRandomIdGenerator()
        self.spans = SpanStarter(self.tracer, settings.direct_spans)
        """Where the wrappers and the phase tracker start their spans."""
        meter = metrics.get_meter(semconv.METER_NAME, __version__, meter_provider=meter_provider)
        mergeable = has_metric_views(meter_provider)
        # Calls' spans as exemplars: merged into our views' aggregations; the slow counter's only where
        # its reservoir is ours, which draws no random.
        self.exemplars = (
            bool(mergeable) and exemplars_on(meter_provider) and slow_exemplars_safe(meter_provider)
        )
        kept = settings.limits.exemplars if self.exemplars else 0

        def durations(name: str, description: str, kept: int = 0) -> BufferedHistogram:
            histogram = duration_histogram(meter, name, description)
            return BufferedHistogram(histogram, mergeable, settings.limits.buffer_limit, kept)

        self.callback_duration = durations(
            semconv.METRIC_CALLBACK_DURATION, "Duration of each callback invocation", kept
        )
        self.phase_duration = durations(
            semconv.METRIC_PHASE_DURATION, "Duration of each training phase (epoch, batch, val, ...)"
        )
        self.slow_counter, self.epoch_restarts, self.error_counter = counters(meter)
        # No observations: this instrument exists so that every reader's collection (push or pull)
        # first flushes the buffered histograms into the SDK, under the SDK's collection lock.
        meter.create_observable_gauge("otel_callbacks.flush", callbacks=[self._flush_on_collect], unit="1")
        self.health = HealthInstruments(meter)
        self._collecting: list[Callable[[], None]] = [self.health.sample]
        self.errors_seen: dict[str, int] = {}
        self._shutdown_hooks: list[Callable[[str], None]] = []
        # For exporters we built: their failure logs once per kind, every failure counted.
        self.export_logs = exporter_logs.install_filter(self._count_export_error) if self.owned else None

    def _count_export_error(self) -> None:
        self.errors_seen[exporter_logs.ERROR_TYPE] = self.errors_seen.get(exporter_logs.ERROR_TYPE, 0) + 1
        with contextlib.suppress(Exception):
            self.error_counter.add(1, {semconv.ATTR_ERROR_TYPE: exporter_logs.ERROR_TYPE}, context=NO_CONTEXT)

    def _flush_on_collect(self, options: CallbackOptions) -> Iterable[Observation]:
        self.flush_metrics()
        for bring_up_to_date in self._collecting:
            try:
                bring_up_to_date()
            except Exception as exc:
                self.report_error(exc)
        return ()

    def on_collect(self, hook: Callable[[], None]) -> None:
        """Run ``hook()`` at each collection, before the SDK reads the instruments."""
        self._collecting.append(hook)

    def flush_metrics(self) -> None:
        try:
            self.callback_duration.flush()
            self.phase_duration.flush()
        except Exception as exc:
            self.report_error(exc)

    def announce(self, span: Any) -> None:
        """Hand a long phase to the span processors built here as it opens, so that its backend shows
        it while it runs, and a process killed before it ends leaves a record of it in the embedded file
        (``open_phases.OpenPhase``: made on the export thread, and only for a phase still open then)."""
        try:
            opened = OpenPhase(span)
            for processor in self.open_phase_processors:
                processor.on_end(opened)
        except Exception as exc:
            self.report_error(exc)

    def report_error(self, exc: BaseException) -> None:
        """Log a telemetry failure once per kind and count every occurrence."""
        kind = type(exc).__qualname__
        count = self.errors_seen.get(kind, 0)
        self.errors_seen[kind] = count + 1
        if not count:
            logger.warning(
                "otel_callbacks: telemetry failed (%s: %s); training continues, further %s "
                "failures are counted in %s",
                kind,
                exc,
                kind,
                semconv.METRIC_TELEMETRY_ERRORS,
            )
        with contextlib.suppress(Exception):
            self.error_counter.add(1, {semconv.ATTR_ERROR_TYPE: kind}, context=NO_CONTEXT)

    def on_shutdown(self, hook: Callable[[str], None]) -> None:
        """Run ``hook(reason)`` first when this telemetry shuts down (the tracker closes what is open,
        ERROR with the reason: "process exit", "terminated by SIGTERM")."""
        self._shutdown_hooks.append(hook)

    def close_runs(self, reason: str) -> None:
        """Run the shutdown hooks now and keep them: what is open ends with the reason."""
        self._run_hooks(list(self._shutdown_hooks), reason)

    def _run_hooks(self, hooks: list[Callable[[str], None]], reason: str) -> None:
        for hook in hooks:
            try:
                hook(reason)
            except Exception as exc:
                self.report_error(exc)

    def force_flush(self, timeout: float) -> None:
        """Export what the providers built here hold now (before a process that may be killed soon
        exits: a Ray worker whose trial ended)."""
        for provider in self.owned:
            with contextlib.suppress(Exception):
                provider.force_flush(int(timeout * 1000))

    def shutdown(self, timeout: float | None = None, reason: str = "process exit") -> bool:
        """Flush and shut down what this module built, waiting at most ``timeout`` seconds; whether
        that finished in time.

        Shutting a meter provider down collects once more, which flushes the buffered durations.
        """
        hooks, self._shutdown_hooks = self._shutdown_hooks, []
        self._run_hooks(hooks, reason)
        owned, self.owned = self.owned, []
        if not owned:
            return True
        logs = self.export_logs

        def _shutdown() -> None:
            for provider in owned:
                try:
                    provider.shutdown()
                except Exception as exc:
                    logger.warning("otel_callbacks: shutdown of %r failed: %s", provider, exc)

        worker = threading.Thread(target=_shutdown, name="otel_callbacks-shutdown", daemon=True)
        worker.start()
        worker.join(self.settings.shutdown_timeout if timeout is None else timeout)
        if logs is not None and not worker.is_alive():
            exporter_logs.remove_filter(logs)
        if worker.is_alive():
            logger.warning(
                "otel_callbacks: telemetry not flushed within %.1f s "
                "(OTEL_CALLBACKS_SHUTDOWN_TIMEOUT); unsent data is dropped",
                self.settings.shutdown_timeout if timeout is None else timeout,
            )
        return not worker.is_alive()


def configure(
    settings: Settings | None = None,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
) -> Telemetry:
    """Set up telemetry for every instrumented callback; called lazily on the first callback.

    Explicit providers win; then providers the application installed globally; otherwise
    providers are built from ``OTEL_*`` variables, defaulting to the OTLP-JSON-lines file under
    ``OTEL_CALLBACKS_DIR``. Calling it again replaces the previous setup (shutting down what that
    one built). Invalid settings raise ``ValueError`` naming the variable.
    """
    global active
    settings = Settings.from_env() if settings is None else settings
    with _lock:
        previous, active = active, None
        if previous is not None:
            previous.shutdown()
        if not settings.enabled:
            active = Telemetry(settings, trace.NoOpTracerProvider(), metrics.NoOpMeterProvider())
            return active

        from opentelemetry.sdk.resources import SERVICE_NAME

        from .resource import process_resource

        tracer_provider = tracer_provider or application_provider(trace.get_tracer_provider())
        meter_provider = meter_provider or application_provider(metrics.get_meter_provider())
        owned = []
        output, processors = None, []
        destinations = {"traces": ["the application's provider"], "metrics": ["the application's provider"]}
        if tracer_provider is None or meter_provider is None:
            resource = process_resource()
            from .otlp_file import OtlpJsonLinesFile

            bounds = settings.file_max_bytes, settings.file_backups
            output = OtlpJsonLinesFile(settings.output_dir, resource.attributes[SERVICE_NAME], *bounds)
            if tracer_provider is None:
                tracer_provider, processors, destinations["traces"] = build_tracer_provider(resource, output)
                owned.append(tracer_provider)
            if meter_provider is None:
                meter_provider, destinations["metrics"] = build_meter_provider(resource, output)
                owned.append(meter_provider)
        isolate_exporter_jitter()  # the exporters (ours or the application's) are imported by now
        active = Telemetry(settings, tracer_provider, meter_provider, owned, output, destinations, processors)
        arm_sigterm()
        return active


def arm_sigterm() -> None:
    """Handle SIGTERM (telemetry/signals.py) unless a setting says not to; again at each epoch's
    start, which chains a handler the application set meanwhile."""
    if active is not None and active.enabled and active.settings.handle_sigterm:
        signals.arm(shutdown, _close_runs)


def _close_runs(reason: str) -> None:
    current = active
    if current is not None:
        current.close_runs(reason)


def ensure_configured() -> Telemetry:
    """The active telemetry, configuring it from the environment on first use."""
    with _lock:
        return active if active is not None else configure()


def shutdown(timeout: float | None = None, reason: str = "process exit") -> bool:
    """Flush and stop the active telemetry (also run at process exit); whether it finished in time.
    Open runs end first, while it is still active: their tables measure a call through it."""
    global active
    _close_runs(reason)
    with _lock:
        current, active = active, None
    return current is None or current.shutdown(timeout, reason)


def _forked() -> None:
    """In a child forked while a run was open (``multiprocessing``'s default on Linux, a callback's
    ``os.fork()``): the telemetry is the parent's, its runs, spans and files too. The child forgets it
    without ending anything, so that neither its exit nor a SIGTERM (``Process.terminate()``) ends,
    writes or exports the parent's spans; a callback the child fires configures its own."""
    global active
    active = None


atexit.register(shutdown)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)
