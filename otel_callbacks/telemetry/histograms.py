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

import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.context import Context

from .. import semconv
from .buckets import Batch, ns_thresholds
from .views import aggregations

_Key = frozenset  # frozenset(attributes.items())
# Measurements carry no span context: exemplar sampling would draw from the global ``random``
# module, which Ultralytics seeds for reproducible training (see randomness.py). Not empty: the SDK
# takes an empty (falsy) context for none given and uses the current one, span and all.
NO_CONTEXT = Context({"otel_callbacks.no_span": True})


_MERGED_FIELDS = ("_lock", "_value", "_sum", "_min", "_max", "_record_min_max", "_get_empty_bucket_counts")


def _can_merge(aggregation: Any) -> bool:
    """Whether an SDK aggregation has the fields ``_merge`` writes (private: checked, not assumed)."""
    return all(hasattr(aggregation, name) for name in _MERGED_FIELDS)


def _merge(aggregation: Any, batch: Batch) -> None:
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

    __slots__ = ("key", "since", "sink", "skip", "values")

    def __init__(self, key: _Key, values: list[int], sink: Any) -> None:
        self.key, self.values, self.sink = key, values, sink
        self.skip = 0  # leading values that an earlier sink has seen already (hand_over)
        self.since = time.time_ns()


class BufferedHistogram:
    """A duration histogram fed in nanoseconds by the hot path through plain lists.

    Each list belongs to one attribute set and, optionally, to a *sink* (a run's per-callback
    statistics for the timing table) that sees the same values when they are drained. Memory stays
    bounded without a reader: a list that reaches ``limit`` values is folded into fixed-size counts.
    """

    def __init__(
        self,
        histogram: metrics.Histogram,
        mergeable: bool | None = None,
        limit: int = 65_536,
        exemplars: int = 0,
    ) -> None:
        self._histogram = histogram
        self._thresholds = ns_thresholds(semconv.DURATION_BUCKETS)
        self._sources: dict[int, _Source] = {}  # by id(list)
        self._pending: dict[_Key, Batch] = {}
        # Reentrant: a sink or an allocation inside a drain can run the garbage collector, whose
        # weakref callbacks end a collected engine's run and release its lists on this thread.
        self._lock = threading.RLock()
        # Bumped where values or a list leave for a sink (a drain, a redirect to another sink):
        # :meth:`restart` needs nothing else to know that its handles' sinks still hold.
        self.version = 0
        self.limit = limit
        """Values a list may hold before the hot path calls :meth:`fold`."""
        self.mergeable = mergeable
        """Whether the provider has our view; None: unknown until the first delivery tells."""
        self._exemplars: dict[_Key, deque[tuple[int, int, Any]]] = {}
        self._exemplars_kept = exemplars  # per attribute set between two collections (0: none)

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
        self.version += 1
        values = values_list[:n]
        del values_list[:n]  # appends made meanwhile went to the end and stay for next time
        batch = self._pending.get(source.key)
        if batch is None:
            batch = self._pending[source.key] = Batch(len(self._thresholds) + 1)
        batch.first_ns = min(batch.first_ns, since)
        batch.add(values, self._thresholds)
        skip, source.skip = source.skip, 0
        if source.sink is not None and n > skip:
            source.sink.add(values[skip:] if skip else values)

    def exemplar(self, values_list: list[int], value_ns: int, span_context: Any) -> None:
        """Keep a value just appended to ``values_list`` that has a span (a slow, failed or sampled
        call) as an exemplar: offered to the SDK's aggregation with the list's values at the next
        collection, the latest few per attribute set. Merged values only: a provider without our
        view gets none."""
        if not self._exemplars_kept or self.mergeable is False or not span_context.trace_flags.sampled:
            return
        with self._lock:
            source = self._sources.get(id(values_list))
            if source is not None:
                kept = self._exemplars.get(source.key)
                if kept is None:
                    kept = self._exemplars[source.key] = deque(maxlen=self._exemplars_kept)
                kept.append((value_ns, time.time_ns(), span_context))

    def fold(self, values_list: list[int]) -> None:
        """Bound memory when no reader collects for a long time (called from the hot path)."""
        with self._lock:
            source = self._sources.get(id(values_list))
            if source is not None:
                self._drain(source)

    def hand_over(self, values_lists: Iterable[list[int]], sink: Any) -> None:
        """Give each list's values so far to its sink now (a run that ends: its table) and those
        appended from now on to ``sink`` (the engine's next run, or None), so one list serves one
        engine's runs one after another; the histogram gets every value at the next drain, as ever."""
        self.redirect((values_list, sink) for values_list in values_lists)

    def redirect(self, pairs: Iterable[tuple[list[int], Any]]) -> int:
        """:meth:`hand_over` with a sink of its own for each list. A list whose sink stays the same
        gives it nothing now: what it holds so far is no longer that sink's. Returns the version as
        of then (:meth:`restart`)."""
        with self._lock:
            for values_list, sink in pairs:
                source = self._sources.get(id(values_list))
                if source is None:
                    continue
                n = len(values_list)
                if source.sink is not sink:
                    self.version += 1
                    if source.sink is not None and n > source.skip:
                        source.sink.add(values_list[source.skip : n])
                source.skip, source.sink = n, sink
            return self.version

    def sources(self, values_lists: Iterable[list[int]]) -> list[Any]:
        """Handles on lists, for :meth:`restart`."""
        with self._lock:
            return [self._sources[id(values_list)] for values_list in values_lists]

    def restart(self, sources: list[Any], version: int) -> bool:
        """:meth:`redirect` to the same sinks, kept short (once per predict run), on handles from
        :meth:`sources`: what each list holds so far is no longer its sink's. False, and nothing
        done, where anything was drained or redirected since ``version`` was read."""
        with self._lock:
            if version != self.version:
                return False
            for source in sources:
                source.skip = len(source.values)
            return True

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
            exemplars, self._exemplars = self._exemplars, {}
        for key, batch in pending.items():
            self._deliver(key, batch, exemplars.get(key, ()))

    def _deliver(self, key: _Key, batch: Batch, exemplars: Iterable[tuple[int, int, Any]] = ()) -> None:
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
            _offer(aggregation, dict(key), exemplars)

    def _replay(self, key: _Key, batch: Batch) -> None:
        """A provider without our view only has ``record``: one SDK call per observation."""
        record, attributes = self._histogram.record, dict(key)
        for ns in batch.replay_ns(self._thresholds):
            record(ns / 1e9, attributes, context=NO_CONTEXT)

    def _targets(self, key: _Key) -> list[Any]:
        return aggregations(self._histogram, key)


def _offer(aggregation: Any, attributes: dict[str, Any], exemplars: Iterable[tuple[int, int, Any]]) -> None:
    """Offer exemplars to an SDK aggregation's reservoir, as its ``aggregate`` does a measurement's."""
    reservoir = getattr(aggregation, "_reservoir", None)
    if reservoir is None:
        return
    for value_ns, time_ns, span_context in exemplars:
        context = trace.set_span_in_context(trace.NonRecordingSpan(span_context))
        reservoir.offer(value_ns / 1e9, time_ns, attributes, context)


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


def exemplars_on(meter_provider: Any) -> bool:
    """Whether a meter provider samples exemplars at all (its filter, ``OTEL_METRICS_EXEMPLAR_FILTER``,
    is not ``always_off``; SDKs before exemplars have none)."""
    exemplar_filter = getattr(getattr(meter_provider, "_sdk_config", None), "exemplar_filter", None)
    return exemplar_filter is not None and type(exemplar_filter).__name__ != "AlwaysOffExemplarFilter"


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
