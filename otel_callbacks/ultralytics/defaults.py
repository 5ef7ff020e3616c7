"""Ultralytics' own callbacks functions and hooks, and which of them the drop-in replaced: the
one module that owns that record."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

NAMES = ("get_default_callbacks", "add_integration_callbacks")
lock = threading.Lock()
originals: dict[tuple[Any, str], Callable[..., Any]] = {}
"""Ultralytics' functions that install() replaced, by (module, name); empty while not installed."""


def modules() -> tuple[Any, Any]:
    import ultralytics.utils.callbacks as package
    from ultralytics.utils.callbacks import base

    return package, base


def original(name: str) -> Callable[..., Any] | None:
    """Ultralytics' own function ``name`` (from ``base``), whether or not we are installed."""
    try:
        _, base = modules()
    except ImportError:
        return None
    with lock:
        return originals.get((base, name), getattr(base, name))


def default_callbacks() -> dict[str, list[Callable[..., Any]]] | None:
    """Ultralytics' ``default_callbacks`` while installed (read at call time: the trainer swaps it
    around ``check_amp``), so lists Ultralytics resets compare equal to ours."""
    if not originals:
        return None
    package, _ = modules()
    return package.default_callbacks
