"""Duration histograms off the hot path: buffered per attribute set, merged into the SDK at collection.

The SDK's ``Histogram.record`` costs about 10 us a call, too much for callbacks that fire on every
batch. Here the training thread only appends an integer to a list. When a reader collects (push or
pull, every reader triggers it through an observable instrument's callback), the buffered values
are bucketed in one pass and merged into the SDK's own histogram aggregations, which the view from
:func:`metric_views` registers as they are created, so temporality, export and every reader stay the
SDK's. On a meter provider without that view (one the application built), values are replayed with
``record``: still exact, just slower.
"""

from __future__ import annotations

import math
import threading
import weakref
from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence
from functools import partial
from typing import Any

from opentelemetry import metrics
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

from . import semconv

# Values buffered for one attribute set before the hot path folds them into a pending batch.
BUFFER_LIMIT = 65_536

_Key = frozenset  # frozenset(attributes.items())

# SDK histogram aggregations created through our view, by instrument and attribute set.
_aggregations: weakref.WeakKeyDictionary[Any, dict[_Key, list[weakref.ref]]] = weakref.WeakKeyDictionary()
_aggregations_lock = threading.Lock()


class MergeableHistogramAggregation(ExplicitBucketHistogramAggregation):
    """The SDK's explicit-bucket aggregation, remembering each aggregation it creates."""

    def _create_aggregation(self, instrument: Any, attributes: Any, *args: Any, **kwargs: Any) -> Any:
        aggregation = super()._create_aggregation(instrument, attributes, *args, **kwargs)
        key = frozenset((attributes or {}).items())
        with _aggregations_lock:
            _aggregations.setdefault(instrument, {}).setdefault(key, []).append(weakref.ref(aggregation))
        return aggregation


def metric_views() -> list[View]:
    """Views that let otel_callbacks merge pre-aggregated durations into a meter provider.

    Pass them to a ``MeterProvider`` you build yourself (``MeterProvider(views=metric_views())``)
    to get the fast path; providers that otel_callbacks builds have them already.
    """
    aggregation = MergeableHistogramAggregation(semconv.DURATION_BUCKETS)
    return [
        View(instrument_name=name, meter_name=semconv.METER_NAME, aggregation=aggregation)
        for name in (semconv.METRIC_CALLBACK_DURATION, semconv.METRIC_PHASE_DURATION)
    ]


def has_metric_views(meter_provider: Any) -> bool | None:
    """Whether a meter provider was built with :func:`metric_views`; None when it can't be told."""
    try:
        views = meter_provider._sdk_config.views
    except AttributeError:
        return None
    return any(isinstance(view._aggregation, MergeableHistogramAggregation) for view in views)


def _ns_thresholds(bounds: Sequence[float]) -> tuple[int, ...]:
    """For each bound b, the least integer ns with ns / 1e9 > b: then bucketing an integer with
    ``bisect_right(thresholds, ns)`` gives exactly the SDK's ``bisect_left(bounds, ns / 1e9)``."""
    thresholds = []
    for bound in bounds:
        ns = math.floor(bound * 1e9)
        while ns / 1e9 > bound:
            ns -= 1
        while ns / 1e9 <= bound:
            ns += 1
        thresholds.append(ns)
    return tuple(thresholds)


class _Batch:
    """Bucket counts, sum, min and max of observations, bucketed exactly as the SDK does."""

    __slots__ = ("counts", "max", "min", "sum")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, values_ns: Sequence[int], thresholds: tuple[int, ...]) -> None:
        if not values_ns:
            return
        counts = self.counts
        for index, count in Counter(map(partial(bisect_right, thresholds), values_ns)).items():
            counts[index] += count
        self.sum += sum(values_ns) / 1e9
        self.min = min(self.min, min(values_ns) / 1e9)
        self.max = max(self.max, max(values_ns) / 1e9)


