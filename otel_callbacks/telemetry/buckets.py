"""Observations in integer nanoseconds counted into the contract's buckets exactly as the SDK counts
seconds: the batches that buffered histograms (``histograms.py``) fold values into."""

from __future__ import annotations

import math
import time
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from itertools import compress, repeat
from operator import ge, lt


def ns_thresholds(bounds: Sequence[float]) -> tuple[int, ...]:
    """For each bound b, the least integer ns with ns / 1e9 > b: then bucketing an integer with
    ``bisect_right(thresholds, ns)`` gives exactly the SDK's ``bisect_left(bounds, ns / 1e9)``."""
    thresholds = []
    for bound in bounds:
        ns = math.floor(bound * 1e9)
        while ns / 1e9 > bound:
            ns -= 1
        while ns / 1e9 <= bound:
            ns += 1
        thresholds.append(ns)
    return tuple(thresholds)


class Batch:
    """Bucket counts and per-bucket sums of observations in integer ns, bucketed exactly as the SDK
    does: fixed size however many values it holds, and enough to replay them through ``record``
    with the same counts, sum, min and max (see :meth:`replay_ns`)."""

    __slots__ = ("counts", "first_ns", "max_ns", "min_ns", "sums")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.sums = [0] * size
        self.min_ns: int | None = None
        self.max_ns = 0
        self.first_ns = time.time_ns()  # a bound on when its first value was measured (wall clock)

    @property
    def count(self) -> int:
        return sum(self.counts)

    @property
    def sum(self) -> float:
        return sum(self.sums) / 1e9

    @property
    def min(self) -> float:
        return math.inf if self.min_ns is None else self.min_ns / 1e9

    @property
    def max(self) -> float:
        return -math.inf if self.min_ns is None else self.max_ns / 1e9

    def add(self, values_ns: Sequence[int], thresholds: tuple[int, ...]) -> None:
        least, most = min(values_ns), max(values_ns)
        self.min_ns = least if self.min_ns is None else min(self.min_ns, least)
        self.max_ns = max(self.max_ns, most)
        index = bisect_right(thresholds, values_ns[len(values_ns) // 2])  # likely the busiest bucket
        below = thresholds[index - 1] if index else least
        above = thresholds[index] if index < len(thresholds) else math.inf
        # Only the values outside that bucket are sorted: two passes in C instead of a sort of all.
        outside: list[int] = []
        if least < below:
            outside += compress(values_ns, map(lt, values_ns, repeat(below)))
        if most >= above:
            outside += compress(values_ns, map(ge, values_ns, repeat(above)))
        self.counts[index] += len(values_ns) - len(outside)
        self.sums[index] += sum(values_ns) - sum(outside)
        if not outside:
            return
        outside.sort()
        low = 0
        for index, threshold in enumerate((*thresholds, math.inf)):
            high = bisect_left(outside, threshold, low)
            if high > low:
                self.counts[index] += high - low
                self.sums[index] += sum(outside[low:high])
                low = high

    def take_min(self, thresholds: tuple[int, ...]) -> float:
        """Take out one observation equal to the minimum and return it in seconds."""
        index = bisect_right(thresholds, self.min_ns)
        self.counts[index] -= 1
        self.sums[index] -= self.min_ns
        return self.min_ns / 1e9

    def replay_ns(self, thresholds: tuple[int, ...]) -> Iterator[int]:
        """Integers whose buckets, sum, min and max are exactly this batch's.

        The extremes themselves, then each bucket's remaining sum spread over its remaining count as
        evenly as integers allow: every such value lies between two values of that bucket.
        """
        counts, sums = list(self.counts), list(self.sums)
        extremes = (self.min_ns, self.max_ns) if self.count > 1 else (self.min_ns,) if self.count else ()
        for ns in extremes:
            index = bisect_right(thresholds, ns)
            counts[index] -= 1
            sums[index] -= ns
            yield ns
        for count, total in zip(counts, sums, strict=True):
            if count:
                quotient, remainder = divmod(total, count)
                yield from repeat(quotient + 1, remainder)
                yield from repeat(quotient, count - remainder)
