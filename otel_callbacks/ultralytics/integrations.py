"""``add_integration_callbacks``: Ultralytics' integrations and third-party ones, labelled.

Ultralytics' own integrations are added by Ultralytics' own function when it is installed, so
the same integrations arrive under the same SETTINGS and trainer-only conditions, with the same
dedupe; because ``instance.callbacks`` is an instrumented dict, each one is wrapped on the way
in and labelled from its module. Third-party packages add theirs through the
``otel_callbacks.integrations`` entry point group: each entry point names a ``{event: callback}``
dict, or a function ``(instance) -> dict``, and its name is the integration label.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any

from .. import semconv
from ..tracing.wrapper import instrument
from .defaults import original

ENTRY_POINT_GROUP = "otel_callbacks.integrations"

logger = logging.getLogger(semconv.LOGGER_NAME)


def _ultralytics_add_integration_callbacks() -> Callable[[Any], None] | None:
    """Ultralytics' own function (even while installed), or None when Ultralytics is absent."""
    return original("add_integration_callbacks")


def add_integration_callbacks(instance: Any) -> None:
    """Add every available integration's callbacks to ``instance.callbacks``, instrumented.

    Keeps Ultralytics' semantics: a callback already in an event's list is not added again.
    """
    ultralytics_add = _ultralytics_add_integration_callbacks()
    if ultralytics_add is not None:
        ultralytics_add(instance)
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry_point.load()
            callbacks = loaded(instance) if callable(loaded) else loaded
        except Exception as exc:
            logger.warning(
                "otel_callbacks: integration %r (%s) failed to load, skipped: %s",
                entry_point.name,
                entry_point.value,
                exc,
            )
            continue
        _add(instance, entry_point.name, callbacks)


def _add(instance: Any, integration: str, callbacks: Mapping[str, Any]) -> None:
    for event, callback in callbacks.items():
        for one in callback if isinstance(callback, (list, tuple)) else (callback,):
            if one not in instance.callbacks[event]:
                instance.callbacks[event].append(instrument(one, event, integration))
