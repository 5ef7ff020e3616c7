"""Trace context through the environment: the W3C ``TRACEPARENT`` / ``TRACESTATE`` variables that
OpenTelemetry specifies for processes, so a launcher's span can parent the runs of its workers."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, MutableMapping
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
_VARIABLES = {"traceparent": "TRACEPARENT", "tracestate": "TRACESTATE"}


def _current_context_getter() -> Callable[[], Context]:
    """``context.get_current`` without its two Python frames, for a check made once per predict
    call: the runtime context's ContextVar where it is the API's default one, else the function."""
    variable = getattr(getattr(otel_context, "_RUNTIME_CONTEXT", None), "_current_context", None)
    return variable.get if isinstance(variable, ContextVar) else otel_context.get_current


current_context = _current_context_getter()


def environment_context(env: Mapping[str, str] | None = None) -> Context | None:
    """The context a parent process handed down in ``TRACEPARENT``; None when there is none."""
    env = os.environ if env is None else env
    carrier = {key: env[variable] for key, variable in _VARIABLES.items() if env.get(variable)}
    if "traceparent" not in carrier:
        return None
    context = _PROPAGATOR.extract(carrier)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def inject_environment(span: Any, env: MutableMapping[str, str]) -> dict[str, str | None]:
    """Put ``span``'s context into ``env``; returns what the variables held before (None: unset)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    previous = {variable: env.get(variable) for variable in _VARIABLES.values()}
    for key, variable in _VARIABLES.items():
        if key in carrier:
            env[variable] = carrier[key]
        else:
            env.pop(variable, None)
    return previous


def restore_environment(env: MutableMapping[str, str], previous: dict[str, str | None]) -> None:
    for variable, value in previous.items():
        if value is None:
            env.pop(variable, None)
        else:
            env[variable] = value
