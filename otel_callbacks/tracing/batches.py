"""Which batches get spans, and the training batch's short path for those that do not.

Ultralytics fires two events per training batch, thousands of times an epoch. An unsampled batch
only notes its start and end in its epoch's lane (:class:`~.engines.BatchCache`); the
durations, dataloader waits, the table's totals and the relative slow threshold are worked out from
those stamps in bulk: after every batch while the threshold's window fills, then every quarter
window, and before any other firing or the run's end, so that whatever reads them (an epoch's end,
the timing table) sees every batch. A metric reader that collects mid-epoch gets the latest few
batches at its next collection. Sampled batches, and anything unusual (no epoch open, a batch left
open), take the generic phase path instead.

Once an unsampled batch has started here, the lane is *armed* (``EngineState.armed``): until any
other firing, a batch's two firings are one for the wrapper. The engine's ``event`` and ``closer``
are the end event (``LANE_END``), so the wrapper runs the end event's callbacks without entering
and calls ``leave``, which stamps its end, after each of them; only the start event's callbacks
enter, and the tracker's ``enter`` counts the batch before (the one whose end was stamped after its
start) in a few comparisons and appends, up to the next index the sampling rule picks
(``Settings.next_sampled_batch``), where this module decides again. Leaving the lane
(:meth:`_disarm`) hands a batch that ran its end event to the generic path, which counts it.
"""

from __future__ import annotations

from operator import sub
from typing import TYPE_CHECKING

from .. import semconv as sc
from ..hooks import BATCH_EVENTS, BATCH_START_EVENTS
from .engines import BatchCache, EngineState, Phase
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

    def _sample(self, state: EngineState, event: str) -> None:
        """Spans for this firing? Batch events by their batch's index, all within the run's budget."""
        run = state.run
        within_budget = run is None or run.spans < run.span_limit
        if event in BATCH_START_EVENTS:
            state.batch_index += 1
            state.sampled = within_budget and self._settings.samples_batch(state.batch_index)
        elif event not in BATCH_EVENTS:  # the other batch events follow their batch's start
            state.sampled = within_budget
        state.threshold_ns = state.batch_slow_ns if event in BATCH_EVENTS else state.slow_ns

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
        within_budget = run.spans < run.span_limit
        if within_budget and self._settings.samples_batch(index):
            return False  # sampled: the generic path opens it with spans
        if not within_budget and cache.cut_at is None:  # once an epoch: said on its span
            cache.cut_at = index
            if cache.parent.span is not None:
                cache.parent.span.set_attribute(sc.ATTR_SAMPLING_CUT_AT, index)
        state.batch_index = index
        state.sampled = False
        state.threshold_ns = state.batch_slow_ns
        if cache.stamps:  # each batch of the lane waits from the end before it: a new lane starts
            self._settle(state)
        idle = cache.idle
        idle.start = now
        # 0: no wait to count (the batch does not follow a batch or its epoch's start).
        cache.wait_start = state.last_end if state.previous in WAIT_AFTER else 0
        stack.append(idle)
        state.context = idle.context
        # Until another firing: the tracker's shortest path, up to the next sampled batch (the
        # generic path checks the budget again there).
        cache.next_sampled = self._settings.next_sampled_batch(index) if within_budget else -1
        state.armed = cache
        return True

    def _disarm(self, state: EngineState) -> None:
        """Leave the armed lane: a batch that ran its end event is counted as the generic path
        counts one (pending, from its last callback's end); one still at its start stays open."""
        if state.last_end > state.armed.idle.start:
            state.pending = sc.PHASE_BATCH
        else:
            state.event = "on_train_batch_start"
        state.armed = state.closer = None

    def _unsampled_batch_end(self, state: EngineState, cache: BatchCache, end: int) -> None:
        stamps = cache.stamps
        stamps.append(state.stack.pop().start)
        stamps.append(end)
        if len(stamps) >= cache.settle_at:
            self._settle(state)
            state.threshold_ns = state.batch_slow_ns  # for the lane's next batch

    def _settle(self, state: EngineState) -> None:
        """Work out the lane's batches: metric buffers, the table's totals, what the epoch's
        children cover, and the relative threshold."""
        cache = state.batch_cache
        if cache is None or not cache.stamps:
            return
        starts, ends = cache.stamps[0::2], cache.stamps[1::2]
        cache.stamps.clear()
        batches = list(map(sub, ends, starts))
        waits = list(map(sub, starts[1:], ends))  # from the end before each
        if cache.wait_start:
            waits.append(starts[0] - cache.wait_start)
        cache.wait_start = ends[-1]  # the lane's next batch waits from there
        cache.parent.covered += self._count(batches, cache.batch_buffer, cache.batch_totals)
        cache.parent.covered += self._count(waits, cache.wait_buffer, cache.wait_totals)
        times = state.batch_times
        times.extend(batches)
        update_relative_threshold(state, self._settings.slow_batch_fraction, self._limits)
        cache.settle_at = 2 if len(times) < self._limits.batch_window else 2 * self._settle_every

    def _count(self, values: list[int], buffer: list[int], totals: list[int]) -> int:
        """Durations into a phase's metric buffer and the table's totals; their sum."""
        total = sum(values)
        buffer.extend(values)
        if len(buffer) >= self._limits.buffer_limit:
            self._telemetry.phase_duration.fold(buffer)
        totals[0] += len(values)
        totals[1] += total
        return total

    def _cut_short(self, batch: Phase) -> None:
        """A lane batch finished by the generic path (it never ran its end event): its wait for
        the dataloader, which the lane counts at a batch's end, the generic path at its start."""
        cache = batch.lane
        since = cache.stamps[-1] if cache.stamps else cache.wait_start
        if since:
            cache.parent.covered += self._count([batch.start - since], cache.wait_buffer, cache.wait_totals)

    def _batch_time(self, state: EngineState, elapsed: int) -> None:
        """Keep the time of a batch that took the generic path; the relative threshold follows
        while the window fills, then every quarter window."""
        times = state.batch_times
        times.append(elapsed)
        if len(times) < self._limits.batch_window or not state.batch_index % self._settle_every:
            update_relative_threshold(state, self._settings.slow_batch_fraction, self._limits)
