"""The watchdog: one thread per process, which sees a callback hang while it hangs.

The wrapper keeps each call's start in a local of its frame, so the hot path does nothing for the
watchdog: each interval it reads the frames of every thread (``sys._current_frames``), finds the
innermost instrumented call of each that is inside its callback (the frame's line is the wrapper's
call of it) and, once that call has run past its slow threshold, counts it slow then (in
``ultralytics.callback.slow``; its span and ``slow_callback`` event still come when it returns, and
its return counts nothing more: ``slow.hung_calls``), warns once per callback and run, and puts a
``stall`` span into the run's trace: from the call's start to that moment, in the call's phase,
naming what hangs, with every thread's stack as ``faulthandler`` prints them. It does so again each
time the call has run twice as long as at the last one, at most ``Limits.stall_spans`` times per
call and ``Limits.stall_spans_per_run`` per run.

It also looks at each engine with no callback running: a batch, a wait for the dataloader or a phase
with no hook that has run far beyond what is expected of it (``engine_stalls.py``) gets stall spans
the same way, and a warning once per run.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterable
from types import CodeType, FrameType
from typing import Any

from .. import semconv as sc
from ..telemetry.histograms import NO_CONTEXT
from .clock import perf_ns, wall
from .engine_stalls import activity, bound_ns, stall_attributes
from .names import call_attributes
from .slow import hung_calls

logger = logging.getLogger(sc.LOGGER_NAME)

_STACK_DEPTH = 64  # frames per thread in the stacks attribute
_STACKS_MAX = 32_768  # characters of the stacks attribute
_THREAD_NAME = "otel_callbacks-watchdog"

calls: dict[CodeType, frozenset[int]] = {}
"""The code of the wrapper's methods that run a callback, and the lines where they call it (set by
``tracing/__init__``, which assembles the layer: the wrapper imports the tracker, which starts the
watchdog)."""


def watch_calls(methods: Iterable[Callable[..., Any]], call: str) -> None:
    """Watch ``methods``, whose source lines holding ``call`` are where they run the callback (any
    line where the source cannot be read)."""
    global calls
    found = {}
    for method in methods:
        try:
            lines, first = inspect.getsourcelines(method)
            found[method.__code__] = frozenset(first + i for i, text in enumerate(lines) if call in text)
        except (OSError, TypeError):
            found[method.__code__] = frozenset()
    calls = found


class Watchdog:
    """The process's watchdog thread and what it reported of each call in progress."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._reports: dict[tuple[int, int], tuple[int, int]] = {}  # call -> stall spans made, next due
        self._per_run: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self.trackers: weakref.WeakSet[Any] = weakref.WeakSet()  # whose engines it looks at
        threading.Thread(target=self._watch, name=_THREAD_NAME, daemon=True).start()

    def _watch(self) -> None:
        while True:
            time.sleep(self.interval)
            try:
                self.look()
            except Exception:  # never let the thread die: the next look tries again
                logger.debug("otel_callbacks: the watchdog's look failed", exc_info=True)

    def look(self) -> None:
        """One look at every thread's innermost instrumented call."""
        now = perf_ns()  # before the frames: a call is never seen older than it is
        frames = sys._current_frames()
        running: set[tuple[int, int]] = set()
        for thread_id, frame in frames.items():
            for depth, found in enumerate(_instrumented(frame)):
                local = found.f_locals
                binding, state, start = (local.get(k) for k in ("binding", "state", "start"))
                if binding is None or state is None or not isinstance(start, int):
                    continue  # the call has not reached its callback yet
                call = (id(state), start)
                running.add(call)
                lines = calls[found.f_code]
                if depth or (lines and found.f_lineno not in lines):
                    continue  # an outer call, or the wrapper's own work before or after its callback
                elapsed = now - start
                if elapsed <= state.threshold_ns or binding.telemetry.settings.watchdog_interval <= 0:
                    continue
                try:
                    self._report(call, local.get("self"), binding, state, elapsed, frames, thread_id)
                except Exception as exc:  # the telemetry's failure never reaches the training
                    binding.telemetry.report_error(exc)
        hung_calls.keep_only(running)
        busy, stalling = {state_id for state_id, _ in running}, set()
        for tracker in list(self.trackers):
            try:
                self._look_at_engines(tracker, busy, stalling, now, frames)
            except Exception as exc:  # the telemetry's failure never reaches the training
                tracker._telemetry.report_error(exc)
        seen = running | stalling
        self._reports = {key: made for key, made in self._reports.items() if key in seen}

    def _look_at_engines(
        self,
        tracker: Any,
        busy: set[int],
        stalling: set[tuple[int, int]],
        now: int,
        frames: dict[int, FrameType],
    ) -> None:
        """Each engine of ``tracker`` with no callback running (nor its validator's): stall spans once
        what it does has run past its bound. A trainer moves while its validator does."""
        settings = tracker._settings
        if settings.watchdog_interval <= 0:
            return
        states = list(tracker.states.values())
        validated: dict[int, int] = {}
        for state in states:
            if state.parent is not None:
                moved = validated.get(id(state.parent), 0)
                validated[id(state.parent)] = max(moved, state.last_end)
                if id(state) in busy:
                    busy.add(id(state.parent))
        for state in states:
            doing = None if id(state) in busy else activity(state)
            if doing is None:
                continue
            since = max(doing.since, validated.get(id(state), 0))
            key = (id(state), since)
            stalling.add(key)
            elapsed, bound = now - since, bound_ns(state, doing, settings)
            if elapsed > bound and self._due(key, doing.run, bound, elapsed, settings.limits):
                self._report_engine(tracker, state, doing, since, elapsed, bound, frames)

    def _report_engine(
        self, tracker: Any, state: Any, doing: Any, since: int, elapsed: int, bound: int, frames: dict
    ) -> None:
        key = (doing.what, "")
        if key not in doing.run.warned:
            doing.run.warned.add(key)
            logger.warning(
                "otel_callbacks: %s %s has run for %.1f s with no hook firing (expected at most %.1f s); its "
                "run's trace gets a stall span with every thread's stack",
                doing.run.mode,
                doing.what,
                elapsed / 1e9,
                bound / 1e9,
            )
        attributes = stall_attributes(state, doing)
        attributes[sc.ATTR_STALL_BOUND] = bound / 1e9
        _stall_span(tracker._tracer, doing.phase.context, attributes, since, elapsed, frames, None)

    def _due(self, key: tuple[int, int], run: Any, first: int, elapsed: int, limits: Any) -> bool:
        """Whether a stall span is due now (at ``first`` ns, then each time it has run twice as long as
        at the last one, within the bounds per call and per run); counts it if so."""
        made, due = self._reports.get(key, (0, first))
        if made >= limits.stall_spans or elapsed < due or run is None:
            return False
        if self._per_run.get(run, 0) >= limits.stall_spans_per_run:
            return False
        self._reports[key] = (made + 1, 2 * elapsed)
        self._per_run[run] = self._per_run.get(run, 0) + 1
        return True

    def _report(
        self,
        call: tuple[int, int],
        callback: Any,
        binding: Any,
        state: Any,
        elapsed: int,
        frames: dict[int, FrameType],
        thread_id: int,
    ) -> None:
        run, threshold, context, stack = state.run, state.threshold_ns, state.context, state.stack[-1:]
        if hung_calls.count(call):
            binding.telemetry.slow_counter.add(1, binding.attributes, context=NO_CONTEXT)
            warned = getattr(run, "warned", None)
            key = (callback.event, callback.callback_name)
            if warned is not None and key not in warned:
                warned.add(key)  # its return warns no more
                logger.warning(
                    "otel_callbacks: callback %s on %s has run for %.1f s (slow threshold %.4f s) and has "
                    "not returned: counted slow now; its run's trace gets a stall span with every thread's "
                    "stack",
                    callback.callback_name,
                    callback.event,
                    elapsed / 1e9,
                    threshold / 1e9,
                )
        if context is None or not self._due(call, run, threshold, elapsed, binding.telemetry.settings.limits):
            return  # (no context: a quiet predict run or no run, whose root is not made from here)
        attributes = call_attributes(binding.attributes, state, callback.is_batch)
        if stack:
            attributes[sc.ATTR_PHASE] = stack[0].name
        _stall_span(binding.tracer, context, attributes, call[1], elapsed, frames, thread_id)


