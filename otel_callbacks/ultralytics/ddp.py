"""The DDP launch: one trace per multi-GPU training.

In the launching process Ultralytics fires no callback: ``BaseTrainer.train`` calls
``generate_ddp_command``, runs ``torch.distributed.run`` and, in a ``finally``, ``ddp_cleanup``
(DESIGN.md section 2). While installed, those two (as the trainer module holds them) open and end a
``train`` span around the workers' lifetime and hand its context to the workers in ``TRACEPARENT``,
so each rank's run tree is a child of it. The workers' telemetry files land beside the launcher's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from typing import Any

from opentelemetry.trace import Status, StatusCode

from .. import semconv as sc
from ..telemetry import providers
from ..telemetry.propagation import inject_environment, restore_environment
from ..tracing.results import run_attributes

_lock = threading.Lock()
_originals: dict[str, Any] = {}
_launches: dict[int, tuple[Any, dict[str, str | None]]] = {}  # id(trainer) -> span, environment before
_NAMES = ("generate_ddp_command", "ddp_cleanup")


def _trainer_module() -> Any:
    import ultralytics.engine.trainer as module

    return module


def install() -> None:
    with _lock:
        if _originals:
            return
        module = _trainer_module()
        _originals.update({name: getattr(module, name) for name in _NAMES})
        module.generate_ddp_command = generate_ddp_command
        module.ddp_cleanup = ddp_cleanup


def uninstall() -> None:
    with _lock:
        if _originals:
            module = _trainer_module()
            for name, original in _originals.items():
                setattr(module, name, original)
            _originals.clear()


def generate_ddp_command(trainer: Any) -> tuple[list[str], str]:
    """Ultralytics' command, and the launch's span opened with its context in the environment."""
    cmd, file = _originals["generate_ddp_command"](trainer)
    try:
        _start(trainer)
    except Exception as exc:  # the training never depends on its telemetry
        tel = providers.active
        if tel is not None:
            tel.report_error(exc)
    return cmd, file


def ddp_cleanup(trainer: Any, file: str) -> None:
    """Ultralytics' cleanup, then the launch's end, with the workers' exit status."""
    try:
        _originals["ddp_cleanup"](trainer, file)
    finally:
        _end(id(trainer), sys.exc_info()[1])


def _start(trainer: Any) -> None:
    tel = providers.ensure_configured()
    if not tel.enabled:
        return
    attributes: dict[str, Any] = {
        sc.ATTR_PHASE: sc.PHASE_TRAIN,
        sc.ATTR_LAUNCHER: True,
        sc.ATTR_WORLD_SIZE: int(getattr(trainer, "world_size", 0) or 0),
        sc.ATTR_DEVICES: str(getattr(getattr(trainer, "args", None), "device", "")),
    }
    attributes.update(run_attributes(trainer))
    span = tel.tracer.start_span(sc.PHASE_TRAIN, attributes=attributes)
    previous = inject_environment(span, os.environ)
    if tel.output is not None:  # workers write their files beside this one
        previous.setdefault("OTEL_CALLBACKS_DIR", os.environ.get("OTEL_CALLBACKS_DIR"))
        os.environ["OTEL_CALLBACKS_DIR"] = str(tel.output.directory.resolve())
    key = id(trainer)
    _launches[key] = (span, previous)
    tel.on_shutdown(lambda reason: _end(key, None, abandoned=reason))


def _end(key: int, error: BaseException | None, abandoned: str | None = None) -> None:
    """The launch's end: the workers' exit, an exception, or the telemetry shutting down while the
    workers run (``abandoned``: its reason; SIGTERM: torch.distributed.run forwards it to them)."""
    launch = _launches.pop(key, None)
    if launch is None:
        return
    span, previous = launch
    restore_environment(os.environ, previous)
    if abandoned is not None:
        span.set_status(Status(StatusCode.ERROR, abandoned))
    elif isinstance(error, subprocess.CalledProcessError):
        span.set_attribute(sc.ATTR_EXIT_CODE, error.returncode)
        span.set_status(Status(StatusCode.ERROR, f"the workers exited with status {error.returncode}"))
    elif error is not None:
        span.set_attribute(sc.ATTR_ERROR_TYPE, type(error).__qualname__)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__qualname__}: {error}"))
    else:
        span.set_attribute(sc.ATTR_EXIT_CODE, 0)
    span.end()