def _merge(aggregation: Any, batch: _Batch) -> None:
    """Fold a batch into one SDK ``_ExplicitBucketHistogramAggregation`` under its lock."""
    with aggregation._lock:
        if aggregation._value is None:
            aggregation._value = aggregation._get_empty_bucket_counts()
        value = aggregation._value
        for index, count in enumerate(batch.counts):
            value[index] += count
        aggregation._sum += batch.sum
        if aggregation._record_min_max:
            aggregation._min = min(aggregation._min, batch.min)
            aggregation._max = max(aggregation._max, batch.max)


class BufferedHistogram:
    """A duration histogram fed in nanoseconds by the hot path, one list per attribute set."""

    def __init__(self, histogram: metrics.Histogram, mergeable: bool | None = None) -> None:
        self._histogram = histogram
        self._thresholds = _ns_thresholds(semconv.DURATION_BUCKETS)
        self._buffers: dict[_Key, list[int]] = {}
        self._pending: dict[_Key, _Batch] = {}
        self._lock = threading.Lock()
        self.mergeable = mergeable
        """Whether the provider has our view; None: unknown until the first delivery tells."""

    def buffer(self, attributes: dict[str, Any]) -> list[int]:
        """The list that receives durations (ns) for this attribute set: append, nothing else."""
        key = frozenset(attributes.items())
        with self._lock:
            return self._buffers.setdefault(key, [])

    def record(self, attributes: dict[str, Any], elapsed_ns: int) -> None:
        """One observation from outside the hot path (phase durations)."""
        self.buffer(attributes).append(elapsed_ns)

    @staticmethod
    def _take(buffer: list[int], keep: int = 0) -> list[int]:
        n = len(buffer) - keep
        if n <= 0:
            return []
        values = buffer[:n]
        del buffer[:n]  # appends made meanwhile went to the end and stay for next time
        return values

    def fold(self, buffer: list[int], attributes: dict[str, Any]) -> None:
        """Bound memory when no reader collects for a long time (called from the hot path)."""
        key = frozenset(attributes.items())
        if not self.mergeable:
            self._replay(key, self._take(buffer))
            return
        with self._lock:
            # Keep the newest value raw: the next delivery may need one to make the SDK create
            # its aggregation for this attribute set.
            values = self._take(buffer, keep=1)
            batch = self._pending.setdefault(key, _Batch(len(self._thresholds) + 1))
            batch.add(values, self._thresholds)

    def flush(self) -> None:
        """Deliver everything buffered to the SDK; runs inside a reader's collection."""
        with self._lock:
            drained = [
                (key, self._take(buffer), self._pending.pop(key, None))
                for key, buffer in self._buffers.items()
            ]
        for key, values, pending in drained:
            if values:
                self._deliver(key, values, pending)

    def _deliver(self, key: _Key, values: list[int], pending: _Batch | None) -> None:
        if self.mergeable is not False:
            targets = self._targets(key)
            if not targets:
                # The SDK creates aggregations on a first measurement (and a delta reader drops
                # them at each collection): give it one, then merge the rest into what it made.
                self._histogram.record(values[0] / 1e9, dict(key))
                values = values[1:]
                targets = self._targets(key)
                self.mergeable = bool(targets)
            if targets:
                batch = pending or _Batch(len(self._thresholds) + 1)
                batch.add(values, self._thresholds)
                for aggregation in targets:
                    _merge(aggregation, batch)
                return
        self._replay(key, values)

    def _replay(self, key: _Key, values: list[int]) -> None:
        """A provider without our view only has ``record``: exact, one SDK call per value."""
        record, attributes = self._histogram.record, dict(key)
        for ns in values:
            record(ns / 1e9, attributes)

    def _targets(self, key: _Key) -> list[Any]:
        with _aggregations_lock:
            per_key = _aggregations.get(self._histogram)
            refs = per_key.get(key, []) if per_key else []
            alive = [a for a in (r() for r in refs) if a is not None]
            if per_key is not None and len(alive) != len(refs):
                per_key[key] = [weakref.ref(a) for a in alive]
        return alive
