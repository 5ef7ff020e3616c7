"""``OTEL_CALLBACKS_*`` settings, read and validated in one place.

OpenTelemetry's own variables (``OTEL_SERVICE_NAME``, ``OTEL_EXPORTER_OTLP_*``...) are read by
the SDK and the exporters themselves; only ``OTEL_SDK_DISABLED`` is looked at here, because it
turns the whole layer into plain pass-through calls.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import semconv


class SettingsError(ValueError):
    """An invalid setting; the message names the variable, its value and what is accepted."""


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean; accepted: {', '.join(_TRUE + _FALSE)}")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise SettingsError(f"{name}={raw!r} is not accepted; expected an integer >= 0")
    return value


def _number(
    env: Mapping[str, str], name: str, default: float, valid: Callable[[float], bool], expected: str
) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not valid(value):  # NaN fails every comparison
        raise SettingsError(f"{name}={raw!r} is not accepted; expected {expected}")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    return _number(env, name, default, lambda v: 0 < v < float("inf"), "a finite number of seconds > 0")


def _seconds_or_zero(env: Mapping[str, str], name: str, default: float) -> float:
    return _number(env, name, default, lambda v: 0 <= v < float("inf"), "a finite number of seconds >= 0")


def _fraction(env: Mapping[str, str], name: str, default: float) -> float:
    return _number(env, name, default, lambda v: 0 <= v <= 1000, "a number from 0 (off) to 1000")


def _share(env: Mapping[str, str], name: str, default: float) -> float:
    return _number(env, name, default, lambda v: 0 < v < 1, "a fraction between 0 and 1")


def _factor(env: Mapping[str, str], name: str, default: float) -> float:
    return _number(env, name, default, lambda v: 1 <= v < float("inf"), "a finite number >= 1")


def process_ranks(env: Mapping[str, str] | None = None) -> dict[str, int]:
    """This process's place in a distributed training, from the variables torch.distributed.run sets
    (RANK, LOCAL_RANK, WORLD_SIZE); empty outside one. Values that are not integers are ignored."""
    env = os.environ if env is None else env
    names = {
        "RANK": semconv.ATTR_RANK,
        "LOCAL_RANK": semconv.ATTR_LOCAL_RANK,
        "WORLD_SIZE": semconv.ATTR_WORLD_SIZE,
    }
    ranks = {}
    for variable, key in names.items():
        raw = env.get(variable, "").strip()
        if raw.lstrip("-").isdigit():
            ranks[key] = int(raw)
    return ranks


def instrumentation_enabled(env: Mapping[str, str] | None = None) -> bool:
    """Whether callbacks should be wrapped at all; read when each callback is registered.

    An invalid value here counts as enabled: :func:`Settings.from_env` reports it, with the rest.
    """
    env = os.environ if env is None else env
    try:
        return _bool(env, "OTEL_CALLBACKS_ENABLED", True) and not _bool(env, "OTEL_SDK_DISABLED", False)
    except SettingsError:
        return True


INSTALL_SWITCH = "OTEL_CALLBACKS_INSTALL"
"""True in a process's environment: ``otel_callbacks.install()`` runs at its start (with the package's
bootstrap directory on ``PYTHONPATH``, ``ultralytics/launch.py``). Launchers hand it to children."""


def install_requested(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process should install otel_callbacks at start; an invalid value raises."""
    return _bool(os.environ if env is None else env, INSTALL_SWITCH, False)


@dataclass(frozen=True)
class Limits:
    """Internal thresholds, not read from the environment: every buffer and sample is bounded by
    one of these, and tests lower them so that a short run crosses each one."""

    buffer_limit: int = 65_536
    """Durations buffered per attribute set before the hot path folds them into fixed-size counts."""
    reservoir_size: int = 2048
    """Durations kept per callback and run for the timing table's p95 (exact below this)."""
    batch_window: int = 64
    """Recent batch times whose median sets the relative slow threshold."""
    batch_min: int = 5
    """The fewest batch times that define that median."""
    failures: int = 100
    """Reasons kept per run for phases that did not close normally (the rest are counted)."""
    stall_spans: int = 8
    """``stall`` spans per hung call: past its slow threshold, then each time it has run twice as long
    (tracing/watchdog.py)."""
    exemplars: int = 16
    """Exemplars kept per attribute set of a duration histogram between two collections (the latest)."""
    stall_spans_per_run: int = 32
    """``stall`` spans per run (a call slow every epoch, not hung, would make some each time)."""


