"""Spans that stand for the work of child processes: a sweep, its iterations, a MultiTrainer.

While such a span is open, it is handed down in this process's environment, so every child started
meanwhile joins the trace and is instrumented with nothing for the user to do: its context in
``TRACEPARENT`` (the children's runs become its children), the embedded file's directory (their
files land beside this one), and the install switch with the package's ``bootstrap`` directory first
on ``PYTHONPATH`` (its ``sitecustomize`` installs otel_callbacks in ``yolo train`` subprocesses).
In this process the innermost open launch is the parent of the next one, and of the runs started
in it (``use_span``). Launches nest; what is still open ends ERROR with the reason at shutdown.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, Status, StatusCode

from .. import semconv as sc
from ..config import INSTALL_SWITCH
from ..telemetry import providers
from ..telemetry.propagation import environment_context, inject_environment, restore_environment
from ..tracing.outcomes import clean_exit, crash_message

BOOTSTRAP = str(Path(__file__).resolve().with_name("bootstrap"))
"""The directory whose ``sitecustomize`` installs otel_callbacks where the switch is on."""

_lock = threading.RLock()
_open: list[Launch] = []  # innermost last
_watched: weakref.WeakSet[Any] = weakref.WeakSet()  # telemetries whose shutdown ends what is open


def child_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables that make a Python child process install otel_callbacks at its start."""
    env = os.environ if env is None else env
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != BOOTSTRAP]
    return {INSTALL_SWITCH: "true", "PYTHONPATH": os.pathsep.join([BOOTSTRAP, *paths])}


class Launch:
    """One open span handed down to children; :meth:`end` restores what it replaced."""

    def __init__(self, span: Any, previous: dict[str, str | None]) -> None:
        self.span = span
        self.previous = previous
        self.ended = False

    def end(
        self,
        error: BaseException | None = None,
        failure: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        """End this launch (and any still open inside it): OK, ERROR with ``failure``, or with the
        exception that left it."""
        with _lock:
            while _open and self in _open:
                inner = _open.pop()
                restore_environment(os.environ, inner.previous)
                if inner is not self:
                    inner._finish(error, failure or "its launcher ended first", None)
        self._finish(error, failure, attributes)

    def _finish(
        self, error: BaseException | None, failure: str | None, attributes: Mapping[str, Any] | None
    ) -> None:
        if self.ended:
            return
        self.ended = True
        span = self.span
        if attributes:
            span.set_attributes(attributes)
        if error is not None and clean_exit(error):  # sys.exit(0) inside: ended, not failed
            span.record_exception(error, escaped=True)
        elif error is not None:
            span.set_attribute(sc.ATTR_ERROR_TYPE, type(error).__qualname__)
            span.set_status(Status(StatusCode.ERROR, crash_message(error)))
            span.record_exception(error, escaped=True)
        elif failure is not None:
            span.set_status(Status(StatusCode.ERROR, failure))
        span.end()


def start(
    name: str, attributes: Mapping[str, Any], *, install: bool = True, links: Sequence[Link] = ()
) -> Launch | None:
    """Open ``name`` under the innermost open launch (else the current span, else ``TRACEPARENT``)
    and hand it down; None when telemetry is disabled."""
    tel = providers.ensure_configured()
    if not tel.enabled:
        return None
    with _lock:
        if _open:
            parent = trace.set_span_in_context(_open[-1].span)
        elif trace.get_current_span().get_span_context().is_valid:
            parent = None
        else:
            parent = environment_context()
        span = tel.tracer.start_span(
            name, context=parent, attributes={sc.ATTR_PHASE: name, **attributes}, links=links
        )
        tel.announce(span)  # a killed launcher leaves it in the file (repaired when read)
        previous = inject_environment(span, os.environ)
        if tel.output is not None:  # children write their files beside this one
            previous["OTEL_CALLBACKS_DIR"] = os.environ.get("OTEL_CALLBACKS_DIR")
            os.environ["OTEL_CALLBACKS_DIR"] = str(Path(tel.output.directory).resolve())
        if install:
            for variable, value in child_environment().items():
                previous.setdefault(variable, os.environ.get(variable))
                os.environ[variable] = value
        launch = Launch(span, previous)
        _open.append(launch)
        if tel not in _watched:
            _watched.add(tel)
            tel.on_shutdown(_end_all)
    return launch


def _end_all(reason: str) -> None:
    """The telemetry shuts down (process exit, SIGTERM): what is open ends ERROR with the reason."""
    with _lock:
        outermost = _open[0] if _open else None
    if outermost is not None:
        outermost.end(failure=reason)
