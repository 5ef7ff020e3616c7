"""How long the report of a long training takes to open in a real browser.

Run: ``python benchmarks/report_load.py`` (``--epochs 300 --batches 1000``). A synthetic training in
Ultralytics' order (tests/engines.py) writes the embedded default's file at the default span budget;
the report is written from it and opened from ``file://`` in Debian's headless Chromium, three
times; it prints the spans, the page's size, and the time to the trace view drawn and to the page
opening the last span's row (every row above it expanded).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = """
import sys
from types import SimpleNamespace
from tests.engines import DetectionTrainer, run_train
trainer = DetectionTrainer()
trainer.args = SimpleNamespace(epochs=int(sys.argv[1]))  # planned epochs, as Ultralytics has them
run_train(trainer, epochs=int(sys.argv[1]), batches=int(sys.argv[2]), val_batches=5)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--batches", type=int, default=1000)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from otel_callbacks.apps.report import read
    from otel_callbacks.apps.report_html import render

    work = Path(tempfile.mkdtemp(prefix="otel-callbacks-report-"))
    env = {
        "OTEL_CALLBACKS_DIR": str(work / "otel"),
        "OTEL_CALLBACKS_SUMMARY": "false",
        "PYTHONPATH": str(ROOT),
    }
    subprocess.run([sys.executable, "-c", RUN, str(args.epochs), str(args.batches)], env=env, check=True)
    files = sorted((work / "otel").glob("*.jsonl"))  # its traces and its metrics
    started = time.perf_counter()
    report = read(files)
    page = work / "report.html"
    page.write_text(render(report), encoding="utf-8")
    written = time.perf_counter() - started
    spans = sum(len(run.spans) for run in report.runs)
    loads, zooms = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
        )
        for _ in range(3):
            tab = browser.new_page(viewport={"width": 1400, "height": 900})
            start = time.perf_counter()
            tab.goto(page.as_uri(), wait_until="load", timeout=300_000)
            tab.wait_for_selector(".trace .row", timeout=300_000)
            loads.append(time.perf_counter() - start)
            start = time.perf_counter()
            tab.evaluate("focusSpan('run0', TRACES.run0.length - 1)")
            zooms.append(time.perf_counter() - start)
            tab.close()
        browser.close()
    size = page.stat().st_size / 1e6
    print(f"{args.epochs} epochs x {args.batches} batches: {spans} spans, page {size:.1f} MB")
    print(f"report written in {written:.1f} s")
    each = ", ".join(f"{x:.2f}" for x in loads)
    print(f"load to the trace view drawn: median {statistics.median(loads):.2f} s ({each})")
    print(f"the last span opened in: median {1e3 * statistics.median(zooms):.0f} ms")


if __name__ == "__main__":
    main()
