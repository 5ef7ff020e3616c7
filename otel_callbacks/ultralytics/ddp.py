"""The DDP launch: one trace per multi-GPU training.

In the launching process Ultralytics fires no callback: ``BaseTrainer.train`` calls
``generate_ddp_command``, runs ``torch.distributed.run`` and, in a ``finally``, ``ddp_cleanup``
(DESIGN.md section 2). While installed, those two (as the trainer module holds them) open and end a
``train`` span around the workers' lifetime and hand its context to the workers in ``TRACEPARENT``,
so each rank's run tree is a child of it. The workers' telemetry files land beside the launcher's.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

from .. import semconv as sc
from ..telemetry.failures import attempt
from ..tracing.results import run_attributes
from . import launch

_lock = threading.Lock()
_originals: dict[str, Any] = {}
_launches: dict[int, launch.Launch] = {}  # id(trainer) -> its launch, while the workers run
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
    attempt(_start, trainer)  # the training never depends on its telemetry
    return cmd, file


def ddp_cleanup(trainer: Any, file: str) -> None:
    """Ultralytics' cleanup, then the launch's end, with the workers' exit status."""
    try:
        _originals["ddp_cleanup"](trainer, file)
    finally:
        attempt(_end, id(trainer), sys.exc_info()[1])


def _start(trainer: Any) -> None:
    attributes: dict[str, Any] = {
        sc.ATTR_LAUNCHER: True,
        sc.ATTR_WORLD_SIZE: int(getattr(trainer, "world_size", 0) or 0),
        sc.ATTR_DEVICES: str(getattr(getattr(trainer, "args", None), "device", "")),
        **run_attributes(trainer),
    }
    # No install switch: each worker unpickles the trainer with its instrumented callbacks dict.
    run = launch.start(sc.PHASE_TRAIN, attributes, install=False)
    if run is not None:
        _launches[id(trainer)] = run


def _end(key: int, error: BaseException | None) -> None:
    """The launch's end: the workers' exit or an exception. A telemetry shutting down while the
    workers run ends it with its reason (``launch.py``; SIGTERM: torch.distributed.run forwards it)."""
    run = _launches.pop(key, None)
    if run is None:
        return
    if isinstance(error, subprocess.CalledProcessError):
        failure = f"the workers exited with status {error.returncode}"
        run.end(None, failure, {sc.ATTR_EXIT_CODE: error.returncode})
    else:
        run.end(error, None, None if error is not None else {sc.ATTR_EXIT_CODE: 0})
