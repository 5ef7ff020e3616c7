"""Paired real trainings, plain and instrumented, to measure what otel_callbacks costs a training.

Run: ``python benchmarks/training.py`` (``--pairs N --epochs E --imgsz S --batch B --images K``,
``--device cpu|0``). Each pair runs a plain and an instrumented training in fresh processes, in
alternating order, on the same generated data; the table prints each pair's wall times and their
ratio, then the median ratio (goal: <= 1.01) and the overhead per training step in us and as a share
of the step, measured in-process by otel_callbacks itself.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ONE_TRAINING = """
import json, sys, time
args = json.loads(sys.argv[1])
if args["instrumented"]:
    import otel_callbacks
    otel_callbacks.install()
from ultralytics import YOLO
model = YOLO("yolo11n.yaml")
start = time.perf_counter()
model.train(data=args["data"], epochs=args["epochs"], imgsz=args["imgsz"], batch=args["batch"],
            device=args["device"], workers=0, plots=False, val=False, seed=0, deterministic=True, amp=False,
            project=args["project"], name="bench", exist_ok=True, verbose=False)
wall = time.perf_counter() - start
report = {}
if args["instrumented"]:
    from otel_callbacks import tracing
    r = tracing.current_tracker().last_report
    steps, batch_ns = r.phases["epoch", "batch"]
    report = {"overhead_ns": r.overhead_ns, "steps": steps, "step_ns": batch_ns / steps,
              "calls": sum(s.calls for s in r.callbacks.values())}
print("RESULT " + json.dumps({"wall": wall, **report}), flush=True)
"""


def train(settings: dict, instrumented: bool, env: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", ONE_TRAINING, json.dumps({**settings, "instrumented": instrumented})],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if out.returncode:
        sys.exit(out.stderr[-3000:])
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--imgsz", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--images", type=int, default=64, help="generated training images")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from otel_callbacks.apps import demo

    work = Path(tempfile.mkdtemp(prefix="otel-callbacks-bench-"))
    demo.prepare_offline(work / "config")
    data = demo.make_dataset(work / "dataset", train=args.images, val=4, size=max(64, args.imgsz))
    env = {**os.environ, "OTEL_CALLBACKS_DIR": str(work / "otel"), "OTEL_CALLBACKS_SUMMARY": "false"}
    settings = {"data": str(data), "epochs": args.epochs, "imgsz": args.imgsz, "batch": args.batch,
                "device": args.device, "project": str(work / "runs")}  # fmt: skip

    print(f"{args.pairs} pairs: {args.epochs} epochs, {args.images} images, imgsz {args.imgsz}, "
          f"batch {args.batch}, device {args.device}")  # fmt: skip
    print(f"{'pair':>4} {'plain s':>9} {'instrumented s':>15} {'ratio':>7}")
    ratios, reports = [], []
    for pair in range(args.pairs):
        order = (False, True) if pair % 2 == 0 else (True, False)
        runs = {instrumented: train(settings, instrumented, env) for instrumented in order}
        ratio = runs[True]["wall"] / runs[False]["wall"]
        ratios.append(ratio)
        reports.append(runs[True])
        print(f"{pair:>4} {runs[False]['wall']:9.3f} {runs[True]['wall']:15.3f} {ratio:7.4f}")
    overhead_per_step = statistics.median(r["overhead_ns"] / r["steps"] for r in reports)
    step = statistics.median(r["step_ns"] for r in reports)
    calls_per_step = statistics.median(r["calls"] / r["steps"] for r in reports)
    print(f"median ratio instrumented / plain: {statistics.median(ratios):.4f} (goal <= 1.01)")
    print(f"instrumentation overhead per training step: {overhead_per_step / 1e3:.1f} us "
          f"= {100 * overhead_per_step / step:.3f}% of a {step / 1e6:.1f} ms step "
          f"({calls_per_step:.1f} callback calls per step, all events included)")  # fmt: skip


if __name__ == "__main__":
    main()
