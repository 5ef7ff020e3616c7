"""Median cost per callback call: bare, Ultralytics' plain loop, and each instrumented mode.

Run: ``python benchmarks/hot_path.py`` (add ``--calls N --repeats R``). Prints one table whose
ratios compare against the bare call measured in the same run. Telemetry goes to a real SDK
tracer provider (batch processor, discarding exporter) and a real meter provider, as in training.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import otel_callbacks
from otel_callbacks import Settings, telemetry


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
    run: Callable[[], None], calls: int, repeats: int, collect: Callable[[], object] = lambda: None
) -> float:
    """Median over repeats of the cost per call, each repeat ending with a metric collection,
    so the deferred work (bucketing and merging the buffered durations) is paid inside the timing."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(calls):
            run()
        collect()
        samples.append((time.perf_counter_ns() - start) / calls)
    return statistics.median(samples)


def configure(settings: Settings) -> tuple[TracerProvider, InMemoryMetricReader]:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=1 << 16))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider([reader], views=otel_callbacks.metric_views())
    telemetry.configure(settings, tracer_provider=provider, meter_provider=meter_provider)
    return provider, reader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    calls, repeats = args.calls, args.repeats
    rows: list[tuple[str, float]] = []

    trainer = Trainer(defaultdict(list, {"on_train_batch_end": [user_callback]}))
    rows.append(("bare call", per_call_ns(functools.partial(user_callback, trainer), calls, repeats)))
    rows.append(
        (
            "ultralytics run_callbacks loop (plain)",
            per_call_ns(lambda: trainer.run_callbacks("on_train_batch_end"), calls, repeats),
        )
    )

    modes = [
        (
            "instrumented per-batch, unsampled",
            "on_train_batch_start",
            Settings(batch_spans_first=0, batch_spans_every=0),
        ),
        ("instrumented per-batch, sampled (span)", "on_train_batch_end", Settings(batch_spans_first=1 << 62)),
        ("instrumented non-batch event (span)", "on_train_epoch_end", Settings()),
    ]
    provider, _ = configure(Settings())
    tracer = provider.get_tracer("reference")
    rows.append(
        (
            "reference: SDK start_span + end",
            per_call_ns(lambda: tracer.start_span("on_train_epoch_end").end(), calls, repeats),
        )
    )
    telemetry.shutdown()
    provider.shutdown()
    for label, event, settings in modes:
        provider, reader = configure(settings)
        wrapped = otel_callbacks.instrument(user_callback, event)
        engine = Trainer({})
        wrapped(engine)  # bind outside the timed loop
        call = functools.partial(wrapped, engine)
        rows.append((label, per_call_ns(call, calls, repeats, reader.collect)))
        telemetry.shutdown()
        provider.shutdown()

    bare = rows[0][1]
    print(f"python {sys.version.split()[0]}, {calls} calls x {repeats} repeats, median ns per call")
    print(f"{'mode':42} {'ns/call':>9} {'x bare':>8} {'overhead ns':>12}")
    for label, ns in rows:
        print(f"{label:42} {ns:9.0f} {ns / bare:8.1f} {ns - bare:12.0f}")


if __name__ == "__main__":
    main()
