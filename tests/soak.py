"""The soak harness: a synthetic trainer firing Ultralytics 8.4's order over many epochs, with
what a long run must still hold at its end measured on the way (tests/test_soak.py asserts it)."""

from __future__ import annotations

import gc
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from otel_callbacks import semconv as sc
from otel_callbacks import telemetry
from otel_callbacks.hooks import EVENTS
from tests.engines import DetectionTrainer, run_train


def rss_bytes() -> int:
    """Resident memory now (not the peak), from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def random_states() -> tuple:
    """Every global generator a training seeds: Python's, and NumPy's and torch's where loaded."""
    states: list = [random.getstate()]
    if "numpy" in sys.modules:
        states.append(repr(sys.modules["numpy"].random.get_state()))
    if "torch" in sys.modules:
        states.append(sys.modules["torch"].random.get_rng_state().tolist())
    return tuple(states)


@dataclass
class Soak:
    epochs: int
    batches: int
    val_batches: int
    truth: Counter = field(default_factory=Counter)  # (event, callback name) -> calls
    rss: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0

    def counter(self, event: str, tag: str):
        key = (event, f"{__name__}.{tag}_{event}")

        def count(engine):
            self.truth[key] += 1

        count.__qualname__ = f"{tag}_{event}"
        return count

    def run(self, tag: str = "truth") -> None:
        """One training on a fresh trainer, its RSS sampled after warm-up and at the end."""
        trainer = DetectionTrainer()
        for event in EVENTS:
            trainer.add_callback(event, self.counter(event, tag))
        warm = max(1, self.epochs // 10)

        def sample(t):
            if t.epoch == warm:
                gc.collect()
                self.rss["warm"] = rss_bytes()

        trainer.add_callback("on_train_epoch_start", sample)
        started = time.perf_counter()
        run_train(trainer, epochs=self.epochs, batches=self.batches, val_batches=self.val_batches)
        self.wall_s = time.perf_counter() - started
        gc.collect()
        self.rss["end"] = rss_bytes()

    @property
    def calls(self) -> int:
        return sum(self.truth.values())

    def figures(self) -> str:
        mib = 1 << 20
        return (
            f"{2 * self.calls:,} callback calls (a default hook and a counter per firing; "
            f"{self.epochs} epochs x {self.batches} batches, "
            f"{self.val_batches} val batches) in {self.wall_s:.1f} s; RSS {self.rss['warm'] / mib:.1f} MiB "
            f"after warm-up, {self.rss['end'] / mib:.1f} MiB at the end"
        )


def durations_by_callback(recorded) -> dict[tuple[str, str], object]:
    return {(a[sc.ATTR_EVENT], a[sc.ATTR_CALLBACK]): p for a, p in recorded.durations()}


def held_values() -> tuple[int, int]:
    """Values held in the hot path's lists now, and how many lists hold them."""
    histogram = telemetry.current().callback_duration
    sources = list(histogram._sources.values())
    return sum(len(s.values) for s in sources), len(sources)
