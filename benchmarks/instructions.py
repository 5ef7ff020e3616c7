"""Instructions per training step, counted by valgrind: the hot-path headline without the noise.

Run: ``python benchmarks/instructions.py`` (needs ``valgrind``; about two minutes). Wall-clock times
on a shared machine move by 2x with the neighbours' load; the number of instructions a step
executes does not. Each mode runs the training-step loop of ``hot_path.py`` twice under callgrind,
with ``--short`` and ``--long`` steps and one metric collection at the end, and the difference,
divided by the extra steps, is what one step costs: start-up and imports cancel out. The same for a
predict run, as an inference loop makes one per frame: plain, and instrumented and quiet (not sampled).
``PYTHONHASHSEED=0`` keeps dict layouts, and so the counts, the same from run to run.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

MODES = {
    "plain": "Ultralytics' plain run_callbacks loop",
    "unsampled": "instrumented, no batch spans",
    "default": "instrumented, default settings",
}
# A predict run as an inference loop makes one per frame: its five events, one callback each.
PREDICT = ("on_predict_start", "on_predict_batch_start", "on_predict_postprocess_end",
           "on_predict_batch_end", "on_predict_end")  # fmt: skip
PREDICT_MODES = {
    "predict-plain": "Ultralytics' plain run_callbacks loop",
    "predict-quiet": "instrumented, a quiet run (not sampled)",
}


def run_steps(mode: str, steps: int) -> None:
    """The loop itself (run under valgrind by :func:`count`)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import hot_path

    import otel_callbacks
    from otel_callbacks import Settings

    if mode.startswith("predict"):
        run_predicts(mode, steps)
        return
    events = ("on_train_epoch_start", *hot_path.BATCH)
    if mode == "plain":
        trainer = hot_path.Trainer(defaultdict(list, {e: [hot_path.user_callback] for e in events}))
        collect = None
    else:
        unsampled = {"batch_spans_first": 0, "batch_spans_every": 0} if mode == "unsampled" else {}
        _, reader = hot_path.configure(Settings(summary=False, **unsampled))
        trainer = hot_path.Trainer(otel_callbacks.CallbackDict({e: [hot_path.user_callback] for e in events}))
        trainer.run_callbacks("on_pretrain_routine_start")
        collect = reader.collect
    step = hot_path.training_step(trainer)
    for _ in range(steps):
        step()
    if collect is not None:
        collect()


def run_predicts(mode: str, runs: int) -> None:
    import hot_path

    import otel_callbacks
    from otel_callbacks import Settings

    callbacks = {e: [hot_path.user_callback] for e in PREDICT}
    if mode == "predict-plain":
        predictor, collect = hot_path.Trainer(defaultdict(list, callbacks)), None
    else:  # the interval's first run traced, every later one quiet
        settings = Settings(summary=False, predict_traces_first=0, predict_traces_interval=1e6)
        collect = hot_path.configure(settings)[1].collect
        predictor = hot_path.Trainer(otel_callbacks.CallbackDict(callbacks))
    for _ in range(runs):
        for event in PREDICT:
            predictor.run_callbacks(event)
    if collect is not None:
        collect()


def count(mode: str, steps: int) -> int:
    """Instructions of a whole process that runs ``steps`` steps."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "callgrind.out"
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--run",
            mode,
            str(steps),
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        subprocess.run(command, check=True, env=env, capture_output=True)
        totals = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
        return int(totals.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=2_000)
    parser.add_argument("--long", type=int, default=22_000)
    parser.add_argument("--run", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run_steps(args.run[0], int(args.run[1]))
        return
    for what, modes in (("training step", MODES), ("predict run", PREDICT_MODES)):
        per_step = {}
        for mode in modes:
            extra = count(mode, args.long) - count(mode, args.short)
            per_step[mode] = extra / (args.long - args.short)
        plain = per_step[next(iter(modes))]
        print(f"instructions per {what} ({args.long - args.short} of them, valgrind callgrind)")
        print(f"{'mode':40} {'instructions':>13} {'x plain':>8} {'over plain':>11}")
        for mode, label in modes.items():
            value = per_step[mode]
            print(f"{label:40} {value:13.0f} {value / plain:8.2f} {value - plain:11.0f}")


if __name__ == "__main__":
    main()
