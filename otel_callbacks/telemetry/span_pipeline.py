"""When a direct span (``spans.py``) is exactly what an SDK tracer would make: the tracer's sampler,
limits and processors, judged once per set of processors."""

from __future__ import annotations

import os
import re
from typing import Any, NamedTuple

from opentelemetry.sdk.trace import SpanProcessor, Tracer
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased

_LOCAL_SAMPLED_ON = "localParentSampled:AlwaysOnSampler"  # in ParentBased's description
# A root sampled by the SDK's default (parent-based, always on for roots) or by always on.
_ROOTS_ALWAYS_ON = re.compile(r"^(AlwaysOnSampler|ParentBased\{root:AlwaysOnSampler,)")


def within(count: int, limit: int | None) -> bool:
    """``count <= limit``, where a limit of None (the SDK's unset) has no bound."""
    return limit is None or count <= limit


class Pipeline(NamedTuple):
    """What a direct span needs of its SDK tracer, judged once per set of processors."""

    processor: Any  # the tracer's multi-span processor
    processors: tuple[Any, ...]  # its processors when judged: a change means judge again
    scope: Any  # the tracer's instrumentation scope
    limits: Any  # the tracer's span limits
    roots_always_on: bool  # whether its sampler records every root (a deferred root is equivalent)


def pipeline_of(tracer: Any) -> Pipeline | None:
    """The SDK parts of ``tracer`` when a direct span is what its ``start_span`` would make of a
    sampled local child; None otherwise."""
    if not isinstance(tracer, Tracer):
        return None
    processor = tracer.span_processor
    processors = getattr(processor, "_span_processors", None)
    limits = getattr(tracer, "_span_limits", None)
    scope = getattr(tracer, "_instrumentation_scope", None)
    if processors is None or limits is None or scope is None:
        return None
    # Always on, or parent-based with an always-on delegate for sampled local parents.
    description = tracer.sampler.get_description()
    parent_based = isinstance(tracer.sampler, ParentBased)
    if not (description == "AlwaysOnSampler" or (parent_based and _LOCAL_SAMPLED_ON in description)):
        return None
    if limits.max_attribute_length is not None or not within(32, limits.max_span_attributes):
        return None
    if os.environ.get("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "").strip().lower() == "true":
        return None
    if not getattr(tracer, "_is_enabled", lambda: True)():
        return None
    quiet = {SpanProcessor, BatchSpanProcessor, SimpleSpanProcessor}
    for each in processors:
        for hook in ("on_start", "_on_ending"):
            owner = next((k for k in type(each).__mro__ if hook in vars(k)), SpanProcessor)
            if owner not in quiet:
                return None
    return Pipeline(processor, processors, scope, limits, bool(_ROOTS_ALWAYS_ON.search(description)))
