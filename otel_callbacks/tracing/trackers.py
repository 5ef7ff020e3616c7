"""One phase tracker per configured telemetry, made on first use."""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any

from .tracker import PhaseTracker

if TYPE_CHECKING:
    from ..telemetry.providers import Telemetry

_trackers: weakref.WeakKeyDictionary[Any, PhaseTracker] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def tracker_for(tel: Telemetry) -> PhaseTracker:
    """The tracker of a configured telemetry; it closes what is open when that telemetry shuts down."""
    with _lock:
        tracker = _trackers.get(tel)
        if tracker is None:
            tracker = _trackers[tel] = PhaseTracker(tel, calibrate=PhaseTracker.calibrate)
            tel.on_shutdown(tracker.close_all)
        return tracker
