"""Median cost per callback invocation: bare, Ultralytics' plain loop, and each instrumented mode.

Run: ``python benchmarks/hot_path.py`` (add ``--steps N --repeats R``). One step is one training
batch as Ultralytics fires it: ``run_callbacks("on_train_batch_start")`` then
``run_callbacks("on_train_batch_end")``, one user callback each. The headline is the cost of a
training step with the default settings over Ultralytics' plain loop (goal: at most 3 us), the
median of the repeats; the next line is the same from the fastest repeat of each side (the one the
shared machine disturbed least), and the last splits the median into the unsampled path, the metric
collection and the sampled batches' spans.
The per-batch modes of the table run inside a training's epoch, as Ultralytics fires batches.
Each repeat ends with a metric collection, so the deferred work (bucketing and merging buffered
durations) is paid inside the timing. Ratios compare against the bare calls measured in the same
run. Telemetry goes to a real SDK tracer provider (batch processor, discarding exporter) and a
real meter provider.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import otel_callbacks
from otel_callbacks import Settings, telemetry

BATCH = ("on_train_batch_start", "on_train_batch_end")
OPENING = ("on_pretrain_routine_start", "on_train_epoch_start")


class Discard(SpanExporter):
    def export(self, spans: Sequence) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class Trainer:
    epoch = 0

    def __init__(self, callbacks):
        self.callbacks = callbacks

    def run_callbacks(self, event: str) -> None:  # ultralytics.engine.trainer.BaseTrainer
        for callback in self.callbacks.get(event, []):
            callback(self)


def user_callback(trainer: Trainer) -> None:
    pass


def per_call_ns(
    step: Callable[[], None],
    calls_per_step: int,
    steps: int,
    repeats: int,
    collect: Callable[[], object] = lambda: None,
) -> float:
    """Median over repeats of the cost per callback invocation."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(steps):
            step()
        collect()
        samples.append((time.perf_counter_ns() - start) / (steps * calls_per_step))
    return statistics.median(samples)


def configure(settings: Settings) -> tuple[TracerProvider, InMemoryMetricReader]:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=1 << 16))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider([reader], views=otel_callbacks.metric_views())
    telemetry.configure(settings, tracer_provider=provider, meter_provider=meter_provider)
    return provider, reader


def batch_step(trainer: Trainer) -> Callable[[], None]:
    def step() -> None:
        trainer.run_callbacks("on_train_batch_start")
        trainer.run_callbacks("on_train_batch_end")

    return step


EPOCH_BATCHES = 1000


def training_step(trainer: Trainer) -> Callable[[], None]:
    """One training step as Ultralytics fires it, with an epoch boundary every 1000 batches."""
    batches = itertools.count()

    def step() -> None:
        if not next(batches) % EPOCH_BATCHES:
            trainer.run_callbacks("on_train_epoch_start")
        trainer.run_callbacks("on_train_batch_start")
        trainer.run_callbacks("on_train_batch_end")

    return step


def per_step_repeats(
    settings: Settings, steps: int, repeats: int, collect: bool = True
) -> tuple[list[float], list[float]]:
    """ns per training step of each repeat, plain and instrumented (one user callback per event,
    measured alternately); with ``collect``, each repeat ends with a metric collection."""
    events = ("on_train_epoch_start", *BATCH)
    plain_trainer = Trainer(defaultdict(list, {event: [user_callback] for event in events}))
    provider, reader = configure(settings)
    trainer = Trainer(otel_callbacks.CallbackDict({event: [user_callback] for event in events}))
    trainer.run_callbacks("on_pretrain_routine_start")  # a run, with its span budget
    plain, instrumented = [], []
    for _ in range(repeats):
        plain.append(per_call_ns(training_step(plain_trainer), 1, steps, 1))
        collector = reader.collect if collect else lambda: None
        instrumented.append(per_call_ns(training_step(trainer), 1, steps, 1, collector))
    telemetry.shutdown()
    provider.shutdown()
    return plain, instrumented


