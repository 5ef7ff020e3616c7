"""What an engine does between two firings, and when that has gone on far too long.

Between two firings an engine runs a batch, waits for its dataloader, or is inside a phase with no
hook (setup's dataset caching, a checkpoint write, the final evaluation's stripping). The tracker
records when each firing ends anyway; the watchdog reads that here, on its own thread, so the hot
path does nothing for it. A training's batch or wait has stalled past ``Settings.stall_factor``
times its loop's recent p99 batch time (never under ``stall_min``); anything else past
``stall_phase``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import semconv as sc
from .batches import WAIT_AFTER

if TYPE_CHECKING:
    from .engines import EngineState, Phase

_BATCHES = frozenset({sc.PHASE_BATCH, sc.PHASE_VAL_BATCH, sc.PHASE_PREDICT_BATCH})
# Firings after which a loop waits for its next batch.
_WAITS_AFTER = frozenset(
    {*WAIT_AFTER, "on_val_start", "on_val_batch_end", "on_predict_start", "on_predict_batch_end"}
)


class Activity(NamedTuple):
    """What an engine with no callback running is doing (a phase's name; ``dataloader`` for a wait for
    the next batch), since when (perf ns), in which run and phase: read once, as its thread moves on."""

    what: str
    since: int
    run: Any
    phase: Phase


def activity(state: EngineState) -> Activity | None:
    """What an engine is doing between two firings; None where no traced run is open."""
    run, top, lane = state.run, state.stack[-1:], state.armed
    if run is None or not top or state.quiet is not None:
        return None
    phase = top[0]
    if lane is not None:  # an unsampled batch's start and end are stamps of its lane (batches.py)
        started, ended = lane.idle.start, state.last_end
        if ended > started:
            return Activity(sc.PHASE_DATALOADER, ended, run, phase)
        return Activity(sc.PHASE_BATCH, started, run, phase)
    since = max(state.last_end, phase.start)
    if phase.name not in _BATCHES and state.event in _WAITS_AFTER:
        return Activity(sc.PHASE_DATALOADER, since, run, phase)
    return Activity(phase.name, since, run, phase)


def bound_ns(state: EngineState, doing: Activity, settings: Any) -> int:
    """How long what an engine does may last before it has stalled. Only a training's loop keeps its
    batch times (a validation's and a predict loop's are held to the phase bound: between a predict
    loop's batches, a ``stream=True`` caller does its own work with each result)."""
    if doing.what in (sc.PHASE_DATALOADER, sc.PHASE_BATCH) and doing.run.mode == sc.MODE_TRAIN:
        times = _recent(state)
        if len(times) >= settings.limits.batch_min:
            p99 = sorted(times)[math.ceil(0.99 * len(times)) - 1]
            return int(max(settings.stall_min * 1e9, settings.stall_factor * p99))
    return int(settings.stall_phase * 1e9)


def _recent(state: EngineState) -> tuple[int, ...]:
    for _ in range(3):  # the engine's thread may append meanwhile
        try:
            return tuple(state.batch_times)
        except RuntimeError:
            continue
    return ()


def stall_attributes(state: EngineState, doing: Activity) -> dict[str, Any]:
    """A stalled engine's stall span's attributes: what it does, its mode, epoch and batch."""
    attributes: dict[str, Any] = {sc.ATTR_PHASE: doing.what, sc.ATTR_MODE: doing.run.mode}
    epoch = state.epoch
    if epoch is not None:
        attributes[sc.ATTR_EPOCH] = epoch
    if doing.what == sc.PHASE_DATALOADER or doing.what in _BATCHES:  # a wait is for the next batch
        index = state.batch_index + (doing.what == sc.PHASE_DATALOADER)
        attributes[sc.ATTR_BATCH_INDEX] = max(index, 0)
    return attributes