@dataclass(frozen=True)
class Settings:
    """The project's own knobs. ``Settings.from_env()`` is the only reader of the environment."""

    enabled: bool = True
    """``OTEL_CALLBACKS_ENABLED`` (and not ``OTEL_SDK_DISABLED``): false makes every wrapper a plain call."""
    output_dir: Path = Path("runs/otel")
    """``OTEL_CALLBACKS_DIR``: where the embedded default writes its OTLP-JSON-lines files."""
    file_max_bytes: int = 64 * 1024 * 1024
    """``OTEL_CALLBACKS_FILE_MAX_BYTES``: the size at which each embedded file is rotated (0: never)."""
    file_backups: int = 4
    """``OTEL_CALLBACKS_FILE_BACKUPS``: rotated files kept per embedded file; the oldest beyond them is
    dropped (said once, counted)."""
    batch_spans_first: int = 3
    """``OTEL_CALLBACKS_BATCH_SPANS_FIRST``: per-batch spans kept for the first N batches of each loop."""
    batch_spans_every: int = 100
    """``OTEL_CALLBACKS_BATCH_SPANS_EVERY``: and for every Nth batch after them (0: none)."""
    max_spans: int = 7000
    """``OTEL_CALLBACKS_MAX_SPANS``: spans per run (trace) beyond which only the phases of epochs,
    validations and runs, and slow or failed invocations, still get spans (metrics count everything)."""
    predict_traces_first: int = 10
    """``OTEL_CALLBACKS_PREDICT_TRACES_FIRST``: predict runs traced from their start, first of all."""
    predict_traces_interval: float = 10.0
    """``OTEL_CALLBACKS_PREDICT_TRACES_INTERVAL``: after those, one predict run traced per this many
    seconds (0: every run); the others get a trace only if they fail, make a slow call, or last
    ``table_min_duration``. Their metrics count every run."""
    slow_threshold: float = 1.0
    """``OTEL_CALLBACKS_SLOW_THRESHOLD``: seconds above which a callback invocation is slow."""
    slow_batch_fraction: float = 0.5
    """``OTEL_CALLBACKS_SLOW_BATCH_FRACTION``: a per-batch callback is also slow above this
    fraction of the median batch time (0 turns the relative rule off)."""
    gap_span_min: float = 0.001
    """``OTEL_CALLBACKS_GAP_SPAN_MIN``: seconds a gap between two hooks (checkpoint, clear_memory,
    val_metrics, strip_optimizer, finalize, cleanup) must last to get a span; shorter ones are only
    in the metrics and their parent's untraced time (a row of 26 us between every two epochs is clutter)."""
    default_hook_spans: bool = False
    """``OTEL_CALLBACKS_DEFAULT_HOOK_SPANS``: spans for the no-op default hooks too (always counted
    in the metrics; a slow or failed call gets its span either way)."""
    summary: bool = True
    """``OTEL_CALLBACKS_SUMMARY``: print the timing table at the end of each run (false: no tables and
    no summaries of short runs)."""
    table_min_duration: float = 5.0
    """``OTEL_CALLBACKS_TABLE_MIN_DURATION``: seconds a predict, val or export run must last to print a
    table of its own; shorter ones (an inference loop's calls) are summarized by kind instead, at
    process exit and at most once a summary interval (0: a table for every run). Trainings always
    print theirs."""
    summary_interval: float = 600.0
    """``OTEL_CALLBACKS_SUMMARY_INTERVAL``: the fewest seconds between two summaries of short runs in a
    long-lived process (the last one is printed at exit)."""
    watchdog_interval: float = 1.0
    """``OTEL_CALLBACKS_WATCHDOG_INTERVAL``: seconds between two looks of the watchdog thread at the
    calls in progress: a call that runs past its slow threshold is counted slow then, and its run's
    trace gets a ``stall`` span with every thread's stack (0: no watchdog)."""
    stall_factor: float = 10.0
    """``OTEL_CALLBACKS_STALL_FACTOR``: a training batch, or a wait for the dataloader, has stalled once
    it has run this many times the loop's recent p99 batch time (and at least ``stall_min``): the
    watchdog gives its run a ``stall`` span (tracing/engine_stalls.py)."""
    stall_min: float = 60.0
    """``OTEL_CALLBACKS_STALL_MIN``: the fewest seconds after which a batch or a wait has stalled."""
    stall_phase: float = 1800.0
    """``OTEL_CALLBACKS_STALL_PHASE``: seconds after which anything else an engine does between two
    firings has stalled: a phase with no hook inside (setup's dataset caching, a checkpoint write),
    or a loop too young to know its batch times."""
    input_bound: float = 0.3
    """``OTEL_CALLBACKS_INPUT_BOUND``: a training is input-bound where its dataloader wait is more than
    this fraction of its training loop (the batches and the waits between them)."""
    bound_share: float = 0.2
    """``OTEL_CALLBACKS_BOUND_SHARE``: callbacks, validation or checkpointing bound a training where they
    take more than this fraction of its epochs (tracing/verdicts.py)."""
    shutdown_timeout: float = 5.0
    """``OTEL_CALLBACKS_SHUTDOWN_TIMEOUT``: the most seconds process exit waits to flush telemetry."""
    handle_sigterm: bool = True
    """``OTEL_CALLBACKS_SIGTERM``: on SIGTERM, end every open run ERROR, flush within the shutdown
    timeout, then terminate as the signal would have; only where the application set no handler of
    its own before (one it sets later is chained). False: leave SIGTERM alone."""
    direct_spans: bool = True
    """``OTEL_CALLBACKS_DIRECT_SPANS``: hand child spans finished to the SDK's batch or simple span
    processors where that is what the SDK would export (``telemetry/spans.py``); false: every span
    through the tracer's ``start_span``."""
    limits: Limits = field(default_factory=Limits)
    """Internal thresholds (no environment variable)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every setting; an invalid value raises ``ValueError`` naming it."""
        env = os.environ if env is None else env
        sdk_disabled = _bool(env, "OTEL_SDK_DISABLED", False)
        return cls(
            enabled=_bool(env, "OTEL_CALLBACKS_ENABLED", True) and not sdk_disabled,
            output_dir=Path(env.get("OTEL_CALLBACKS_DIR", "").strip() or cls.output_dir),
            file_max_bytes=_int(env, "OTEL_CALLBACKS_FILE_MAX_BYTES", cls.file_max_bytes),
            file_backups=_int(env, "OTEL_CALLBACKS_FILE_BACKUPS", cls.file_backups),
            batch_spans_first=_int(env, "OTEL_CALLBACKS_BATCH_SPANS_FIRST", cls.batch_spans_first),
            batch_spans_every=_int(env, "OTEL_CALLBACKS_BATCH_SPANS_EVERY", cls.batch_spans_every),
            max_spans=_int(env, "OTEL_CALLBACKS_MAX_SPANS", cls.max_spans),
            predict_traces_first=_int(env, "OTEL_CALLBACKS_PREDICT_TRACES_FIRST", cls.predict_traces_first),
            predict_traces_interval=_seconds_or_zero(
                env, "OTEL_CALLBACKS_PREDICT_TRACES_INTERVAL", cls.predict_traces_interval
            ),
            slow_threshold=_seconds(env, "OTEL_CALLBACKS_SLOW_THRESHOLD", cls.slow_threshold),
            slow_batch_fraction=_fraction(env, "OTEL_CALLBACKS_SLOW_BATCH_FRACTION", cls.slow_batch_fraction),
            gap_span_min=_seconds(env, "OTEL_CALLBACKS_GAP_SPAN_MIN", cls.gap_span_min),
            default_hook_spans=_bool(env, "OTEL_CALLBACKS_DEFAULT_HOOK_SPANS", cls.default_hook_spans),
            summary=_bool(env, "OTEL_CALLBACKS_SUMMARY", cls.summary),
            table_min_duration=_seconds_or_zero(
                env, "OTEL_CALLBACKS_TABLE_MIN_DURATION", cls.table_min_duration
            ),
            summary_interval=_seconds(env, "OTEL_CALLBACKS_SUMMARY_INTERVAL", cls.summary_interval),
            watchdog_interval=_seconds_or_zero(
                env, "OTEL_CALLBACKS_WATCHDOG_INTERVAL", cls.watchdog_interval
            ),
            stall_factor=_factor(env, "OTEL_CALLBACKS_STALL_FACTOR", cls.stall_factor),
            stall_min=_seconds(env, "OTEL_CALLBACKS_STALL_MIN", cls.stall_min),
            stall_phase=_seconds(env, "OTEL_CALLBACKS_STALL_PHASE", cls.stall_phase),
            input_bound=_share(env, "OTEL_CALLBACKS_INPUT_BOUND", cls.input_bound),
            bound_share=_share(env, "OTEL_CALLBACKS_BOUND_SHARE", cls.bound_share),
            shutdown_timeout=_seconds(env, "OTEL_CALLBACKS_SHUTDOWN_TIMEOUT", cls.shutdown_timeout),
            direct_spans=_bool(env, "OTEL_CALLBACKS_DIRECT_SPANS", cls.direct_spans),
            handle_sigterm=_bool(env, "OTEL_CALLBACKS_SIGTERM", cls.handle_sigterm),
        )

    def samples_batch(self, index: int) -> bool:
        """Whether the batch at this 0-based index of its loop gets spans."""
        if index < self.batch_spans_first:
            return True
        every = self.batch_spans_every
        return every > 0 and index % every == 0

    def next_sampled_batch(self, index: int) -> int:
        """The first index after ``index`` whose batch gets spans; -1 when none does."""
        if index + 1 < self.batch_spans_first:
            return index + 1
        every = self.batch_spans_every
        return (index // every + 1) * every if every > 0 else -1
