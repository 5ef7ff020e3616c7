"""The instrumented callback: the hot path that times, aggregates, samples and spans each call.

An unsampled per-batch invocation costs two clock reads, a state lookup and a list append: no
SDK call. Spans are made for non-batch events, for sampled batches, and after the fact for any
invocation slower than the threshold, with its measured start and end.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from . import semconv, telemetry
from .config import instrumentation_enabled
from .hooks import BATCH_EVENTS, MODE_OF_EVENT, mode_of
from .phases import wall

_perf_ns = time.perf_counter_ns


def qualified_name(func: Callable[..., Any]) -> str:
    """``module.qualname`` of a callback, looking through partials and callable objects."""
    while isinstance(func, functools.partial):
        func = func.func
    target = func if hasattr(func, "__qualname__") else type(func)
    module = getattr(target, "__module__", None) or "<unknown>"
    return f"{module}.{getattr(target, '__qualname__', repr(target))}"


def integration_of(func: Callable[..., Any]) -> str:
    """The integration a callback belongs to, from the module that defines it."""
    from .integrations import integration_from_module

    while isinstance(func, functools.partial):
        func = func.func
    return integration_from_module(getattr(func, "__module__", None) or "")


def instrument(
    callback: Callable[..., Any], event: str, integration: str | None = None
) -> Callable[..., Any]:
    """Wrap ``callback`` for ``event``; a callback that is already wrapped is returned as it is.

    With instrumentation disabled by the environment the callback itself is returned, so the
    disabled layer costs nothing per call.
    """
    if isinstance(callback, InstrumentedCallback):
        if integration is not None and callback.integration != integration:
            callback.integration, callback._binding = integration, None
        return callback
    if not callable(callback):
        raise TypeError(
            f"Callback for event {event!r} must be callable (a function taking the engine), "
            f"got {callback!r} of type {type(callback).__name__}"
        )
    if not instrumentation_enabled():
        return callback
    return InstrumentedCallback(callback, event, integration)


class _Binding:
    """What a wrapper needs from one configured :class:`~otel_callbacks.telemetry.Telemetry`,
    and the duration list of the run it last ran in (one identity check on the hot path)."""

    __slots__ = ("attributes", "buffer_limit", "last", "phases", "states", "telemetry", "tracer")

    def __init__(
        self, owner: InstrumentedCallback, tel: telemetry.Telemetry, phases: Any = None, engine: Any = None
    ) -> None:
        self.telemetry = tel
        self.tracer = tel.tracer
        self.phases = phases or tel.phases
        self.states = self.phases.states
        self.attributes = {
            semconv.ATTR_EVENT: owner.event,
            semconv.ATTR_CALLBACK: owner.callback_name,
            semconv.ATTR_INTEGRATION: owner.integration,
            semconv.ATTR_MODE: owner.mode or mode_of(owner.event, engine),
        }
        self.buffer_limit = tel.callback_duration.limit
        # (run, its duration list): one tuple, replaced whole, so that trainers in other threads
        # sharing this callback never pair one run with another's list.
        self.last: tuple[Any, list[int]] = (None, [])

    def durations_in(self, run: Any) -> list[int]:
        last = self.last
        if last[0] is run:
            return last[1]
        durations = run.buffer(self)
        self.last = (run, durations)
        return durations


class InstrumentedCallback:
    """A transparent stand-in for a callback: same name, doc and module, equal to and hashing
    like the function it wraps, so Ultralytics' ``in``, ``remove`` and dict comparisons work
    unchanged. Pickles as (callback, event, integration): DDP workers rebuild it and keep timing.
    """

    def __init__(self, callback: Callable[..., Any], event: str, integration: str | None = None) -> None:
        functools.update_wrapper(self, callback, updated=())
        self.__wrapped__ = callback
        self.event = event
        self.mode = MODE_OF_EVENT.get(event)  # None: a custom event, whose engine tells
        self.is_batch = event in BATCH_EVENTS
        self.integration = integration or integration_of(callback)
        self.callback_name = qualified_name(callback)
        self._binding: _Binding | None = None

    # Transparency ------------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if isinstance(other, InstrumentedCallback):
            other = other.__wrapped__
        return self.__wrapped__ == other

    def __hash__(self) -> int:
        return hash(self.__wrapped__)

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes the wrapper lacks, e.g. a partial's ``func`` and ``args``.
        if name.startswith("__") or name == "_binding":
            raise AttributeError(name)
        return getattr(self.__wrapped__, name)

    def __reduce__(self) -> tuple[Any, ...]:
        return InstrumentedCallback, (self.__wrapped__, self.event, self.integration)

    def __repr__(self) -> str:
        return f"<instrumented {self.event} callback {self.__wrapped__!r}>"

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        # Assigned as a class attribute, behave like the function would: bind to the instance.
        return self if instance is None else functools.partial(self, instance)

    # The hot path ------------------------------------------------------------------------

    def _bind(self, engine: Any) -> _Binding | None:
        tel = telemetry.active
        if tel is None:
            try:
                tel = telemetry.ensure_configured()
            except Exception as exc:
                telemetry.logger.error("otel_callbacks: telemetry disabled: %s", exc)
                tel = telemetry.configure(telemetry.Settings(enabled=False))
        if not tel.enabled:
            return None
        self._binding = _Binding(self, tel, engine=engine)
        return self._binding

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        binding = self._binding
        if binding is None or binding.telemetry is not telemetry.active:
            binding = self._bind(args[0] if args else None)
            if binding is None:
                return self.__wrapped__(*args, **kwargs)
        engine = args[0] if args else None
        state = binding.states.get(id(engine))
        if state is None or self.event != state.event or self is state.first:
            state = binding.phases.enter(engine, self)  # a new firing: move the phases on
        if not state.sampled:
            start = _perf_ns()
            try:
                result = self.__wrapped__(*args, **kwargs)
            except BaseException as exc:
                self._after_the_fact(binding, state, _perf_ns() - start, exc)
                raise
            end = state.last_end = _perf_ns()
            elapsed = end - start
            if elapsed > state.threshold_ns:
                self._after_the_fact(binding, state, elapsed, None)
            else:
                last = binding.last
                durations = last[1] if last[0] is state.run else binding.durations_in(state.run)
                durations.append(elapsed)
                if len(durations) >= binding.buffer_limit:  # no reader collected for long
                    binding.telemetry.callback_duration.fold(durations)
            if state.closer is self:  # the last callback of an end event (past the span budget)
                binding.phases.closed_firing(state)
            return result
        return self._call_with_span(binding, state, args, kwargs)

    def _call_with_span(self, binding: _Binding, state: Any, args: Any, kwargs: Any) -> Any:
        entered = _perf_ns()
        span = token = None
        try:
            span = binding.tracer.start_span(
                self.event,
                context=state.context,
                attributes=self._attributes(state),
                start_time=wall(entered),
            )
            token = otel_context.attach(trace.set_span_in_context(span))
        except Exception as exc:
            binding.telemetry.report_error(exc)
        start = _perf_ns()
        error: BaseException | None = None
        try:
            return self.__wrapped__(*args, **kwargs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            elapsed = _perf_ns() - start
            run = state.run
            try:
                if token is not None:
                    otel_context.detach(token)
                self._observe(binding, state, elapsed, error, span)
                end = state.last_end = _perf_ns()
                if span is not None:
                    span.end(end_time=wall(end))
                run.span_calls += 1
                run.spans += span is not None
                overhead = end - entered - elapsed
                run.span_overhead_ns += overhead
                if overhead > run.worst_overhead_ns:
                    run.worst_overhead_ns = overhead
                if state.closer is self:
                    binding.phases.closed_firing(state)
            except Exception as exc:
                binding.telemetry.report_error(exc)

    def _after_the_fact(
        self, binding: _Binding, state: Any, elapsed: int, error: BaseException | None
    ) -> None:
        """A span for an unsampled batch call that was slow or failed, with its real times."""
        end = state.last_end = _perf_ns()
        try:
            span = binding.tracer.start_span(
                self.event,
                context=state.context,
                attributes=self._attributes(state),
                start_time=wall(end - elapsed),
            )
            self._observe(binding, state, elapsed, error, span)
            span.end(end_time=wall(end))
            state.run.spans += 1
            overhead = _perf_ns() - end
            state.run.span_overhead_ns += overhead
            if overhead > state.run.worst_overhead_ns:
                state.run.worst_overhead_ns = overhead
        except Exception as exc:
            binding.telemetry.report_error(exc)

    def _attributes(self, state: Any) -> dict[str, Any]:
        attributes = dict(self._binding.attributes)
        epoch = state.epoch
        if epoch is not None:
            attributes[semconv.ATTR_EPOCH] = epoch
        if state.batch_index >= 0 and self.is_batch:
            attributes[semconv.ATTR_BATCH_INDEX] = state.batch_index
        return attributes

    def _observe(
        self,
        binding: _Binding,
        state: Any,
        elapsed: int,
        error: BaseException | None,
        span: Any,
    ) -> None:
        run = state.run
        error_type = type(error).__qualname__ if error is not None else None
        durations = binding.durations_in(run) if error_type is None else run.buffer(binding, error_type)
        durations.append(elapsed)
        if len(durations) >= binding.buffer_limit:
            binding.telemetry.callback_duration.fold(durations)
        if error_type is not None and span is not None:
            span.record_exception(error, escaped=True)
            span.set_attribute(semconv.ATTR_ERROR_TYPE, error_type)
            span.set_status(Status(StatusCode.ERROR, f"{error_type}: {error}"))
        if elapsed > state.threshold_ns:
            binding.telemetry.on_slow(self, binding, state, elapsed, state.threshold_ns, span)


def _probe(engine: Any) -> None:
    """The no-op that :func:`fast_path_cost_ns` times."""


class _ProbeEngine:
    pass


def fast_path_cost_ns(tel: telemetry.Telemetry, calls: int = 2000) -> float:
    """The unsampled per-batch path's own cost per call, measured here on a no-op callback.

    Runs against a private phase tracker and a scratch histogram, so nothing it does is exported.
    """
    from dataclasses import replace

    from opentelemetry.metrics import NoOpHistogram

    from .histograms import BufferedHistogram
    from .phases import PhaseTracker

    tracker = PhaseTracker(
        tel, BufferedHistogram(NoOpHistogram("probe")), replace(tel.settings, summary=False)
    )
    tracker.fast_call_ns = 1.0  # never calibrate the calibration
    probe = InstrumentedCallback(_probe, "on_train_batch_end")
    probe._binding = _Binding(probe, tel, tracker)
    engine = _ProbeEngine()
    state = tracker.enter(engine, probe)
    state.sampled, state.batch_slow_ns = False, 1 << 62
    start = _perf_ns()
    for _ in range(calls):
        probe(engine)
    instrumented = _perf_ns() - start
    start = _perf_ns()
    for _ in range(calls):
        _probe(engine)
    bare = _perf_ns() - start
    return max(0.0, (instrumented - bare) / calls)
