"""Child spans handed finished to the SDK's span processors, without the SDK's per-span machinery.

The SDK's ``start_span`` asks the sampler, builds a mutable span (a lock, attributes validated one
by one, the processors' ``on_start``) and, at ``end``, copies it into the ``ReadableSpan`` that the
processors receive. For the child of a sampled local span the outcome is known in advance when the
tracer is the SDK's with its default parent-based sampler (or always on), internal metrics off, no
attribute length limit, room for 32 attributes, and processors that do nothing when a span starts
or is ending (the batch and simple processors): a recorded, sampled span with its parent's trace
id, flags and trace state.
:class:`SpanStarter` then records such a span itself (:class:`DirectSpan`) and hands those same
processors the same ``ReadableSpan`` at its end, for a fraction of the cost. Roots, and every span
of any other setup, go through the tracer's ``start_span``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from time import time_ns
from types import MappingProxyType
from typing import Any

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import Attributes

from .span_pipeline import Pipeline, pipeline_of, within

logger = logging.getLogger(__name__)

_UNSET = Status(StatusCode.UNSET)
_PLAIN = frozenset({str, int, float, bool})
_STR = frozenset({str})


def _plain(attributes: Mapping[str, Any]) -> bool:
    """Whether the SDK would keep these as they are: non-empty string keys, plain values."""
    return (
        "" not in attributes
        and _STR.issuperset(map(type, attributes))
        and _PLAIN.issuperset(map(type, attributes.values()))
    )


class SpanStarter:
    """``start_span`` for the wrappers and the phase tracker: direct spans where they are
    equivalent, the tracer's own spans otherwise (``direct=False``: always the tracer's)."""

    def __init__(self, tracer: trace.Tracer, direct: bool = True) -> None:
        self.tracer = tracer
        self._pipeline = pipeline_of(tracer) if direct else None

    @property
    def direct(self) -> bool:
        """Whether sampled local children are direct spans (with this tracer's processors now)."""
        return self._pipeline is not None

    def start_span(
        self,
        name: str,
        context: Any = None,
        attributes: Mapping[str, Any] | None = None,
        start_time: int | None = None,
        links: Sequence[Link] = (),
    ) -> trace.Span:
        pipeline = self._pipeline
        if pipeline is not None and not links:  # a span with links (rare) is the SDK's
            pipeline = self._current(pipeline)
            parent = trace.get_current_span(context).get_span_context()
            if pipeline is not None and parent.trace_flags.sampled and not parent.is_remote:
                return DirectSpan(self.tracer, pipeline, name, parent, attributes, start_time)
        return self.tracer.start_span(
            name, context=context, attributes=attributes, start_time=start_time, links=links
        )

    def _current(self, pipeline: Pipeline) -> Pipeline | None:
        """The pipeline, judged again if a processor was added since."""
        if pipeline.processor._span_processors is not pipeline.processors:
            pipeline = self._pipeline = pipeline_of(self.tracer)
        return pipeline

    def defers_roots(self) -> bool:
        """Whether :meth:`start_deferred_root` makes roots (as the pipeline is now)."""
        pipeline = self._pipeline
        # _current's check, inlined (once per predict run, on the caller's thread): rarely true.
        if pipeline is not None and pipeline.processor._span_processors is not pipeline.processors:
            pipeline = self._current(pipeline)  # judged again: a processor was added
        return pipeline is not None and pipeline.roots_always_on

    def start_deferred_root(
        self, name: str, attributes: Mapping[str, Any], start_time: int, keep_after_ns: int
    ) -> DeferredRoot | None:
        """A root whose trace is decided at its end (:class:`DeferredRoot`); None where the tracer's
        sampler decides roots (anything but always on for them) or direct spans are off."""
        if not self.defers_roots():
            return None
        pipeline = self._pipeline
        ids = self.tracer.id_generator
        context = SpanContext(
            ids.generate_trace_id(), ids.generate_span_id(), False, TraceFlags(TraceFlags.SAMPLED)
        )
        return DeferredRoot(
            self.tracer, pipeline, name, None, attributes, start_time, context, keep_after_ns=keep_after_ns
        )


class DirectSpan(trace.Span):
    """A recording span that the processors first see at its end, as the SDK's ``ReadableSpan``.

    Attributes, at the start or later (results, ``error.type``, a user's own), are kept as they
    are when the SDK would keep them (string keys, plain values, within the limit), and otherwise
    cleaned, bounded and counted by the SDK's own ``BoundedAttributes``.
    """

    def __init__(
        self,
        tracer: Any,
        pipeline: Pipeline,
        name: str,
        parent: SpanContext | None,
        attributes: Mapping[str, Any] | None,
        start_time: int | None,
        context: SpanContext | None = None,
    ) -> None:
        self._tracer = tracer
        self._pipeline = pipeline
        self._name = name
        self._parent = parent
        self._context = context or SpanContext(
            parent.trace_id,
            tracer.id_generator.generate_span_id(),
            False,
            parent.trace_flags,
            parent.trace_state,
        )
        self._attributes: Any = dict(attributes) if attributes else {}
        if not _plain(self._attributes):
            self._bounded()  # cleans what the SDK would clean, with its warning
        self._events: Any = ()  # a BoundedList from the first event: the SDK's drops and counts
        self._links: Any = ()
        self._status = _UNSET
        self._start_time = start_time if start_time is not None else time_ns()
        self._end_time: int | None = None

    def _bounded(self) -> BoundedAttributes:
        if not isinstance(self._attributes, BoundedAttributes):
            self._attributes = BoundedAttributes(
                self._pipeline.limits.max_span_attributes, self._attributes, immutable=False
            )
        return self._attributes

    def _ended(self, what: str) -> bool:
        if self._end_time is not None:
            logger.warning("Tried calling %s on an ended span.", what)
            return True
        return False

    @property
    def name(self) -> str:
        return self._name

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end_time is None

    @property
    def attributes(self) -> Attributes:
        return MappingProxyType(self._attributes)

    def _kept_as_they_are(self, attributes: Mapping[str, Any]) -> bool:
        """Added to the plain dict when nothing in them would be cleaned or dropped."""
        plain = self._attributes
        if (
            type(plain) is dict
            and _plain(attributes)
            and within(len(plain) + len(attributes), self._pipeline.limits.max_span_attributes)
        ):
            plain.update(attributes)
            return True
        return False

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self._ended("set_attributes") or self._kept_as_they_are(attributes):
            return
        bounded = self._bounded()
        set_items = getattr(bounded, "_set_items", None)  # what the SDK's set_attributes calls
        if set_items is not None:
            set_items(attributes)
        else:
            for key, value in attributes.items():
                bounded[key] = value

    def set_attribute(self, key: str, value: Any) -> None:
        if not self._ended("set_attribute") and not self._kept_as_they_are({key: value}):
            self._bounded()[key] = value

    def add_event(self, name: str, attributes: Attributes = None, timestamp: int | None = None) -> None:
        if self._ended("add_event"):
            return
        limits = self._pipeline.limits
        if type(self._events) is tuple:
            self._events = BoundedList(limits.max_events)
        bounded = BoundedAttributes(limits.max_event_attributes, attributes, immutable=True)
        self._events.append(Event(name=name, attributes=bounded, timestamp=timestamp))

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        if self._ended("add_link") or not (
            context and (context.is_valid or attributes or context.trace_state)
        ):
            return
        limits = self._pipeline.limits
        if type(self._links) is tuple:
            self._links = BoundedList(limits.max_links)
        bounded = BoundedAttributes(limits.max_link_attributes, attributes, immutable=True)
        self._links.append(Link(context=context, attributes=bounded))

    def update_name(self, name: str) -> None:
        if not self._ended("update_name"):
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """As the SDK: OK is final, UNSET is ignored."""
        if self._ended("set_status") or self._status.status_code is StatusCode.OK:
            return
        if not isinstance(status, Status):
            status = Status(status, description)
        if status.status_code is not StatusCode.UNSET:
            self._status = status

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        SdkSpan.record_exception(self, exception, attributes, timestamp, escaped)  # only add_event

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            logger.warning("Calling end() on an ended span.")
            return
        self._end_time = end_time if end_time is not None else time_ns()
        pipeline = self._pipeline
        pipeline.processor.on_end(
            ReadableSpan(
                self._name,
                self._context,
                self._parent,
                self._tracer.resource,
                self._attributes,
                self._events,
                self._links,
                SpanKind.INTERNAL,
                None,
                self._status,
                self._start_time,
                self._end_time,
                pipeline.scope,
            )
        )

    def __repr__(self) -> str:
        return f'{type(self).__name__}(name="{self._name}", context={self._context})'


class DeferredRoot(DirectSpan):
    """A run's root made without the SDK, whose trace is kept only if the run turns out worth it:
    its ids exist from the start, so the spans made for a slow or failed call are its children, and
    it reaches the processors at its end only if :meth:`keep` was called, its status is ERROR or it
    lasted ``keep_after_ns``. A root is what the SDK would make with an always-on root sampler."""

    def __init__(self, *args: Any, keep_after_ns: int = 0) -> None:
        super().__init__(*args)
        self.kept = False
        self._keep_after_ns = keep_after_ns

    def keep(self) -> None:
        self.kept = True

    def end(self, end_time: int | None = None) -> None:
        end_time = end_time if end_time is not None else time_ns()
        failed = self._status.status_code is StatusCode.ERROR
        if self.kept or failed or end_time - self._start_time >= self._keep_after_ns:
            super().end(end_time)
        elif not self._ended("end"):
            self._end_time = end_time
