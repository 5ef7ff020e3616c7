"""SIGTERM (preemption on Kubernetes or Slurm, ``kill``, ``docker stop``) as an end the telemetry keeps.

Python's default action for SIGTERM kills the process without ``finally`` blocks or ``atexit``, so
everything buffered is lost. While armed, the handler shuts the telemetry down with the reason
"terminated by SIGTERM" (its hooks end every open run ERROR with it; exporters flush within
``OTEL_CALLBACKS_SHUTDOWN_TIMEOUT``), restores the default action and sends the signal again: the
process ends exactly as it would have (killed by SIGTERM, status -15 to ``subprocess``, 143 to a
shell). torch.distributed.run forwards SIGTERM to its workers, so DDP workers and the launcher each
flush their own.

Armed only from the main thread (Python runs signal handlers there) and only where SIGTERM has its
default action: a handler the application set first is left alone. One that the application sets
after arming is chained at the next :func:`arm` (each epoch's start): it runs first; if it raises
(``sys.exit``), the open runs end with the reason before its exception unwinds the training.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any

REASON = "terminated by SIGTERM"

_lock = threading.Lock()
_armed: list[Callable[..., Any]] = []  # the shutdown function while our handler is installed
_close_runs: list[Callable[[str], None]] = []  # what a chained handler's exit runs first


def arm(shutdown: Callable[..., Any], close_runs: Callable[[str], None]) -> None:
    """Install the handler where SIGTERM has its default action; chain one set after ours."""
    if threading.current_thread() is not threading.main_thread():
        return
    with _lock:
        current = signal.getsignal(signal.SIGTERM)
        if current in (signal.SIG_DFL, None) or (current is _terminate and not _armed):
            _armed[:] = [shutdown]
            signal.signal(signal.SIGTERM, _terminate)
        elif _armed and current is not _terminate and callable(current) and not isinstance(current, _Chained):
            signal.signal(signal.SIGTERM, _Chained(current))
        _close_runs[:] = [close_runs]


def _terminate(signum: int, frame: Any) -> None:
    shutdown = _armed[0] if _armed else None
    try:
        if shutdown is not None:
            shutdown(reason=REASON)
    finally:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


class _Chained:
    """The application's own handler, run first; its exit ends the open runs with the reason."""

    def __init__(self, handler: Callable[[int, Any], Any]) -> None:
        self.handler = handler

    def __call__(self, signum: int, frame: Any) -> Any:
        try:
            return self.handler(signum, frame)
        except BaseException:
            for close in _close_runs:
                close(REASON)
            raise
