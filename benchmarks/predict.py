"""What otel_callbacks costs an inference loop: ``model.predict()`` on one image, and ``model.val()`` on a
tiny set, plain and instrumented in the same process, taking turns call by call.

Run: ``python benchmarks/predict.py`` (``--rounds N --block B --val-rounds V``, ``--exporters
file,otlp``). Each exporter setting runs in a fresh process: ``file`` is the default (the embedded
file), ``otlp`` sends traces and metrics over OTLP/gRPC to a local collector (rotel, dropping what it
receives). In each process three YOLO11n models share one set of weights: two plain ones, whose
predictors were made before ``install()``, and an instrumented one. Each round, every model makes
``block`` calls, one after another's, in a rotating order; each call is timed alone. The table prints,
against the first plain model, the difference of the median per-call times for the second plain model
(the noise floor: about 0) and for the instrumented one, with the quartiles over the rounds of each
round's median difference; and beside them the overhead the instrumented runs report themselves
(what otel_callbacks does on the caller's thread for the run: a traced run's ``otel_callbacks.overhead_s``,
which a quiet run works out too, with no root to put it on). Goal: at most 50 us per predict call.
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


def _compare(calls: dict, rounds: int, block: int, tracker) -> dict:
    """Each call timed alone, the models taking turns call by call (a rotating order each round), so
    drift and the neighbours' load fall on all alike; the medians of the per-call times are compared
    with the first plain model's, and their spread shown by the quartiles of round medians."""
    names = list(calls)
    times: dict[str, list[int]] = {name: [] for name in names}
    reported_us = []
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for _ in range(block):
            for name in order:
                start = time.perf_counter_ns()
                calls[name]()
                times[name].append(time.perf_counter_ns() - start)
                if name == "instrumented":
                    reported_us.append(tracker().last_overhead_ns / 1e3)

    def median_us(name: str, part: slice = slice(None)) -> float:
        return statistics.median(times[name][part]) / 1e3

    def spread(name: str) -> list[float]:  # quartiles over rounds of the round's median difference
        per_round = [
            median_us(name, slice(r * block, (r + 1) * block))
            - median_us("plain", slice(r * block, (r + 1) * block))
            for r in range(rounds)
        ]
        return statistics.quantiles(per_round, n=4) if rounds > 1 else per_round * 3

    return {
        "plain_us": median_us("plain"),
        "differences": {
            name: [spread(name)[0], median_us(name) - median_us("plain"), spread(name)[2]]
            for name in ("plain again", "instrumented")
        },
        "reported_us": statistics.quantiles(reported_us, n=4),  # every instrumented run's
    }


def child(args: argparse.Namespace) -> None:
    import numpy as np

    from otel_callbacks.apps.demo import make_dataset, prepare_offline

    work = Path(args.workdir)
    prepare_offline(work / "config")
    data = str(make_dataset(work / "dataset"))
    os.environ["OTEL_CALLBACKS_DIR"] = str(work / "otel")

    import torch
    from ultralytics import YOLO

    import otel_callbacks
    from otel_callbacks import tracing
    from otel_callbacks.tracing import InstrumentedCallback

    torch.set_num_threads(1)  # the other core stays free for the export thread: less noise
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
    parser.add_argument("--val-rounds", type=int, default=6, help="rounds of 2 val calls per model")
    parser.add_argument("--exporters", default="file,otlp", help="comma-separated: file, otlp")
    args = parser.parse_args()
    if args.workdir:
        child(args)
        return
    rounds = f"{args.rounds} rounds of {args.block} predict calls, {args.val_rounds} of 2 val calls"
    print(f"per-call cost, {rounds}")
    print(f"{'exporter':<9} {'call':<8} {'plain us':>9}  {'plain again - plain us':>24}  "
          f"{'instrumented - plain us':>25}  {'reported us':>18}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for exporter in args.exporters.split(","):
            for call, r in run_child(args, exporter, Path(tmp)).items():
                spread = {k: f"{v[1]:+.0f} [{v[0]:+.0f}, {v[2]:+.0f}]" for k, v in r["differences"].items()}
                low, median, high = r["reported_us"]
                print(
                    f"{exporter:<9} {call:<8} {r['plain_us']:>9.0f}  {spread['plain again']:>24}  "
                    f"{spread['instrumented']:>25}  {f'{median:.1f} [{low:.0f}, {high:.0f}]':>18}"
                )
    print("differences: of the median per-call times [quartiles over rounds]; reported: the runs' own figure")
    print("[quartiles over the instrumented runs]")


if __name__ == "__main__":
    main()
