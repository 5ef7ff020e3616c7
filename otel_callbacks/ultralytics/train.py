"""``BaseTrainer.train`` as the boundary of a training: an exception that leaves it ends the run.

Ultralytics 8.4 fires ``teardown`` in a ``finally`` (the tracker sees the exception there); 8.3
fires it only after a successful training, so without this a crashed run stays open while the
process lives on (a notebook). The exception reaches the caller unchanged.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from .. import tracing

_lock = threading.Lock()
_original: list[Any] = []  # BaseTrainer.train while installed


def _trainer_class() -> Any:
    from ultralytics.engine.trainer import BaseTrainer

    return BaseTrainer


def install() -> None:
    with _lock:
        if _original:
            return
        cls = _trainer_class()
        original = cls.train

        @functools.wraps(original)
        def train(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return original(self, *args, **kwargs)
            except BaseException as error:
                tracker = tracing.current_tracker()
                if tracker is not None:
                    tracker.crashed(self, error)
                raise

        _original.append(original)
        cls.train = train


def uninstall() -> None:
    with _lock:
        if _original:
            _trainer_class().train = _original.pop()
