"""Tracing: the callback wrapper and the phase tracker, which turn calls into spans, durations and
the run's timing table. The wrapper talks to the tracker through one narrow interface."""

from . import watchdog
from .calibration import fast_path_costs
from .tracker import PhaseTracker
from .trackers import tracker_for
from .wrapper import InstrumentedCallback, instrument

PhaseTracker.calibrate = staticmethod(fast_path_costs)
watchdog.watch_calls((InstrumentedCallback.__call__, InstrumentedCallback._call_with_span), "wrapped(engine)")

__all__ = ["InstrumentedCallback", "PhaseTracker", "instrument", "tracker_for"]


def current_tracker() -> PhaseTracker | None:
    """The tracker of the active telemetry (its ``last_report`` is the last table made, and
    ``last_overhead_ns`` the last run's own time, a quiet one's too)."""
    from ..telemetry import current

    tel = current()
    return tracker_for(tel) if tel is not None else None
