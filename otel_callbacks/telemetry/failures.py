"""Telemetry work on the application's own path (a sweep's spans, a launcher's end): whatever it
raises is the telemetry's failure, logged once and counted, never the application's."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from .. import semconv
from . import providers

logger = logging.getLogger(semconv.LOGGER_NAME)
T = TypeVar("T")


@contextlib.contextmanager
def contained() -> Iterator[None]:
    """Run the block; an ``Exception`` from it is reported to the active telemetry, not raised."""
    try:
        yield
    except Exception as exc:
        if providers.active is not None:
            providers.active.report_error(exc)
        else:  # shut down already: nothing counts it
            logger.warning("otel_callbacks: telemetry failed (%s: %s)", type(exc).__qualname__, exc)


def attempt(function: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """``function(*args, **kwargs)``, or None where it raised (reported as in :func:`contained`)."""
    with contained():
        return function(*args, **kwargs)
    return None
