"""A run's bookkeeping: per-callback statistics and phase totals, what its timing table needs."""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import semconv as sc
from ..config import Limits
from .clock import perf_ns
from .report import Report

if TYPE_CHECKING:
    import weakref

    from ..telemetry.histograms import BufferedHistogram
    from ..telemetry.spans import DeferredRoot
    from .engines import EngineState


_BELOW_ONE = 1.0 - 2**-53


class CallbackStats:
    """Calls, total and a p95 sample of one callback in one run, fed from the drained buffers.

    The sample is a uniform reservoir (Li's Algorithm L: a few draws per replacement, not one per
    value) drawn from a private generator with a fixed seed: the global ``random`` that Ultralytics
    seeds for augmentation is never touched, and the same durations always give the same table.
    """

    __slots__ = ("_next", "_random", "_w", "calls", "errors", "reservoir", "size", "total_ns")

    def __init__(self, reservoir_size: int = Limits.reservoir_size) -> None:
        self.size = max(1, reservoir_size)
        self.calls = 0
        self.errors = 0
        self.total_ns = 0
        self.reservoir: list[int] = []
        self._random: random.Random | None = None
        self._w = 0.0
        self._next = sys.maxsize  # 0-based index of the next value that enters the full reservoir

    def add(self, values_ns: Sequence[int], failed: bool = False) -> None:
        count = len(values_ns)
        if not count:
            return
        first = self.calls
        self.calls = calls = first + count
        self.total_ns += sum(values_ns)
        if failed:
            self.errors += count
        room = self.size - len(self.reservoir)
        if room > 0:
            self.reservoir.extend(values_ns[:room])
            if len(self.reservoir) < self.size:
                return
            self._random = random.Random(self.size)
        elif self._next >= calls:
            return
        # Li's Algorithm L, inlined: it runs on the collecting thread for every drained chunk.
        reservoir, size, nxt, w = self.reservoir, self.size, self._next, self._w
        uniform, log, log1p, root = self._random.random, math.log, math.log1p, 1.0 / size
        if room > 0:  # just full: the first skip, past the value that filled it (1 - random() > 0)
            w = min((1.0 - uniform()) ** root, _BELOW_ONE)  # below 1 from here on
            nxt = size + int(log(1.0 - uniform()) / log1p(-w))
        while nxt < calls:
            # A uniform slot: 53 random bits scaled (randrange costs ten times more).
            reservoir[int(uniform() * size)] = values_ns[nxt - first]
            w *= (1.0 - uniform()) ** root
            nxt += int(log(1.0 - uniform()) / log1p(-w)) + 1  # values passed over, plus one
        self._next, self._w = nxt, w

    @property
    def mean_ns(self) -> float:
        return self.total_ns / self.calls if self.calls else 0.0

    @property
    def p95_ns(self) -> int:
        """Nearest-rank 95th percentile."""
        if not self.reservoir:
            return 0
        ordered = sorted(self.reservoir)
        return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


