"""The Ultralytics drop-in: ``install()`` and ``uninstall()``.

Every engine looks ``get_default_callbacks`` and ``add_integration_callbacks`` up as attributes of
the package ``ultralytics.utils.callbacks`` when it is created, so replacing them there (and in its
``base`` module, for code that imports from it) instruments every Model, trainer, validator,
predictor and exporter created afterwards.
"""

from __future__ import annotations

from ..registry import get_default_callbacks
from . import boundaries, ddp, raytune, sweeps
from .defaults import NAMES, lock, modules, originals
from .integrations import add_integration_callbacks


def install() -> None:
    """Make otel_callbacks the default callbacks of Ultralytics. Idempotent and thread-safe."""
    with lock:
        if originals:
            return
        ours = {
            "get_default_callbacks": get_default_callbacks,
            "add_integration_callbacks": add_integration_callbacks,
        }
        for module in modules():
            for name in NAMES:
                originals[module, name] = getattr(module, name)
                setattr(module, name, ours[name])
    ddp.install()
    boundaries.install()
    sweeps.install()
    raytune.install()


def uninstall() -> None:
    """Restore Ultralytics' own functions exactly. Idempotent and thread-safe."""
    with lock:
        for (module, name), original in originals.items():
            setattr(module, name, original)
        originals.clear()
    ddp.uninstall()
    boundaries.uninstall()
    sweeps.uninstall()
    raytune.uninstall()
