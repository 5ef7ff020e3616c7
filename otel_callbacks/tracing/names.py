"""How a callback is named on spans and metrics: its qualified name, its integration, and what a
span of one of its calls carries."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .. import semconv


def qualified_name(func: Callable[..., Any]) -> str:
    """``module.qualname`` of a callback, looking through partials and callable objects."""
    while isinstance(func, functools.partial):
        func = func.func
    target = func if hasattr(func, "__qualname__") else type(func)
    module = getattr(target, "__module__", None) or "<unknown>"
    return f"{module}.{getattr(target, '__qualname__', repr(target))}"


def integration_of(func: Callable[..., Any]) -> str:
    """The integration a callback belongs to, from the module that defines it."""
    while isinstance(func, functools.partial):
        func = func.func
    return semconv.integration_of_module(getattr(func, "__module__", None) or "")


def span_name(event: str, integration: str, callback_name: str) -> str:
    """``on_fit_epoch_end checkpoint_uploader``, ``on_train_epoch_end tensorboard``; a default hook's
    span is the event's own name."""
    if integration == semconv.INTEGRATION_DEFAULT:
        return event
    if integration != semconv.INTEGRATION_USER:
        return f"{event} {integration}"
    return f"{event} {callback_name.rsplit('.', 1)[-1]}"


def call_attributes(attributes: dict[str, Any], state: Any, is_batch: bool) -> dict[str, Any]:
    """A span's attributes for a call: the callback's own (``attributes``, copied), the epoch, and
    the batch's index for a per-batch event; the call's span and a stall span alike."""
    attributes = dict(attributes)
    epoch = state.epoch
    if epoch is not None:
        attributes[semconv.ATTR_EPOCH] = epoch
    if state.batch_index >= 0 and is_batch:
        attributes[semconv.ATTR_BATCH_INDEX] = state.batch_index
    return attributes