class Run:
    """One train / val / predict / export run: what its timing table and its buffers need."""

    def __init__(
        self,
        mode: str,
        durations: BufferedHistogram,
        limits: Limits,
        max_spans: int,
        implicit: bool = False,
    ) -> None:
        self.mode = mode
        self.limits = limits
        self.implicit = implicit  # callbacks fired outside a run's start and end events: no table
        self.start = perf_ns()
        self.durations = durations
        self.callbacks: dict[tuple[str, str], CallbackStats] = {}
        # By attribute set (and error.type): wrappers of the same callback and event share a list, as
        # they share the histogram's point, and no key outlives what it names (an id() could).
        self.buffers: dict[tuple[Any, str | None], list[int]] = {}
        self.phases: dict[tuple[str, ...], list[int]] = {}  # path under the run's phase -> count, ns
        self.warned: set[tuple[str, str]] = set()
        self.failures: list[str] = []
        self.failures_dropped = 0
        self.raised = False  # a callback raised, or the training crashed: the root's status is set
        self.exception: BaseException | None = None  # the one recorded on the root
        self.outer_exception: BaseException | None = None  # being handled where the run started
        self.planned_epochs: int | None = None
        self.epoch_marks: Any = None  # verdicts.Times where the open epoch started
        self.spans = 0  # spans made for this run: sampled ones stop at span_limit
        self.max_spans = max_spans  # Settings.max_spans
        self.span_limit = max_spans  # where sampled spans stop: the current epoch's share (plan_epoch)
        self.span_overhead_ns = 0
        self.tracking_ns = 0  # opening and closing phases (the run's own start included)
        self.closing_since: int | None = None  # the close that ends the run began (perf_ns)
        self.span_calls = 0
        self.worst_overhead_ns = 0  # the costliest single call with a span, telemetry only
        self.members: list[weakref.ref[EngineState]] = []  # validators that joined this run
        self.deferred: DeferredRoot | None = None  # a root whose trace a slow or failed call keeps

    def plan_epoch(self, epoch: int | None) -> None:
        """Before epoch ``epoch`` (from 1) of a training with planned epochs: its share of the spans
        the run has left, shared equally by the epochs left and the final evaluation, so the last
        epochs keep their sampled batches as the first ones do (first come, first served left the
        last third of a long training without any)."""
        if not isinstance(self.planned_epochs, int) or epoch is None:
            return
        left = max(self.planned_epochs - epoch + 1, 1) + 1  # this epoch, those after, the final one
        self.span_limit = self.spans + max(self.max_spans - self.spans, 0) // left

    def epoch_ended(self) -> None:
        """The epoch's share ends with it: what follows (the final evaluation) may use what is left."""
        self.span_limit = self.max_spans

    def buffer(
        self, binding: Any, error_type: str | None, pool: dict[tuple[Any, str | None], list[int]]
    ) -> list[int]:
        """The list one callback's durations in this run go to (per ``error.type``): its engine's
        list for that callback from ``pool``, handed over to this run, or a new one put there."""
        key = (binding.key, error_type)
        values = self.buffers.get(key)
        if values is None:
            event, callback = binding.key[:2]  # the attributes' first two: event, callback
            stats = self.callbacks.get((event, callback))
            if stats is None:
                stats = self.callbacks[event, callback] = CallbackStats(self.limits.reservoir_size)
            sink = _FailedSink(stats) if error_type else stats
            values = pool.get(key)
            if values is not None:
                self.durations.hand_over((values,), sink)
            else:
                values = pool[key] = duration_list(self.durations, binding, error_type, sink)
            self.buffers[key] = values
        return values

    def fail(self, reason: str) -> None:
        if len(self.failures) < self.limits.failures:
            self.failures.append(reason)
        else:
            self.failures_dropped += 1

    def add_phase(self, path: tuple[str, ...], elapsed_ns: int) -> None:
        totals = self.phases.setdefault(path, [0, 0])
        totals[0] += 1
        totals[1] += elapsed_ns

    def finish(self, end: int, fast_call_ns: float | None) -> Report:
        """The run's table; its overhead unknown (None) where calls made no span and the cost of
        such a call was never measured (its telemetry replaced while the run was open)."""
        self.durations.hand_over(self.buffers.values(), None)  # the lists stay with their engines
        self.buffers.clear()
        calls = sum(stats.calls for stats in self.callbacks.values())
        unsampled = max(0, calls - self.span_calls)
        overhead = None
        if fast_call_ns is not None or not unsampled:
            overhead = self.span_overhead_ns + self.tracking_ns + unsampled * (fast_call_ns or 0.0)
            if self.closing_since is not None:  # closing the run, up to its table
                overhead += perf_ns() - self.closing_since
        return Report(
            self.mode,
            end - self.start,
            self.callbacks,
            {path: totals for path, totals in self.phases.items() if totals[0]},
            overhead,
            self.worst_overhead_ns,
            self.failures,
            self.failures_dropped,
        )


def duration_list(durations: BufferedHistogram, binding: Any, error_type: str | None, sink: Any) -> list[int]:
    """A new list for one callback's durations (those of its failed calls, by ``error.type``)."""
    attributes = binding.attributes
    if error_type is not None:
        attributes = {**attributes, sc.ATTR_ERROR_TYPE: error_type}
    return durations.buffer(attributes, sink)


class _FailedSink:
    __slots__ = ("stats",)

    def __init__(self, stats: CallbackStats) -> None:
        self.stats = stats

    def add(self, values: list[int]) -> None:
        self.stats.add(values, failed=True)