def installed_repeats(steps: int, repeats: int) -> tuple[list[float], list[float]]:
    """ns per training step of each repeat in the configuration ``install()`` gives a user: Ultralytics'
    default hooks (a no-op first in each list) plus one user callback, telemetry to the embedded file
    (each repeat ends with a flush of both signals to it), against Ultralytics' own default dict."""
    from ultralytics.utils.callbacks import base

    events = ("on_train_epoch_start", *BATCH)
    plain_callbacks = base.get_default_callbacks()
    for event in events:
        plain_callbacks[event].append(user_callback)
    plain_trainer = Trainer(plain_callbacks)
    with tempfile.TemporaryDirectory() as directory:
        saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("OTEL_")}
        try:
            tel = telemetry.configure(Settings(summary=False, output_dir=Path(directory)))
            callbacks = otel_callbacks.get_default_callbacks()
            for event in events:
                callbacks[event].append(user_callback)
            trainer = Trainer(callbacks)
            trainer.run_callbacks("on_pretrain_routine_start")
            plain, instrumented = [], []
            for _ in range(repeats):
                plain.append(per_call_ns(training_step(plain_trainer), 1, steps, 1))
                flush = functools.partial(tel.force_flush, 30)
                instrumented.append(per_call_ns(training_step(trainer), 1, steps, 1, flush))
        finally:
            telemetry.shutdown()
            os.environ.update(saved)
    return plain, instrumented


def per_step_over_plain(
    settings: Settings, steps: int, repeats: int, collect: bool = True
) -> tuple[float, float]:
    """The medians of :func:`per_step_repeats`."""
    plain, instrumented = per_step_repeats(settings, steps, repeats, collect)
    return statistics.median(plain), statistics.median(instrumented)


