"""What otel_callbacks costs an inference loop: ``model.predict()`` on one image, and ``model.val()`` on a
tiny set, plain and instrumented in the same process, in alternating blocks.

Run: ``python benchmarks/predict.py`` (``--rounds N --block B --val-rounds V``, ``--exporters
file,otlp``). Each exporter setting runs in a fresh process: ``file`` is the default (the embedded
file), ``otlp`` sends traces and metrics over OTLP/gRPC to a local collector (rotel, dropping what it
receives). In each process three YOLO11n models share one set of weights: two plain ones, whose
predictors were made before ``install()``, and an instrumented one. A round times one block of calls on
each, in a rotating order; the table prints the median over the rounds of the per-call difference
against the first plain model, for the second plain model (the noise floor: it should read about 0)
and for the instrumented one, with the quartiles of those differences, and beside them the overhead
the instrumented runs report themselves (``otel_callbacks.overhead_s``: everything otel_callbacks does
on the caller's thread for the run). Goal: at most 50 us per predict call.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = "--child"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_collector():
    """rotel (the ``rotel`` wheel's collector) on loopback, exporting to nowhere; yields its gRPC port."""
    import rotel

    port = _free_port()
    binary = Path(rotel.__file__).parent / "rotel-agent"
    args = [str(binary), "start", "--otlp-grpc-endpoint", f"127.0.0.1:{port}", "--otlp-http-endpoint",
            f"127.0.0.1:{_free_port()}", "--exporter", "blackhole"]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while socket.socket().connect_ex(("127.0.0.1", port)):
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit("rotel did not start")
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _per_call_us(call, calls: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        call()
    return (time.perf_counter_ns() - start) / calls / 1e3


def _compare(calls: dict, rounds: int, block: int, tracker) -> dict:
    """Per-call time of each block, rotating the order each round; differences against ``plain``."""
    names = list(calls)
    differences: dict[str, list[float]] = {"plain again": [], "instrumented": []}
    plain_us, reported_us = [], []
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        times = {name: _per_call_us(calls[name], block) for name in order}
        plain_us.append(times["plain"])
        differences["plain again"].append(times["plain again"] - times["plain"])
        differences["instrumented"].append(times["instrumented"] - times["plain"])
        reported_us.append(tracker().last_report.overhead_ns / 1e3)  # the block's last run
    return {
        "plain_us": statistics.median(plain_us),
        "differences": {k: statistics.quantiles(v, n=4) for k, v in differences.items()},
        "reported_us": statistics.median(reported_us),
    }


def child(args: argparse.Namespace) -> None:
    import numpy as np

    from otel_callbacks.apps.demo import make_dataset, prepare_offline

    work = Path(args.workdir)
    prepare_offline(work / "config")
    data = str(make_dataset(work / "dataset"))
    os.environ["OTEL_CALLBACKS_DIR"] = str(work / "otel")

    from ultralytics import YOLO

    import otel_callbacks
    from otel_callbacks import tracing
    from otel_callbacks.tracing import InstrumentedCallback

    image = np.full((64, 64, 3), 114, dtype=np.uint8)  # no random generator: Ultralytics seeds them
    common = {"imgsz": 64, "device": "cpu", "verbose": False}
    val = {"data": data, "imgsz": 32, "batch": 4, "device": "cpu", "workers": 0, "plots": False}
    val |= {"verbose": False, "project": str(work / "runs"), "exist_ok": True}
    plain, plain_again = YOLO("yolo11n.yaml"), YOLO("yolo11n.yaml")
    plain_again.model.load_state_dict(plain.model.state_dict())
    for model in (plain, plain_again):
        model.predict(image, **common)  # its predictor, made now, stays plain
    otel_callbacks.install()
    instrumented = YOLO("yolo11n.yaml")
    instrumented.model.load_state_dict(plain.model.state_dict())
    instrumented.predict(image, **common)
    wrapped = [
        isinstance(c, InstrumentedCallback)
        for m in (plain, instrumented)
        for c in m.callbacks["on_predict_start"]
    ]
    assert not any(wrapped[:1]) and all(wrapped[1:]), "the plain model must be plain, the other instrumented"

    results = {"predict": _compare(
        {name: (lambda m=m: m.predict(image, **common)) for name, m in
         (("plain", plain), ("plain again", plain_again), ("instrumented", instrumented))},
        args.rounds, args.block, tracing.current_tracker,
    )}  # fmt: skip
    if args.val_rounds:
        results["val"] = _compare(
            {name: (lambda m=m: m.val(**val)) for name, m in
             (("plain", plain), ("plain again", plain_again), ("instrumented", instrumented))},
            args.val_rounds, 2, tracing.current_tracker,
        )  # fmt: skip
    print("RESULT " + json.dumps(results), flush=True)


def run_child(args: argparse.Namespace, exporter: str, work: Path) -> dict:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    with contextlib.ExitStack() as stack:
        if exporter == "otlp":
            port = stack.enter_context(local_collector())
            env |= {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "otlp"}
            env |= {
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            }
        command = [sys.executable, __file__, CHILD, str(work / exporter), "--rounds", str(args.rounds)]
        command += ["--block", str(args.block), "--val-rounds", str(args.val_rounds)]
        out = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if out.returncode:
        sys.exit(out.stderr[-3000:])
    if "otel_callbacks:" in out.stdout:
        print(f"note: otel_callbacks printed on stdout during the {exporter} loop", file=sys.stderr)
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(CHILD, dest="workdir")
    parser.add_argument("--rounds", type=int, default=60, help="rounds of predict blocks")
    parser.add_argument("--block", type=int, default=20, help="predict calls per block")
    parser.add_argument("--val-rounds", type=int, default=6, help="rounds of val blocks (2 calls each)")
    parser.add_argument("--exporters", default="file,otlp", help="comma-separated: file, otlp")
    args = parser.parse_args()
    if args.workdir:
        child(args)
        return
    rounds = f"{args.rounds} rounds of {args.block} predict calls, {args.val_rounds} of 2 val calls"
    print(f"per-call cost, {rounds}")
    print(f"{'exporter':<9} {'call':<8} {'plain us':>9}  {'plain again - plain us':>24}  "
          f"{'instrumented - plain us':>25}  {'reported us':>11}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for exporter in args.exporters.split(","):
            for call, r in run_child(args, exporter, Path(tmp)).items():
                spread = {k: f"{v[1]:+.0f} [{v[0]:+.0f}, {v[2]:+.0f}]" for k, v in r["differences"].items()}
                print(
                    f"{exporter:<9} {call:<8} {r['plain_us']:>9.0f}  {spread['plain again']:>24}  "
                    f"{spread['instrumented']:>25}  {r['reported_us']:>11.1f}"
                )
    print("differences: the median over rounds [first and third quartiles]; reported: the run's own figure")


if __name__ == "__main__":
    main()
