"""Slow callbacks: the relative threshold kept per engine, and what a slow invocation reports."""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import set_span_in_context

from .. import semconv
from ..telemetry.histograms import NO_CONTEXT

if TYPE_CHECKING:
    from ..config import Limits
    from .engines import EngineState

logger = logging.getLogger(semconv.LOGGER_NAME)

# The relative threshold never goes below this: microsecond batches would flag scheduling noise.
RELATIVE_FLOOR_NS = 1_000_000


class _HungCalls:
    """Which slow calls are counted already, so that none is counted twice: one the watchdog counted
    while it hung counts nothing at its return, and one whose return counted it (the watchdog may
    still see its frame, finishing) is not counted by the watchdog. A call is (id of its engine's
    state, its start in perf_counter ns); it is kept while its frame runs (``keep_only``), and only
    while a watchdog looks at all."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.claimed: set[tuple[int, int]] = set()
        self.watching = False

    def count(self, call: tuple[int, int]) -> bool:
        """The watchdog's: whether it counts ``call`` now (nobody did yet)."""
        with self.lock:
            self.watching = True
            if call in self.claimed:
                return False
            self.claimed.add(call)
            return True

    def returns(self, call: tuple[int, int]) -> bool:
        """A slow call returns: whether the watchdog counted it already (else its return does)."""
        with self.lock:
            if call in self.claimed:
                return True
            if self.watching:
                self.claimed.add(call)
            return False

    def keep_only(self, running: set[tuple[int, int]]) -> None:
        """Forget the calls whose frames ended (the watchdog's look, over every thread's stack)."""
        with self.lock:
            self.claimed &= running


hung_calls = _HungCalls()
os.register_at_fork(after_in_child=hung_calls.__init__)  # a lock held by the parent's watchdog: a new one


def update_relative_threshold(state: EngineState, fraction: float, limits: Limits) -> None:
    """Per-batch callbacks are also slow above ``fraction`` of the median of the engine's recent
    batch times (the tracker calls this while the window fills, then every quarter window)."""
    times = state.batch_times
    if fraction and len(times) >= limits.batch_min:
        # The median lies between the extremes: when they settle the rule, no sort is needed.
        if int(fraction * max(times)) <= RELATIVE_FLOOR_NS:
            relative = RELATIVE_FLOOR_NS
        elif int(fraction * min(times)) >= state.slow_ns:
            relative = state.slow_ns
        else:
            ordered = sorted(times)
            middle = len(ordered) // 2
            median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
            relative = max(RELATIVE_FLOOR_NS, int(fraction * median))
        state.batch_slow_ns = min(state.slow_ns, relative)


def report_slow(
    tel: Any,
    callback: Any,
    attributes: dict[str, Any],
    state: EngineState,
    elapsed_ns: int,
    span: Any,
    start: int,
) -> None:
    """Count a slow invocation (unless the watchdog did while it hung), mark its span and warn once
    per callback per run."""
    threshold_ns = state.threshold_ns
    duration, threshold = elapsed_ns / 1e9, threshold_ns / 1e9
    if not hung_calls.returns((id(state), start)):
        exemplar = span is not None and tel.exemplars  # (else the SDK would look at the current span)
        tel.slow_counter.add(1, attributes, context=set_span_in_context(span) if exemplar else NO_CONTEXT)
    if span is not None:
        span.set_attribute(semconv.ATTR_SLOW, True)
        span.add_event(semconv.EVENT_SLOW_CALLBACK, {"duration_s": duration, "threshold_s": threshold})
    key = (callback.event, callback.callback_name)
    warned = state.run.warned
    if key not in warned:
        warned.add(key)
        rule = "absolute" if threshold_ns >= state.slow_ns else "fraction of the median batch time"
        logger.warning(
            "otel_callbacks: slow callback %s on %s took %.4f s (threshold %.4f s, %s); "
            "further slow calls of it in this run are counted in %s",
            callback.callback_name,
            callback.event,
            duration,
            threshold,
            rule,
            semconv.METRIC_CALLBACK_SLOW,
        )