def headline(steps: int, repeats: int) -> list[str]:
    """The per-step figure with the default settings, and what it is made of."""
    plain_repeats, instrumented_repeats = per_step_repeats(Settings(summary=False), steps, repeats)
    plain, instrumented = statistics.median(plain_repeats), statistics.median(instrumented_repeats)
    best_plain, best = min(plain_repeats), min(instrumented_repeats)  # the least disturbed repeats
    unsampled = Settings(summary=False, batch_spans_first=0, batch_spans_every=0)
    plain_u, instrumented_u = per_step_over_plain(unsampled, steps, repeats)
    plain_n, instrumented_n = per_step_over_plain(unsampled, steps, repeats, collect=False)
    over, over_u, over_n = instrumented - plain, instrumented_u - plain_u, instrumented_n - plain_n
    defaults = Settings()
    plain_i, instrumented_i = map(statistics.median, installed_repeats(steps, repeats))
    return [
        f"per training step as install() sets it up (Ultralytics' no-op default hook + 1 callback per event, "
        f"the embedded file): {instrumented_i - plain_i:.0f} ns over Ultralytics' own loop; "
        f"plain {plain_i:.0f} ns, instrumented {instrumented_i:.0f} ns, "
        f"ratio {instrumented_i / plain_i:.1f}x",
        f"per training step, 1 callback per event, in-memory reader: {over:.0f} ns over the plain loop "
        f"(goal <= 3000 ns); "
        f"plain {plain:.0f} ns, instrumented {instrumented:.0f} ns, ratio {instrumented / plain:.1f}x",
        f"  fastest repeat of each (the least disturbed): {best - best_plain:.0f} ns over the plain loop; "
        f"plain {best_plain:.0f} ns, instrumented {best:.0f} ns, ratio {best / best_plain:.1f}x",
        f"  of which: the unsampled path {over_n:.0f} ns, the metric collection {over_u - over_n:.0f} ns, "
        f"the sampled batches and their spans {over - over_u:.0f} ns (the first {defaults.batch_spans_first} "
        f"and every {defaults.batch_spans_every}th batch of each {EPOCH_BATCHES}-batch epoch)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    steps, repeats = args.steps, args.repeats
    rows: list[tuple[str, float]] = []

    def bare_step() -> None:
        user_callback(trainer)
        user_callback(trainer)

    trainer = Trainer(defaultdict(list, {event: [user_callback] for event in BATCH}))
    rows.append(("bare call", per_call_ns(bare_step, 2, steps, repeats)))
    rows.append(
        ("ultralytics run_callbacks loop (plain)", per_call_ns(batch_step(trainer), 2, steps, repeats))
    )

    provider, _ = configure(Settings(summary=False))
    tracer = provider.get_tracer("reference")
    attributes = {  # what a callback span carries (the telemetry contract)
        "ultralytics.event": "on_train_epoch_end",
        "code.function.name": "__main__.user_callback",
        "ultralytics.integration": "user",
        "ultralytics.mode": "train",
        "ultralytics.epoch": 0,
    }
    reference = per_call_ns(lambda: tracer.start_span("on_train_epoch_end").end(), 1, steps, repeats)
    rows.append(("reference: SDK start_span + end", reference))
    with_attributes = per_call_ns(
        lambda: tracer.start_span("on_train_epoch_end", attributes=attributes).end(), 1, steps, repeats
    )
    rows.append(("reference: same, with the 5 attributes", with_attributes))
    telemetry.shutdown()
    provider.shutdown()

    os.environ["OTEL_CALLBACKS_ENABLED"] = "false"  # read when callbacks are registered
    disabled = Trainer(otel_callbacks.CallbackDict({event: [user_callback] for event in BATCH}))
    del os.environ["OTEL_CALLBACKS_ENABLED"]
    rows.append(
        ("disabled (OTEL_CALLBACKS_ENABLED=false)", per_call_ns(batch_step(disabled), 2, steps, repeats))
    )

    modes = [
        (
            "instrumented per-batch, unsampled, 1 cb/event",
            BATCH,
            1,
            Settings(batch_spans_first=0, batch_spans_every=0),
        ),
        (
            "instrumented per-batch, unsampled, 8 cb/event",
            BATCH,
            8,
            Settings(batch_spans_first=0, batch_spans_every=0),
        ),
        (
            "instrumented per-batch, sampled (spans)",
            BATCH,
            1,
            Settings(batch_spans_first=1 << 62, max_spans=1 << 62),
        ),
        ("instrumented non-batch event (span)", ("on_train_epoch_end",), 1, Settings(max_spans=1 << 62)),
        (
            "  the same, every span made by the SDK",
            ("on_train_epoch_end",),
            1,
            Settings(max_spans=1 << 62, direct_spans=False),
        ),
        (
            "instrumented per-batch, every call slow",
            BATCH,
            1,
            Settings(batch_spans_first=0, batch_spans_every=0, slow_threshold=1e-9),
        ),
    ]
    for label, events, per_event, settings in modes:
        provider, reader = configure(Settings(**{**settings.__dict__, "summary": False}))
        callbacks = [functools.partial(user_callback) for _ in range(per_event)]  # distinct callbacks
        engine = Trainer(otel_callbacks.CallbackDict({event: callbacks for event in events}))
        for event in OPENING:  # inside a training's epoch, as Ultralytics fires batches
            engine.callbacks[event].append(user_callback)
            engine.run_callbacks(event)

        def step(engine: Trainer = engine, events: tuple[str, ...] = events) -> None:
            for event in events:
                engine.run_callbacks(event)

        step()  # bind outside the timed loop
        rows.append((label, per_call_ns(step, len(events) * per_event, steps, repeats, reader.collect)))
        telemetry.shutdown()
        provider.shutdown()

    lines = headline(steps, repeats)
    print(f"python {sys.version.split()[0]}, {steps} steps x {repeats} repeats")
    print("\n".join(lines))
    print()
    bare, plain = rows[0][1], rows[1][1]
    print("median ns per callback call")
    print(f"{'mode':42} {'ns/call':>9} {'x bare':>8} {'over plain loop ns':>19}")
    for label, ns in rows:
        print(f"{label:42} {ns:9.0f} {ns / bare:8.1f} {ns - plain:19.0f}")
    by_label = dict(rows)
    one = by_label["instrumented per-batch, unsampled, 1 cb/event"] - plain
    eight = by_label["instrumented per-batch, unsampled, 8 cb/event"] - plain
    marginal = (eight * 16 - one * 2) / 14
    per_batch = (one - marginal) * 2
    span_call = by_label["instrumented non-batch event (span)"]
    sdk_span_call = by_label["  the same, every span made by the SDK"]
    disabled = by_label["disabled (OTEL_CALLBACKS_ENABLED=false)"]
    goals = [
        ("unsampled per-batch call, over the plain loop", f"{marginal:.0f} ns", "<= 1000 ns"),
        ("  + phase tracking, per batch (its 2 firings)", f"{per_batch:.0f} ns", ""),
        ("call with its span / SDK start_span+end", f"{span_call / reference:.2f}x", "<= 1.5x"),
        ("  the same with OTEL_CALLBACKS_DIRECT_SPANS=false", f"{sdk_span_call / reference:.2f}x", ""),
        ("call with its span / SDK span with the same attributes", f"{span_call / with_attributes:.2f}x", ""),
        ("  floor: SDK span with the same attributes / bare", f"{with_attributes / reference:.2f}x", ""),
        ("disabled / plain loop (disabled = the bare function)", f"{disabled / plain:.2f}x", "<= 2x"),
    ]
    print()
    print(f"{'goal':56} {'measured':>12} {'target':>11}")
    for label, measured, target in goals:
        print(f"{label:56} {measured:>12} {target:>11}")


if __name__ == "__main__":
    main()
