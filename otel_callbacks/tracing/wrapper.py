"""The instrumented callback: the hot path that times, aggregates, samples and spans each call.

An unsampled per-batch invocation costs two clock reads, a state lookup and a list append: no SDK
call. Spans: for non-batch events, sampled batches, and after the fact for any invocation slower than
the threshold, with its measured start and end. The rest goes to the phase tracker's narrow interface.
"""

from __future__ import annotations

import functools
import sys
import types
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from .. import semconv
from ..config import Settings, instrumentation_enabled
from ..hooks import BATCH_EVENTS, MODE_OF_EVENT, mode_of
from ..telemetry import providers
from .clock import perf_ns, wall
from .names import call_attributes, integration_of, qualified_name, span_name
from .outcomes import clean_exit
from .trackers import tracker_for

_perf_ns = perf_ns
_NO_ENGINE: Any = object()  # called without arguments


def _bound(
    wrapped: Callable[..., Any], engine: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Callable[[Any], Any], Any]:
    """Any call other than Ultralytics' ``callback(engine)``, as one taking the engine alone; so the
    hot path makes a plain one-argument call (no argument tuple or dict to unpack)."""
    positional = args if engine is _NO_ENGINE else (engine, *args)
    return (lambda _: wrapped(*positional, **kwargs)), (None if engine is _NO_ENGINE else engine)


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
    plain = isinstance(callback, types.FunctionType) and not vars(callback)
    return (InstrumentedCallback if plain else ForwardingCallback)(callback, event, integration)


