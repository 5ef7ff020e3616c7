"""Gaps that two hooks bound, as phases of their own: the time between one firing's end and the
next firing's start, named by what Ultralytics 8.4's trainer does there (DESIGN.md section 2).

They are closed phases (start and end known when the second hook fires), children of the phase
that holds both hooks, so that a phase's children explain it in a trace UI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import semconv as sc
from .clock import wall

if TYPE_CHECKING:
    from .engines import EngineState, Phase

# (the trainer side's previous event, the event firing now) -> the phase between them.
TRAINER_GAPS = {
    ("on_val_end", "on_model_save"): sc.PHASE_CHECKPOINT,
    ("on_train_epoch_end", "on_model_save"): sc.PHASE_CHECKPOINT,  # no validation this epoch
    ("on_fit_epoch_end", "on_train_epoch_start"): sc.PHASE_CLEAR_MEMORY,
    ("on_fit_epoch_end", "on_train_end"): sc.PHASE_FINALIZE,
    ("on_train_end", "teardown"): sc.PHASE_CLEANUP,
}


class Gaps:
    """Mixed into the phase machine; uses its tracker's tracer, budget, settings and phase recording."""

    _tracer: Any
    _max_spans: int
    _settings: Any

    def _trainer_gap(self, state: EngineState, event: str, now: int) -> None:
        """At a trainer firing's start: the gap since the trainer side's previous firing, if the
        pair of hooks bounds one (its validator's on_val_end counts as the trainer side's)."""
        previous, start = state.previous, state.last_end
        if state.val_end > start:
            previous, start = "on_val_end", state.val_end
        name = TRAINER_GAPS.get((previous, event))
        if name is not None and start and state.stack:
            self._gap(state, name, start, now, state.stack[-1])

    def _gap(self, state: EngineState, name: str, start: int, end: int, parent: Phase) -> None:
        """A gap phase; one shorter than ``gap_span_min`` gets no span and stays in its parent's
        untraced time (it is counted in the metrics all the same)."""
        spanned = end - start >= self._settings.gap_span_min * 1e9
        self._closed_phase(state, name, start, end, parent, spanned, covers=spanned)

    def _closed_phase(
        self,
        state: EngineState,
        name: str,
        start: int,
        end: int,
        parent: Phase | None,
        spanned: bool = True,
        covers: bool = True,
        **attributes: Any,
    ) -> None:
        """A phase whose start and end are both past: its duration, and its span (if ``spanned``)
        within the budget; ``covers``: its time is its parent's traced time."""
        elapsed = end - start
        path = parent.child(name) if parent is not None else (name,)
        self._record_phase(state, name, path, elapsed)
        run = state.run
        if parent is not None and covers:
            parent.covered += elapsed
        if not spanned or run is None or run.spans >= self._max_spans:
            return
        attributes[sc.ATTR_PHASE] = name
        context = parent.context if parent is not None else None
        span = self._tracer.start_span(name, context=context, attributes=attributes, start_time=wall(start))
        span.end(end_time=wall(end))
        run.spans += 1
