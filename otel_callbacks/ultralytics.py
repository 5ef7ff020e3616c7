"""The Ultralytics drop-in: ``install()`` and ``uninstall()``.

Every engine looks ``get_default_callbacks`` and ``add_integration_callbacks`` up as attributes of
the package ``ultralytics.utils.callbacks`` when it is created, so replacing them there (and in its
``base`` module, for code that imports from it) instruments every Model, trainer, validator,
predictor and exporter created afterwards.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .integrations import add_integration_callbacks
from .registry import get_default_callbacks

_NAMES = ("get_default_callbacks", "add_integration_callbacks")
_lock = threading.Lock()
_originals: dict[tuple[Any, str], Callable[..., Any]] = {}


def _modules() -> tuple[Any, Any]:
    import ultralytics.utils.callbacks as package
    from ultralytics.utils.callbacks import base

    return package, base


def install() -> None:
    """Make otel_callbacks the default callbacks of Ultralytics. Idempotent and thread-safe."""
    with _lock:
        if _originals:
            return
        ours = {
            "get_default_callbacks": get_default_callbacks,
            "add_integration_callbacks": add_integration_callbacks,
        }
        for module in _modules():
            for name in _NAMES:
                _originals[module, name] = getattr(module, name)
                setattr(module, name, ours[name])


def uninstall() -> None:
    """Restore Ultralytics' own functions exactly. Idempotent and thread-safe."""
    with _lock:
        for (module, name), original in _originals.items():
            setattr(module, name, original)
        _originals.clear()


def original(name: str) -> Callable[..., Any] | None:
    """Ultralytics' own function ``name`` (from ``base``), whether or not we are installed."""
    try:
        _, base = _modules()
    except ImportError:
        return None
    with _lock:
        return _originals.get((base, name), getattr(base, name))


def default_callbacks() -> dict[str, list[Callable[..., Any]]] | None:
    """Ultralytics' ``default_callbacks`` while installed (read at call time: the trainer swaps it
    around ``check_amp``), so lists Ultralytics resets compare equal to ours."""
    if not _originals:
        return None
    package, _ = _modules()
    return package.default_callbacks