class _Binding:
    """What a wrapper needs from one configured telemetry and its tracker, and the duration list
    of the run it last ran in (one identity check on the hot path)."""

    __slots__ = (
        "attributes",
        "buffer_limit",
        "key",
        "last",
        "span_name",
        "spans",
        "states",
        "telemetry",
        "tracer",
        "tracker",
    )

    def __init__(
        self, owner: InstrumentedCallback, tel: providers.Telemetry, tracker: Any = None, engine: Any = None
    ) -> None:
        self.telemetry = tel
        self.tracer = tel.spans  # start_span as the tracer has it: direct spans where they are the same
        self.tracker = tracker or tracker_for(tel)
        self.states = self.tracker.states
        self.attributes = {
            semconv.ATTR_EVENT: owner.event,
            semconv.ATTR_CALLBACK: owner.callback_name,
            semconv.ATTR_INTEGRATION: owner.integration,
            semconv.ATTR_MODE: owner.mode or mode_of(owner.event, engine),
        }
        self.key = tuple(self.attributes.values())  # its duration lists' key in a run (Run.buffer)
        self.buffer_limit = tel.callback_duration.limit
        # The no-op default hooks are counted, but spanned only on request (or when slow or failed).
        self.spans = tel.settings.default_hook_spans or owner.integration != semconv.INTEGRATION_DEFAULT
        # The event and whose callback it is: a bounded set of names; numbers stay attributes.
        self.span_name = span_name(owner.event, owner.integration, owner.callback_name)
        # (run, its duration list): one tuple, replaced whole, so that trainers in other threads
        # sharing this callback never pair one run with another's list.
        self.last: tuple[Any, list[int]] = (None, [])

    def durations_in(self, state: Any) -> list[int]:
        run, last = state.run, self.last
        if last[0] is run:
            return last[1]
        durations = self.tracker.durations(state, self)
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
        self.event = sys.intern(event)  # an armed lane's closer is compared to it by identity
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

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.__wrapped__, self.event, self.integration)

    def __repr__(self) -> str:
        return f"<instrumented {self.event} callback {self.__wrapped__!r}>"

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        # Assigned as a class attribute, behave like the function would: bind to the instance.
        return self if instance is None else functools.partial(self, instance)

    # The hot path ------------------------------------------------------------------------

    def _bind(self, engine: Any) -> _Binding | None:
        tel = providers.active
        try:
            if tel is None:
                tel = providers.ensure_configured()
            if not tel.enabled:
                return None
            self._binding = _Binding(self, tel, engine=engine)
        except Exception as exc:  # the callback runs, uninstrumented, whatever the SDK does
            providers.logger.error("otel_callbacks: telemetry disabled: %s", exc)
            try:
                providers.configure(Settings(enabled=False))
            except Exception as again:
                providers.logger.error("otel_callbacks: could not disable telemetry cleanly: %s", again)
            return None
        return self._binding

    def __call__(self, engine: Any = _NO_ENGINE, /, *args: Any, **kwargs: Any) -> Any:
        wrapped = self.__wrapped__
        if args or kwargs or engine is _NO_ENGINE:  # not Ultralytics' callback(engine)
            wrapped, engine = _bound(wrapped, engine, args, kwargs)
        binding = self._binding
        if binding is None or binding.telemetry is not providers.active:
            binding = self._bind(engine)
            if binding is None:
                return wrapped(engine)
        state = binding.states.get(id(engine))
        if state is None or self.event != state.event or self is state.first:
            state = binding.tracker.enter(engine, self, state)  # a new firing: move the phases on
        if state.sampled and binding.spans:
            return self._call_with_span(binding, state, wrapped, engine)
        start = _perf_ns()
        try:
            result = wrapped(engine)
        except BaseException as exc:
            self._after_the_fact(binding, state, start, _perf_ns(), exc)
            raise
        end = _perf_ns()
        elapsed = end - start
        if elapsed > state.threshold_ns:
            self._after_the_fact(binding, state, start, end, None)
            return result
        run, durations = binding.last
        if run is not state.run:
            durations = binding.durations_in(state)
        durations.append(elapsed)
        if len(durations) >= binding.buffer_limit:  # no reader collected for long: bound memory
            binding.telemetry.callback_duration.fold(durations)
        closer = state.closer
        if closer is self or closer is None or closer is self.event:
            binding.tracker.leave(state, self, end)
        return result

    def _call_with_span(
        self, binding: _Binding, state: Any, wrapped: Callable[[Any], Any], engine: Any
    ) -> Any:
        entered = _perf_ns()
        span = token = None
        try:
            span = self._start_span(binding, state, entered)
            token = otel_context.attach(trace.set_span_in_context(span))
        except Exception as exc:
            binding.telemetry.report_error(exc)
        start = _perf_ns()
        error: BaseException | None = None
        try:
            return wrapped(engine)
        except BaseException as exc:
            error = exc
            raise
        finally:
            elapsed = _perf_ns() - start
            try:
                if token is not None:
                    otel_context.detach(token)
                self._observe(binding, state, elapsed, error, span, start)
                end = _perf_ns()
                if span is not None:
                    span.end(end_time=wall(end))
                binding.tracker.spanned(state, end - entered - elapsed, span is not None, elapsed=elapsed)
                self._leave(binding, state, end, error is not None)
            except Exception as exc:
                binding.telemetry.report_error(exc)

    def _after_the_fact(
        self, binding: _Binding, state: Any, start: int, end: int, error: BaseException | None
    ) -> None:
        """A span for an unsampled call that was slow or failed, with its real times."""
        try:
            if state.quiet is not None:
                binding.tracker.materialize(state)  # its run gets its root, this span's parent
            span = self._start_span(binding, state, start)
            self._observe(binding, state, end - start, error, span, start)
            span.end(end_time=wall(end))
            binding.tracker.spanned(state, _perf_ns() - end, True, called=False, elapsed=end - start)
            self._leave(binding, state, end, error is not None)
        except Exception as exc:
            binding.telemetry.report_error(exc)

    def _leave(self, binding: _Binding, state: Any, end: int, failed: bool) -> None:
        closer = state.closer
        if closer is self or closer is None or closer is self.event or failed:
            binding.tracker.leave(state, self, end, failed)

    def _start_span(self, binding: _Binding, state: Any, start: int) -> Any:
        """This call's span, in the innermost phase of its engine, from ``start`` (perf_counter ns)."""
        attributes = call_attributes(binding.attributes, state, self.is_batch)
        return binding.tracer.start_span(
            binding.span_name, context=state.context, attributes=attributes, start_time=wall(start)
        )

    def _observe(
        self, binding: _Binding, state: Any, elapsed: int, error: BaseException | None, span: Any, start: int
    ) -> None:
        failed = error is not None and not clean_exit(error)  # sys.exit(0) is no failure
        error_type = type(error).__qualname__ if failed else None
        if error_type is None:
            durations = binding.durations_in(state)
        else:
            durations = binding.tracker.durations(state, binding, error_type)
        durations.append(elapsed)
        if span is not None:
            binding.telemetry.callback_duration.exemplar(durations, elapsed, span.get_span_context())
        if len(durations) >= binding.buffer_limit:
            binding.telemetry.callback_duration.fold(durations)
        if error is not None:
            if span is not None:
                span.record_exception(error, escaped=True)
            if span is not None and failed:
                span.set_attribute(semconv.ATTR_ERROR_TYPE, error_type)
                span.set_status(Status(StatusCode.ERROR, f"{error_type}: {error}"))
            binding.tracker.raised(state, self.callback_name, error)
        if elapsed > state.threshold_ns:
            binding.tracker.slow(self, binding.attributes, state, elapsed, span, start)


class ForwardingCallback(InstrumentedCallback):
    """The stand-in for a callable with attributes of its own (a partial's ``func`` and ``args``, a
    function's custom attributes): it forwards what the wrapper lacks. A class apart, because a
    ``__getattr__`` makes every attribute read of the hot path slower (CPython then cannot
    specialize them)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_binding":
            raise AttributeError(name)
        return getattr(self.__wrapped__, name)
