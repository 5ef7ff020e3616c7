"""Per-engine state fed by the wrapped callbacks: which event is firing, which batch, sampled or not.

Engines (trainer, validator, predictor, exporter) are tracked by identity and weakly referenced,
so no engine is kept alive by its telemetry. A *firing* is one ``run_callbacks(event)``: the
callbacks of one event run back to back, so a firing starts when the event changes or when the
callback that opened the current firing runs again.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any

from .hooks import BATCH_START_EVENTS

if TYPE_CHECKING:
    from opentelemetry.context import Context

    from .telemetry import Telemetry
    from .timing import InstrumentedCallback

# Events that start a loop whose batches are counted from 0.
_LOOP_START_EVENTS = frozenset({"on_train_epoch_start", "on_val_start", "on_predict_start"})


class EngineState:
    """What the hot path reads about one engine: kept small and flat on purpose."""

    __slots__ = (
        "__weakref__",
        "batch_index",
        "context",
        "event",
        "first",
        "ref",
        "sampled",
        "slow_ns",
        "warned",
    )

    def __init__(self, ref: Any, slow_ns: int) -> None:
        self.ref = ref
        self.event: str | None = None
        self.first: InstrumentedCallback | None = None  # the callback that opened the firing
        self.batch_index = -1
        self.sampled = True
        self.slow_ns = slow_ns
        self.context: Context | None = None  # the parent of callback spans; None: the caller's
        self.warned: set[tuple[str, str]] = set()

    @property
    def engine(self) -> Any:
        return self.ref()

    @property
    def epoch(self) -> int | None:
        epoch = getattr(self.ref(), "epoch", None)
        return epoch if isinstance(epoch, int) else None


class PhaseTracker:
    """Maps engines to their :class:`EngineState` and moves the state on each new firing."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry
        self._settings = telemetry.settings
        self._states: dict[int, EngineState] = {}
        self._lock = threading.Lock()
        self._anonymous = EngineState(lambda: None, telemetry.slow_ns)

    def enter(self, engine: Any, callback: InstrumentedCallback) -> EngineState:
        """Called by every wrapped callback before it runs; returns its engine's state."""
        state = self._states.get(id(engine))
        if state is None:  # a dead engine's id may be reused: its weakref callback removed it
            state = self._track(engine)
        if callback.event != state.event or callback is state.first:
            self._fire(state, callback)
        return state

    def _track(self, engine: Any) -> EngineState:
        key = id(engine)
        states = self._states
        try:
            ref = weakref.ref(engine, lambda _, key=key: states.pop(key, None))
        except TypeError:  # None, or an engine that cannot be weakly referenced
            return self._anonymous
        state = EngineState(ref, self._telemetry.slow_ns)
        with self._lock:
            states[key] = state
        return state

    def _fire(self, state: EngineState, callback: InstrumentedCallback) -> None:
        state.event = event = callback.event
        state.first = callback
        if event in _LOOP_START_EVENTS:
            state.batch_index = -1
        elif event in BATCH_START_EVENTS:
            state.batch_index += 1
            state.sampled = self._settings.samples_batch(state.batch_index)
