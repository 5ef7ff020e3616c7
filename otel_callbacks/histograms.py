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
from opentelemetry.context import Context
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

from . import semconv

# Values buffered for one attribute set before the hot path folds them into a pending batch.
BUFFER_LIMIT = 65_536

_Key = frozenset  # frozenset(attributes.items())
# Measurements carry no span context: exemplar sampling would draw from the global ``random``
# module, which Ultralytics seeds for reproducible training (see randomness.py).
NO_CONTEXT = Context()

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
    """Bucket counts, sum, min and max of observations, bucketed exactly as the SDK does; the
    values themselves too (in seconds) where they may have to be replayed one by one."""

    __slots__ = ("counts", "max", "min_ns", "sum", "values")

    def __init__(self, size: int, keep_values: bool) -> None:
        self.counts = [0] * size
        self.sum = 0.0
        self.min_ns: int | None = None
        self.max = -math.inf
        self.values: list[float] | None = [] if keep_values else None

    @property
    def count(self) -> int:
        return sum(self.counts)

    @property
    def min(self) -> float:
        return math.inf if self.min_ns is None else self.min_ns / 1e9

    def add(self, values_ns: Sequence[int], thresholds: tuple[int, ...]) -> None:
        counts = self.counts
        for index, count in Counter(map(partial(bisect_right, thresholds), values_ns)).items():
            counts[index] += count
        self.sum += sum(values_ns) / 1e9
        low = min(values_ns)
        self.min_ns = low if self.min_ns is None else min(self.min_ns, low)
        self.max = max(self.max, max(values_ns) / 1e9)
        if self.values is not None:
            self.values.extend(ns / 1e9 for ns in values_ns)

    def remove_min(self, thresholds: tuple[int, ...]) -> None:
        """Take out one observation equal to the minimum (it was recorded through the SDK)."""
        self.counts[bisect_right(thresholds, self.min_ns)] -= 1
        self.sum -= self.min
        if self.values is not None:
            self.values.remove(self.min)


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
    """A duration histogram fed in nanoseconds by the hot path through plain lists.

    Each list belongs to one attribute set and, optionally, to a *sink* (a run's per-callback
    statistics for the timing table) that sees the same values when they are drained.
    """

    def __init__(self, histogram: metrics.Histogram, mergeable: bool | None = None) -> None:
        self._histogram = histogram
        self._thresholds = _ns_thresholds(semconv.DURATION_BUCKETS)
        self._buffers: dict[int, tuple[_Key, list[int], Any]] = {}  # id(list) -> key, list, sink
        self._pending: dict[_Key, _Batch] = {}
        self._lock = threading.Lock()
        self.mergeable = mergeable
        """Whether the provider has our view; None: unknown until the first delivery tells."""

    def _new_batch(self) -> _Batch:
        return _Batch(len(self._thresholds) + 1, keep_values=self.mergeable is not True)

    def buffer(self, attributes: dict[str, Any], sink: Any = None) -> list[int]:
        """A new list that receives durations (ns) for this attribute set: append, nothing else.

        ``sink.add(values)`` is called with every value drained from it; :meth:`release` drains
        it one last time and forgets it.
        """
        values: list[int] = []
        with self._lock:
            self._buffers[id(values)] = (frozenset(attributes.items()), values, sink)
        return values

    def _drain(self, key: _Key, values_list: list[int], sink: Any) -> None:
        """Move a list's values into its pending batch (and its sink). Holds ``self._lock``."""
        n = len(values_list)
        if not n:
            return
        values = values_list[:n]
        del values_list[:n]  # appends made meanwhile went to the end and stay for next time
        if sink is not None:
            sink.add(values)
        batch = self._pending.get(key)
        if batch is None:
            batch = self._pending[key] = self._new_batch()
        batch.add(values, self._thresholds)

    def fold(self, values_list: list[int]) -> None:
        """Bound memory when no reader collects for a long time (called from the hot path)."""
        with self._lock:
            entry = self._buffers.get(id(values_list))
            if entry is not None:
                self._drain(*entry)

    def release(self, values_list: list[int]) -> None:
        """Drain a list one last time (its sink sees everything) and stop tracking it."""
        with self._lock:
            entry = self._buffers.pop(id(values_list), None)
            if entry is not None:
                self._drain(*entry)

    def flush(self) -> None:
        """Deliver everything buffered to the SDK; runs inside a reader's collection."""
        with self._lock:
            for entry in self._buffers.values():
                self._drain(*entry)
            pending, self._pending = self._pending, {}
        for key, batch in pending.items():
            self._deliver(key, batch)

    def _deliver(self, key: _Key, batch: _Batch) -> None:
        if self.mergeable is False:
            self._replay(key, batch)
            return
        targets = self._targets(key)
        if not targets:
            # The SDK creates aggregations on a first measurement (and a delta reader drops them at
            # each collection): give it the batch's minimum, then merge the rest into what it made.
            self._histogram.record(batch.min, dict(key), context=NO_CONTEXT)
            batch.remove_min(self._thresholds)
            targets = self._targets(key)
            self.mergeable = bool(targets)
        if not batch.count:
            return
        if not targets:
            self._replay(key, batch)
        for aggregation in targets:
            _merge(aggregation, batch)

    def _replay(self, key: _Key, batch: _Batch) -> None:
        """A provider without our view only has ``record``: one SDK call per observation."""
        record, attributes = self._histogram.record, dict(key)
        for value in batch.values:
            record(value, attributes, context=NO_CONTEXT)

    def _targets(self, key: _Key) -> list[Any]:
        with _aggregations_lock:
            per_key = _aggregations.get(self._histogram)
            refs = per_key.get(key, []) if per_key else []
            alive = [a for a in (r() for r in refs) if a is not None]
            if per_key is not None and len(alive) != len(refs):
                per_key[key] = [weakref.ref(a) for a in alive]
        return alive
