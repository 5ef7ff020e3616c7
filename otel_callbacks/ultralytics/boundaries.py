"""Where each of Ultralytics' runs starts and ends: an exception that leaves ``BaseTrainer.train``,
``BaseValidator.__call__``, ``BasePredictor.stream_inference`` (the generator every prediction runs
through) or ``Exporter.__call__`` ends its run naming the exception.

Ultralytics 8.4 fires ``teardown`` in a ``finally`` for a training (the tracker sees the exception
there); 8.3 fires it only after a successful training, and no other engine has such an event: without
this a failed export or prediction stays open until its engine is collected, which says nothing of
why. The exception reaches the caller unchanged.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import threading
from typing import Any

from .. import tracing

_lock = threading.Lock()
# (module, class, method) of each run's boundary.
_BOUNDARIES = (
    ("ultralytics.engine.trainer", "BaseTrainer", "train"),
    ("ultralytics.engine.validator", "BaseValidator", "__call__"),
    ("ultralytics.engine.predictor", "BasePredictor", "stream_inference"),
    ("ultralytics.engine.exporter", "Exporter", "__call__"),
)
_originals: dict[tuple[Any, str], Any] = {}  # (class, method) -> Ultralytics' function, while installed


def _report(engine: Any, error: BaseException) -> None:
    tracker = tracing.current_tracker()
    if tracker is not None:
        tracker.crashed(engine, error)


def _bounded(original: Any) -> Any:
    if inspect.isgeneratorfunction(inspect.unwrap(original)):

        @functools.wraps(original)
        def stream(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return (yield from original(self, *args, **kwargs))
            except BaseException as error:  # GeneratorExit too: a caller that stopped iterating early
                if not isinstance(error, GeneratorExit):
                    _report(self, error)
                raise

        return stream

    @functools.wraps(original)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return original(self, *args, **kwargs)
        except BaseException as error:
            _report(self, error)
            raise

    return call


def install() -> None:
    with _lock:
        if _originals:  # installed
            return
        for module, name, method in _BOUNDARIES:
            try:  # each on its own: one Ultralytics moved or renamed leaves the others bounded
                cls = getattr(importlib.import_module(module), name)
                original = cls.__dict__[method]
            except (ImportError, AttributeError, KeyError):
                continue
            _originals[(cls, method)] = original
            setattr(cls, method, _bounded(original))


def uninstall() -> None:
    with _lock:
        while _originals:
            (cls, method), original = _originals.popitem()
            setattr(cls, method, original)
