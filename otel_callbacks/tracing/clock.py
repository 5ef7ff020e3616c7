"""One clock for every span: ``perf_counter_ns`` readings turned into wall-clock times."""

from __future__ import annotations

import time

perf_ns = time.perf_counter_ns

_offset = time.time_ns() - perf_ns()


def sync_clock() -> None:
    """Re-read the wall clock's offset from perf_counter (at each run start, so NTP steps between
    runs are followed while the spans of one run stay ordered exactly as perf_counter saw them)."""
    global _offset
    _offset = time.time_ns() - perf_ns()


def wall(perf: int) -> int:
    """A perf_counter_ns reading as wall-clock ns since the epoch, for span times."""
    return perf + _offset
