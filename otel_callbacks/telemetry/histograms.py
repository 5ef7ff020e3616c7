"""Duration histograms off the hot path: buffered per attribute set, merged into the SDK at collection.

The SDK's ``Histogram.record`` costs about 10 us a call, too much for callbacks that fire on every
batch. Here the training thread only appends an integer to a list. When a reader collects (push or
pull, every reader triggers it through an observable instrument's callback), the buffered values
are bucketed in one pass and merged into the SDK's own histogram aggregations, which the view from
:func:`~.views.metric_views` registers as they are created, so temporality, export and every reader
stay the SDK's. On a meter provider without that view (one the application built), values are
replayed with ``record``: still exact, just slower.
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from itertools import compress, repeat
from operator import ge, lt
from typing import Any

from opentelemetry import metrics
from opentelemetry.context import Context

from .. import semconv
from .views import aggregations

_Key = frozenset  # frozenset(attributes.items())
# Measurements carry no span context: exemplar sampling would draw from the global ``random``
# module, which Ultralytics seeds for reproducible training (see randomness.py). Not empty: the SDK
# takes an empty (falsy) context for none given and uses the current one, span and all.
NO_CONTEXT = Context({"otel_callbacks.no_span": True})


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
    """Bucket counts and per-bucket sums of observations in integer ns, bucketed exactly as the SDK
    does: fixed size however many values it holds, and enough to replay them through ``record``
    with the same counts, sum, min and max (see :meth:`replay_ns`)."""

    __slots__ = ("counts", "first_ns", "max_ns", "min_ns", "sums")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.sums = [0] * size
        self.min_ns: int | None = None
        self.max_ns = 0
        self.first_ns = time.time_ns()  # a bound on when its first value was measured (wall clock)

    @property
    def count(self) -> int:
        return sum(self.counts)

    @property
    def sum(self) -> float:
        return sum(self.sums) / 1e9

    @property
    def min(self) -> float:
        return math.inf if self.min_ns is None else self.min_ns / 1e9

    @property
    def max(self) -> float:
        return -math.inf if self.min_ns is None else self.max_ns / 1e9

    def add(self, values_ns: Sequence[int], thresholds: tuple[int, ...]) -> None:
        least, most = min(values_ns), max(values_ns)
        self.min_ns = least if self.min_ns is None else min(self.min_ns, least)
        self.max_ns = max(self.max_ns, most)
        index = bisect_right(thresholds, values_ns[len(values_ns) // 2])  # likely the busiest bucket
        below = thresholds[index - 1] if index else least
        above = thresholds[index] if index < len(thresholds) else math.inf
        # Only the values outside that bucket are sorted: two passes in C instead of a sort of all.
        outside: list[int] = []
        if least < below:
            outside += compress(values_ns, map(lt, values_ns, repeat(below)))
        if most >= above:
            outside += compress(values_ns, map(ge, values_ns, repeat(above)))
        self.counts[index] += len(values_ns) - len(outside)
        self.sums[index] += sum(values_ns) - sum(outside)
        if not outside:
            return
        outside.sort()
        low = 0
        for index, threshold in enumerate((*thresholds, math.inf)):
            high = bisect_left(outside, threshold, low)
            if high > low:
                self.counts[index] += high - low
                self.sums[index] += sum(outside[low:high])
                low = high

    def take_min(self, thresholds: tuple[int, ...]) -> float:
        """Take out one observation equal to the minimum and return it in seconds."""
        index = bisect_right(thresholds, self.min_ns)
        self.counts[index] -= 1
        self.sums[index] -= self.min_ns
        return self.min_ns / 1e9

    def replay_ns(self, thresholds: tuple[int, ...]) -> Iterator[int]:
        """Integers whose buckets, sum, min and max are exactly this batch's.

        The extremes themselves, then each bucket's remaining sum spread over its remaining count as
        evenly as integers allow: every such value lies between two values of that bucket.
        """
        counts, sums = list(self.counts), list(self.sums)
        extremes = (self.min_ns, self.max_ns) if self.count > 1 else (self.min_ns,) if self.count else ()
        for ns in extremes:
            index = bisect_right(thresholds, ns)
            counts[index] -= 1
            sums[index] -= ns
            yield ns
        for count, total in zip(counts, sums, strict=True):
            if count:
                quotient, remainder = divmod(total, count)
                yield from repeat(quotient + 1, remainder)
                yield from repeat(quotient, count - remainder)


_MERGED_FIELDS = ("_lock", "_value", "_sum", "_min", "_max", "_record_min_max", "_get_empty_bucket_counts")


def _can_merge(aggregation: Any) -> bool:
    """Whether an SDK aggregation has the fields ``_merge`` writes (private: checked, not assumed)."""
    return all(hasattr(aggregation, name) for name in _MERGED_FIELDS)


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


class _Source:
    """One list the hot path appends to, what sees its values when drained, and since when (wall
    clock) its next value can have been measured."""

    __slots__ = ("key", "since", "sink", "values")

    def __init__(self, key: _Key, values: list[int], sink: Any) -> None:
        self.key, self.values, self.sink = key, values, sink
        self.since = time.time_ns()


class BufferedHistogram:
    """A duration histogram fed in nanoseconds by the hot path through plain lists.

    Each list belongs to one attribute set and, optionally, to a *sink* (a run's per-callback
    statistics for the timing table) that sees the same values when they are drained. Memory stays
    bounded without a reader: a list that reaches ``limit`` values is folded into fixed-size counts.
    """

    def __init__(
        self, histogram: metrics.Histogram, mergeable: bool | None = None, limit: int = 65_536
    ) -> None:
        self._histogram = histogram
        self._thresholds = _ns_thresholds(semconv.DURATION_BUCKETS)
        self._sources: dict[int, _Source] = {}  # by id(list)
        self._pending: dict[_Key, _Batch] = {}
        # Reentrant: a sink or an allocation inside a drain can run the garbage collector, whose
        # weakref callbacks end a collected engine's run and release its lists on this thread.
        self._lock = threading.RLock()
        self.limit = limit
        """Values a list may hold before the hot path calls :meth:`fold`."""
        self.mergeable = mergeable
        """Whether the provider has our view; None: unknown until the first delivery tells."""

    def buffer(self, attributes: dict[str, Any], sink: Any = None) -> list[int]:
        """A new list that receives durations (ns) for this attribute set: append, nothing else.

        ``sink.add(values)`` is called with every value drained from it; :meth:`release` drains
        it one last time and forgets it.
        """
        values: list[int] = []
        with self._lock:
            self._sources[id(values)] = _Source(frozenset(attributes.items()), values, sink)
        return values

    def _drain(self, source: _Source) -> None:
        """Move a list's values into its pending batch (and its sink). Holds ``self._lock``."""
        values_list = source.values
        n = len(values_list)
        since, source.since = source.since, time.time_ns()
        if not n:
            return
        values = values_list[:n]
        del values_list[:n]  # appends made meanwhile went to the end and stay for next time
        batch = self._pending.get(source.key)
        if batch is None:
            batch = self._pending[source.key] = _Batch(len(self._thresholds) + 1)
        batch.first_ns = min(batch.first_ns, since)
        batch.add(values, self._thresholds)
        if source.sink is not None:
            source.sink.add(values)

    def fold(self, values_list: list[int]) -> None:
        """Bound memory when no reader collects for a long time (called from the hot path)."""
        with self._lock:
            source = self._sources.get(id(values_list))
            if source is not None:
                self._drain(source)

    def release(self, values_list: list[int]) -> None:
        """Drain a list one last time (its sink sees everything) and stop tracking it."""
        with self._lock:
            source = self._sources.pop(id(values_list), None)
            if source is not None:
                self._drain(source)

    def flush(self) -> None:
        """Deliver everything buffered to the SDK; runs inside a reader's collection."""
        with self._lock:
            for source in list(self._sources.values()):
                self._drain(source)
            pending, self._pending = self._pending, {}
        for key, batch in pending.items():
            self._deliver(key, batch)

    def _deliver(self, key: _Key, batch: _Batch) -> None:
        if self.mergeable is False:
            self._replay(key, batch)
            return
        # One value through the SDK, so that every reader has an aggregation for the key (a delta
        # reader drops them at each collection); the rest is merged into what exists then.
        known = {id(a) for a in self._targets(key)}
        self._histogram.record(batch.take_min(self._thresholds), dict(key), context=NO_CONTEXT)
        targets = self._targets(key)
        self.mergeable = bool(targets) and all(map(_can_merge, targets))
        if not self.mergeable:
            self._replay(key, batch)
            return
        for aggregation in targets:
            if id(aggregation) not in known:
                _start_at(aggregation, batch.first_ns)
            if batch.count:
                _merge(aggregation, batch)

    def _replay(self, key: _Key, batch: _Batch) -> None:
        """A provider without our view only has ``record``: one SDK call per observation."""
        record, attributes = self._histogram.record, dict(key)
        for ns in batch.replay_ns(self._thresholds):
            record(ns / 1e9, attributes, context=NO_CONTEXT)

    def _targets(self, key: _Key) -> list[Any]:
        return aggregations(self._histogram, key)


def _start_at(aggregation: Any, first_ns: int) -> None:
    """Give an aggregation that was just created for buffered values the start time the SDK's
    ``record`` would have given it: the first of those values, or the previous collection of a
    delta reader when that came later (``min``: the SDK set the latter or the present moment)."""
    start = getattr(aggregation, "_start_time_unix_nano", None)
    if isinstance(start, int) and first_ns < start:
        with aggregation._lock:
            aggregation._start_time_unix_nano = first_ns
            if getattr(aggregation, "_previous_collection_start_nano", None) == start:
                aggregation._previous_collection_start_nano = first_ns


def duration_histogram(meter: metrics.Meter, name: str, description: str) -> metrics.Histogram:
    """A seconds histogram with the contract's buckets as advice. The advice is an API of 1.30 and
    later; before, only a view sets buckets (``metric_views()``, on every provider built here)."""
    try:
        return meter.create_histogram(
            name,
            unit="s",
            description=description,
            explicit_bucket_boundaries_advisory=semconv.DURATION_BUCKETS,
        )
    except TypeError:  # opentelemetry-api < 1.30
        return meter.create_histogram(name, unit="s", description=description)
