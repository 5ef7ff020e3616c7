"""The view that lets buffered durations merge into the SDK's own histogram aggregations.

Registered on a meter provider (:func:`metric_views`), it remembers every explicit-bucket aggregation
the SDK creates for our duration instruments, by instrument and attribute set, weakly: the SDK
drops them (a delta reader, at each collection) and so may we.
"""

from __future__ import annotations

import threading
import weakref
from fnmatch import fnmatch
from functools import partial
from typing import Any

from opentelemetry.sdk.metrics import AlignedHistogramBucketExemplarReservoir
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

from .. import semconv

# SDK histogram aggregations created through our view, by instrument and attribute set.
_created: weakref.WeakKeyDictionary[Any, dict[frozenset, list[weakref.ref]]] = weakref.WeakKeyDictionary()
_created_lock = threading.Lock()


class MergeableHistogramAggregation(ExplicitBucketHistogramAggregation):
    """The SDK's explicit-bucket aggregation, remembering each aggregation it creates."""

    def _create_aggregation(self, instrument: Any, attributes: Any, *args: Any, **kwargs: Any) -> Any:
        aggregation = super()._create_aggregation(instrument, attributes, *args, **kwargs)
        key = frozenset((attributes or {}).items())
        with _created_lock:
            _created.setdefault(instrument, {}).setdefault(key, []).append(weakref.ref(aggregation))
        return aggregation


def metric_views() -> list[View]:
    """Views that let otel_callbacks merge pre-aggregated durations into a meter provider.

    Pass them to a ``MeterProvider`` you build yourself (``MeterProvider(views=metric_views())``)
    to get the fast path; providers that otel_callbacks builds have them already.
    """
    aggregation = MergeableHistogramAggregation(semconv.DURATION_BUCKETS)
    durations = [
        View(instrument_name=name, meter_name=semconv.METER_NAME, aggregation=aggregation)
        for name in (semconv.METRIC_CALLBACK_DURATION, semconv.METRIC_PHASE_DURATION)
    ]
    latest = View(
        instrument_name=semconv.METRIC_CALLBACK_SLOW,
        meter_name=semconv.METER_NAME,
        exemplar_reservoir_factory=_latest_exemplar,
    )
    return [*durations, latest]


def _latest_exemplar(aggregation_type: Any) -> Any:
    """The slow calls' exemplar: the latest. The SDK's default for a counter samples with the global
    ``random``, which Ultralytics seeds for its augmentations."""
    return partial(AlignedHistogramBucketExemplarReservoir, boundaries=())


def slow_exemplars_safe(meter_provider: Any) -> bool:
    """Whether the slow counter's only view is ours, whose reservoir draws no random (another view
    matching it, a wildcard among them, would get the SDK's default reservoir)."""
    try:
        views = meter_provider._sdk_config.views
    except AttributeError:
        return False
    matching = [v for v in views if fnmatch(semconv.METRIC_CALLBACK_SLOW, v._instrument_name or "*")]
    return len(matching) == 1 and matching[0]._exemplar_reservoir_factory is _latest_exemplar


def has_metric_views(meter_provider: Any) -> bool | None:
    """Whether a meter provider was built with :func:`metric_views`; None when it can't be told."""
    try:
        views = meter_provider._sdk_config.views
    except AttributeError:
        return None
    return any(isinstance(view._aggregation, MergeableHistogramAggregation) for view in views)


def aggregations(instrument: Any, key: frozenset) -> list[Any]:
    """The live aggregations made for one instrument and attribute set (``frozenset(items)``)."""
    with _created_lock:
        per_key = _created.get(instrument)
        refs = per_key.get(key, []) if per_key else []
        alive = [a for a in (r() for r in refs) if a is not None]
        if per_key is not None and len(alive) != len(refs):
            per_key[key] = [weakref.ref(a) for a in alive]
    return alive