def _stall_span(
    tracer: Any,
    context: Any,
    attributes: dict[str, Any],
    start: int,
    elapsed: int,
    frames: dict[int, FrameType],
    thread_id: int | None,
) -> None:
    """A stall span from ``start`` to ``elapsed`` later, with every thread's stack (the hung thread's,
    where known, first and named)."""
    names = _thread_names()
    attributes[sc.ATTR_STALL_DURATION] = elapsed / 1e9
    if thread_id is not None:
        attributes[sc.ATTR_THREAD_NAME] = names.get(thread_id, str(thread_id))
    attributes[sc.ATTR_STALL_STACKS] = _stacks(frames, thread_id, names)
    span = tracer.start_span(sc.SPAN_STALL, context, attributes, wall(start))
    span.end(end_time=wall(start + elapsed))


def _instrumented(frame: FrameType | None) -> Iterable[FrameType]:
    """The instrumented calls on a thread's stack, innermost first."""
    while frame is not None:
        if frame.f_code in calls:
            yield frame
        frame = frame.f_back


def _thread_names() -> dict[int | None, str]:
    return {thread.ident: thread.name for thread in threading.enumerate()}


def _stacks(frames: dict[int, FrameType], hung: int | None, names: dict[int | None, str]) -> str:
    """Every thread's stack but the watchdog's, most recent call first, the hung thread's first."""
    ordered = sorted(frames.items(), key=lambda item: item[0] != hung)
    parts = []
    for thread_id, frame in ordered:
        if names.get(thread_id) == _THREAD_NAME:
            continue
        summary = traceback.StackSummary.extract(
            traceback.walk_stack(frame), limit=_STACK_DEPTH, lookup_lines=False
        )
        lines = [f'  File "{f.filename}", line {f.lineno} in {f.name}' for f in summary]
        header = f"Thread {thread_id:#x} ({names.get(thread_id, '?')}, most recent call first):"
        parts.append("\n".join([header, *lines]))
    text = "\n\n".join(parts)
    return text if len(text) <= _STACKS_MAX else text[: _STACKS_MAX - 15] + "\n... (cut)"


_watchdog: Watchdog | None = None
_lock = threading.Lock()


def watch(interval: float, tracker: Any) -> None:
    """Start the process's watchdog (once; an interval of 0 starts none), looking every ``interval``
    seconds (the shortest asked for), at ``tracker``'s engines too."""
    global _watchdog
    if interval <= 0:
        return
    with _lock:
        if _watchdog is None:
            _watchdog = Watchdog(interval)
        elif interval < _watchdog.interval:
            _watchdog.interval = interval
        _watchdog.trackers.add(tracker)


def _forget_in_child() -> None:  # a forked child has no watchdog thread: the next tracker starts one
    global _watchdog, _lock
    _watchdog, _lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)
