"""The training batch's short path: an unsampled batch is a few appends and comparisons.

Ultralytics fires two events per training batch, thousands of times an epoch. What every unsampled
batch of an epoch shares is looked up once (:class:`~.engines.BatchCache`); sampled batches, and
anything unusual (no epoch open, a batch left open), take the generic phase path instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import semconv as sc
from .engines import BatchCache, EngineState
from .slow import update_relative_threshold

if TYPE_CHECKING:
    from typing import Any

# A training batch's wait for the dataloader starts after the previous batch or the epoch's start.
WAIT_AFTER = ("on_train_batch_end", "on_train_epoch_start")


class UnsampledBatches:
    """Mixed into the phase machine; uses its tracker's buffers, settings and limits."""

    _limits: Any
    _settings: Any
    _telemetry: Any

    def _unsampled_batch_start(self, state: EngineState, now: int) -> bool:
        """Open an unsampled batch on its epoch; False (nothing changed) where the generic path
        must run: a sampled batch, no epoch on top, a batch left open."""
        run, stack = state.run, state.stack
        if run is None or not stack:
            return False
        cache = state.batch_cache
        if cache is None or cache.parent is not stack[-1] or cache.run is not run:
            if stack[-1].name != sc.PHASE_EPOCH:
                return False
            cache = state.batch_cache = BatchCache(
                stack[-1],
                run,
                self._phase_buffer(sc.PHASE_BATCH, run.mode),
                self._phase_buffer(sc.PHASE_DATALOADER, run.mode),
            )
        index = state.batch_index + 1
        if run.spans < self._max_spans and (
            index < self._spans_first or (self._spans_every and not index % self._spans_every)
        ):
            return False  # sampled: the generic path (Settings.samples_batch) opens it with spans
        state.batch_index = index
        state.sampled = False
        state.threshold_ns = state.batch_slow_ns
        if state.last_end and state.previous in WAIT_AFTER:
            wait = now - state.last_end
            buffer, totals = cache.wait_buffer, cache.wait_totals
            buffer.append(wait)
            if len(buffer) >= self._limits.buffer_limit:
                self._telemetry.phase_duration.fold(buffer)
            totals[0] += 1
            totals[1] += wait
            cache.parent.covered += wait
        idle = cache.idle
        idle.start = now
        stack.append(idle)
        state.context = idle.context
        return True

    def _unsampled_batch_end(self, state: EngineState, cache: BatchCache, end: int) -> None:
        elapsed = end - state.stack.pop().start
        buffer, totals = cache.batch_buffer, cache.batch_totals
        buffer.append(elapsed)
        if len(buffer) >= self._limits.buffer_limit:
            self._telemetry.phase_duration.fold(buffer)
        totals[0] += 1
        totals[1] += elapsed
        cache.parent.covered += elapsed
        self._batch_time(state, elapsed)

    def _batch_time(self, state: EngineState, elapsed: int) -> None:
        """Keep a batch's time; the relative threshold follows while the window fills, then every
        quarter window."""
        times = state.batch_times
        times.append(elapsed)
        if len(times) < self._limits.batch_window or not state.batch_index % self._rethreshold_every:
            update_relative_threshold(state, self._settings.slow_batch_fraction, self._limits)
