"""What the tracker keeps per engine (trainer, validator, predictor, exporter): small and flat,
because the hot path reads it on every call."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from .. import semconv as sc

if TYPE_CHECKING:
    from opentelemetry.context import Context

    from .quiet_runs import QuietRun
    from .runs import Run
    from .wrapper import InstrumentedCallback

# An armed lane's ``event`` and ``closer`` (see batches.py): its batches' start and end firings are
# one for the wrapper, which runs the end event's callbacks without entering and calls ``leave``
# after each of them (the ``closer`` an event name: every callback of that event leaves); only a
# batch's start enters, and its later callbacks return from ``enter`` at once.
LANE_END = "on_train_batch_end"

# Phases that span a whole run (val only when it is not inside a training).
RUN_PHASES = frozenset({sc.PHASE_TRAIN, sc.PHASE_VAL, sc.PHASE_PREDICT, sc.PHASE_EXPORT})


class Phase:
    """An open phase: its span (None when unsampled), the context its children start in, and its
    path below the run's own phase (``("epoch", "batch")``) for the timing table."""

    __slots__ = ("_children", "context", "covered", "epoch", "lane", "name", "path", "span", "start")

    def __init__(
        self, name: str, span: Any, parent: Context | None, start: int, path: tuple[str, ...]
    ) -> None:
        self.name = name
        self.span = span
        self.context = trace.set_span_in_context(span, parent) if span is not None else parent
        self.start = start
        self.path = path
        self.covered = 0  # ns of it that its child phases and spanned callbacks account for
        self._children: dict[str, tuple[str, ...]] = {}
        self.lane: BatchCache | None = None  # the lane whose unsampled batches this phase times
        self.epoch: int | None = None  # an epoch phase's epoch: the same one again is a restart

    def child(self, name: str) -> tuple[str, ...]:
        """The path of a child phase (memoized: the batch path asks for it on every batch)."""
        path = self._children.get(name)
        if path is None:
            path = self._children[name] = (*self.path, name)
        return path


class BatchCache:
    """What every unsampled training batch of one epoch shares, looked up once per epoch: the
    batch phase reused on the stack (no span, so nothing of it outlives the batch), the metric
    buffers, the run's totals for the timing table, and the lane of batches not yet worked out:
    start and end of each, flat, in perf_counter ns; the first waited for the dataloader from
    ``wait_start`` (0: nothing to count), each next one from the end before it (see ``batches.py``)."""

    __slots__ = (
        "batch_buffer",
        "batch_totals",
        "cut_at",
        "idle",
        "next_sampled",
        "parent",
        "run",
        "settle_at",
        "stamps",
        "wait_buffer",
        "wait_start",
        "wait_totals",
    )

    def __init__(self, parent: Phase, run: Run, batch_buffer: list[int], wait_buffer: list[int]) -> None:
        self.parent, self.run = parent, run
        self.idle = Phase(sc.PHASE_BATCH, None, parent.context, 0, parent.child(sc.PHASE_BATCH))
        self.idle.lane = self
        self.batch_buffer, self.wait_buffer = batch_buffer, wait_buffer
        self.batch_totals = run.phases.setdefault(self.idle.path, [0, 0])
        self.wait_totals = run.phases.setdefault(parent.child(sc.PHASE_DATALOADER), [0, 0])
        self.stamps: list[int] = []
        self.settle_at = 2  # stamps (two a batch) that make the lane worked out
        self.wait_start = 0
        self.next_sampled = -1  # the index of the next batch that gets spans (-1: none)
        self.cut_at: int | None = None  # the batch from which the epoch's span share was spent


class EngineState:
    """The tracker's record of one engine. Only the tracker writes it; the wrapper reads
    ``event``, ``first``, ``closer``, ``sampled``, ``threshold_ns``, ``run`` and ``context``."""

    __slots__ = (
        "__weakref__",
        "armed",
        "batch_cache",
        "batch_index",
        "batch_slow_ns",
        "batch_times",
        "closer",
        "context",
        "durations",
        "epoch_batch",
        "event",
        "first",
        "last_end",
        "parent",
        "pending",
        "previous",
        "quiet",
        "quiet_run",
        "ref",
        "run",
        "sampled",
        "slow_ns",
        "stack",
        "threshold_ns",
        "val_end",
    )

    def __init__(self, ref: Callable[[], Any], slow_ns: int, batch_window: int) -> None:
        self.ref = ref
        self.event: str | None = None
        self.previous: str | None = None  # the event of the firing before this one
        self.first: InstrumentedCallback | None = None  # the callback that opened the firing
        # The last callback of the firing; None: not known (leave after each); LANE_END: an armed
        # lane's (each end callback leaves).
        self.closer: InstrumentedCallback | str | None = None
        self.pending: str | None = None  # the phase that ends with the current firing
        self.batch_index = -1
        self.batch_cache: BatchCache | None = None
        # The lane while its next batches take the tracker's shortest path: set when an unsampled
        # batch starts on it, cleared by any firing but its batches' own, an abort or the run's end.
        self.armed: BatchCache | None = None
        self.sampled = True
        self.slow_ns = slow_ns
        self.batch_slow_ns = slow_ns
        self.threshold_ns = slow_ns  # the slow threshold of the current firing's event
        self.batch_times: deque[int] = deque(maxlen=batch_window)
        self.stack: list[Phase] = []
        self.context: Context | None = None  # the parent of callback spans; None: the caller's
        self.parent: EngineState | None = None  # the trainer a validator works for
        self.run: Run | QuietRun | None = None
        # A quiet predict run (quiet_runs.py): the open one, and the object each of them reuses.
        self.quiet: QuietRun | None = None
        self.quiet_run: QuietRun | None = None
        self.last_end = 0  # perf_counter_ns when the engine's last firing returned
        self.val_end = 0  # a trainer's: when its validator's last on_val_end returned
        self.epoch_batch: Any = None  # a trainer's batch size when its current epoch started
        # Its callbacks' duration lists, each handed from one of its runs to the next (Run.buffer).
        self.durations: dict[tuple[Any, str | None], list[int]] = {}

    @property
    def epoch(self) -> int | None:
        """The epoch as Ultralytics shows it (``1/3``) and results.csv counts it: from 1."""
        engine = self.parent.ref() if self.parent is not None else self.ref()
        epoch = getattr(engine, "epoch", None)
        return epoch + 1 if isinstance(epoch, int) else None

    def in_lane_batch(self) -> bool:
        """Whether an unsampled batch of the epoch's lane is open (its idle phase on top)."""
        cache = self.batch_cache
        return cache is not None and bool(self.stack) and self.stack[-1] is cache.idle

    def top(self, name: str) -> bool:
        return bool(self.stack) and self.stack[-1].name == name

    def top_phase(self) -> Phase | None:
        """The innermost open phase, a validator's trainer's when it has none of its own."""
        if self.stack:
            return self.stack[-1]
        return self.parent.stack[-1] if self.parent is not None and self.parent.stack else None

    def innermost(self) -> Context | None:
        """The context of the innermost open phase: the parent of what starts now."""
        return self.stack[-1].context if self.stack else None

    def path_of(self, name: str) -> tuple[str, ...]:
        """The table path of a phase that starts now (a validator's continues its trainer's)."""
        if self.stack:
            return self.stack[-1].child(name)
        if self.parent is not None and self.parent.stack:
            return self.parent.stack[-1].child(name)
        return () if name in RUN_PHASES else (name,)
