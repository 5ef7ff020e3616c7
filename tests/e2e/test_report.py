"""``otel-callbacks report`` opened in a real headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from otel_callbacks import semconv as sc
from otel_callbacks.apps.report import count_by_name, read
from otel_callbacks.apps.report_tables import duration
from tests.test_telemetry import run_python

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(
    os.environ.get("OTEL_CALLBACKS_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts")
)
COMMAND = str(Path(sys.executable).parent / "otel-callbacks")

RUNS = """
import time
from tests.engines import DetectionPredictor, DetectionTrainer, Exporter, run_export, run_predict, run_train

def checkpoint_uploader(trainer):  # slow once
    if trainer.epoch == 1:
        time.sleep(0.03)

def post_results(predictor):
    raise ConnectionError("results service down")

trainer = DetectionTrainer()
trainer.add_callback("on_fit_epoch_end", checkpoint_uploader)
run_train(trainer, epochs=3, batches=4, val_batches=2)
predictor = DetectionPredictor()
predictor.add_callback("on_predict_end", post_results)
try:
    run_predict(predictor, batches=3)
except ConnectionError:
    pass
run_export(Exporter())
"""


def browser_available():
    if not Path(CHROMIUM).exists():
        if os.environ.get("OTEL_CALLBACKS_REQUIRE_BACKENDS"):
            pytest.fail("chromium is not installed (apt-get install -y --no-install-recommends chromium)")
        pytest.skip("chromium is not installed (apt-get install -y --no-install-recommends chromium)")


def open_page(
    page_path: Path,
    screenshot: Path | None = None,
    timeout_ms: int = 120_000,
    click: str | None = "section.run .noteworthy a",  # a slow or failed invocation: its place and details
    shot: str = "section.run",  # what the screenshot shows: the first of these
):
    """Load the page from file://; what it logged, what it requested, and what it shows."""
    from playwright.sync_api import sync_playwright

    errors, requests = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_path.as_uri(), wait_until="load", timeout=timeout_ms)
            page.wait_for_selector(".trace .row", timeout=timeout_ms)
            shown = {
                "runs": page.eval_on_selector_all("section.run", "els => els.map(e => e.dataset.run)"),
                "text": page.inner_text("body"),
                "phases": page.eval_on_selector_all(
                    "table.phases tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
                ),
                "plots": page.eval_on_selector_all(
                    ".plot", "divs => divs.filter(d => d.querySelector('.main-svg')).map(d => d.id)"
                ),
                "legends": page.eval_on_selector_all(".plot .legendtext", "ts => ts.map(t => t.textContent)"),
                "answers": page.eval_on_selector_all(
                    "ul.answer", "lists => lists.map(l => [...l.children].map(li => li.textContent))"
                ),
                "compare": page.eval_on_selector_all(
                    "table.compare tbody tr",
                    "rows => rows.map(r => [...[...r.cells].map(c => c.textContent),"
                    " r.cells[4].dataset.sort])",
                ),
                "callbacks": page.eval_on_selector_all(
                    "table.callbacks tbody tr",
                    "rows => rows.map(r => [...r.cells].map(c => [c.textContent, c.dataset.sort ?? null]))",
                ),
                "sweep": page.eval_on_selector_all(
                    "table.sweep tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
                ),
            }
            if click is not None:
                page.click(click)
            shown["detail"] = page.inner_text("section.run .detail")
            shown["trace"] = page.eval_on_selector_all(
                "#run0-trace .row",  # the first run's: text, classes, shown
                "rows => rows.map(r => [r.textContent, r.className, r.style.display !== 'none'])",
            )
            if screenshot is not None:
                page.locator(shot).first.screenshot(path=str(screenshot))
        finally:
            browser.close()
    return errors, [url for url in requests if not url.startswith(("file:", "data:", "blob:"))], shown


@pytest.fixture
def runs_file(tmp_path):
    out = run_python(RUNS, {"OTEL_CALLBACKS_DIR": str(tmp_path / "otel"), "OTEL_CALLBACKS_SUMMARY": "0",
                            "OTEL_CALLBACKS_SLOW_THRESHOLD": "0.02"})  # fmt: skip
    assert out.returncode == 0, out.stderr
    (path,) = (tmp_path / "otel").glob("*.traces.jsonl")
    return path


def test_the_report_opens_offline_with_every_run_and_its_slow_and_failed_calls(runs_file, tmp_path):
    browser_available()
    page = tmp_path / "report.html"
    out = subprocess.run(
        [COMMAND, "report", str(runs_file.parent), "-o", str(page)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "3 runs" in out.stdout and page.is_file()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    errors, external, shown = open_page(page, ARTIFACTS / "report-trace.png")
    assert errors == [] and external == [], (errors, external)
    assert shown["runs"] == ["train", "predict", "export"], "every run of the file"
    text = shown["text"]
    assert "on_fit_epoch_end checkpoint_uploader" in text and "(slow)" in text
    assert "on_predict_end post_results" in text and "ConnectionError: results service down" in text
    report = read([runs_file])
    expected = count_by_name(report)
    shown_counts = Counter()
    for row in shown["phases"]:
        shown_counts[row[0]] += int(row[1])
    assert shown_counts == expected, "the phase tables count the file's phase spans"
    assert '"name": "on_fit_epoch_end checkpoint_uploader"' in shown["detail"]
    # The trace view: a row per span, epochs collapsed but the one the slow call was opened in.
    rows = shown["trace"]
    assert len(rows) == len(report.runs[0].spans) and rows[0][0].startswith("▾train")
    epochs = [row for row in rows if row[0].lstrip("▸▾").startswith("epoch")]
    assert [row[0][0] for row in epochs] == ["▸", "▾", "▸"], "the slow call's epoch opened, the others not"
    selected = [row for row in rows if "selected" in row[1]]
    assert len(selected) == 1 and selected[0][0].startswith("on_fit_epoch_end checkpoint_uploader")
    assert "slow" in selected[0][1] and selected[0][2], "marked and shown"
    # The answer first: each run's section opens with how it went.
    assert shown["answers"][0][0].endswith(" ms, finished")
    assert shown["answers"][0][1].startswith("where the time went: callbacks ")
    answer = shown["answers"][0]
    assert answer[2].startswith("bound by callbacks: callbacks take "), answer
    assert "__main__.checkpoint_uploader on on_fit_epoch_end" in answer[2], "named"
    assert "slow: on_fit_epoch_end checkpoint_uploader (1x)" in answer
    overhead = report.runs[0].spans[0].attributes[sc.ATTR_OVERHEAD]
    assert overhead > 0
    assert answer[-1].startswith(f"otel-callbacks' own time: {duration(overhead)} (")
    assert "failed: on_predict_end post_results (1x)" in shown["answers"][1]
    # The callbacks: by total time, the no-op defaults on one line, a first-bucket p95 said as such.
    rows = shown["callbacks"]
    totals = [float(row[5][1]) for row in rows]
    assert totals == sorted(totals, reverse=True)
    (defaults,) = [row for row in rows if row[0][0].startswith("Ultralytics' no-op default hooks")]
    assert defaults[3][0] == "default" and not [
        row for row in rows[1:] if row[3][0] == "default" and row is not defaults
    ]
    uploader = next(row for row in rows if row[0][0].endswith("checkpoint_uploader"))
    assert uploader[5][0].endswith(" ms") and uploader[7][0].startswith("<= ")
    fast = [row for row in rows if row[7][0].startswith("< ")]
    assert fast and all(row[7][0] == "< 100 us" for row in fast), "under the first bucket's bound"
    assert (ARTIFACTS / "report-trace.png").stat().st_size > 10_000


def test_bad_input_follows_the_send_rules(runs_file, tmp_path):
    cut = tmp_path / "cut.jsonl"
    lines = runs_file.read_bytes().splitlines(keepends=True)
    cut.write_bytes(b"".join(lines) + lines[-1][:20])  # killed writing one more line
    out = subprocess.run(
        [COMMAND, "report", str(cut), "-o", str(tmp_path / "r.html")], capture_output=True, text=True
    )
    assert out.returncode == 1 and f"{cut}:{len(lines) + 1}: not JSON" in out.stderr
    assert (tmp_path / "r.html").is_file(), "every good line used"
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("nothing here\n")
    out = subprocess.run([COMMAND, "report", str(garbage)], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and "nothing usable" in out.stderr and not (tmp_path / "report.html").exists()


def test_two_runs_compared_what_changed_most_first(tmp_path):
    browser_available()
    slow, fast = RUNS, RUNS.replace("time.sleep(0.03)", "pass")  # the uploader fixed
    for name, script in (("before", slow), ("after", fast)):
        out = run_python(script, {"OTEL_CALLBACKS_DIR": str(tmp_path / name), "OTEL_CALLBACKS_SUMMARY": "0"})
        assert out.returncode == 0, out.stderr
    page = tmp_path / "compare.html"
    out = subprocess.run(
        [COMMAND, "report", str(tmp_path / "before"), str(tmp_path / "after"), "-o", str(page)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    errors, external, shown = open_page(page, ARTIFACTS / "report-compare.png", shot="section.compare")
    assert errors == [] and external == [], (errors, external)
    rows = shown["compare"]
    assert [r[1] for r in rows[:3]] == ["train run, total", "epoch, mean", "otel-callbacks' own time"]
    assert rows[0][4].startswith("-"), "the training got shorter"
    assert rows[2][2].endswith("us") or rows[2][2].endswith("ms"), "the overhead, both measured"
    changes = [abs(float(r[6])) for r in rows[3:]]
    assert changes == sorted(changes, reverse=True), "what changed most first"
    assert rows[3][1] == "on_fit_epoch_end __main__.checkpoint_uploader", rows[3]
    uploader = next(r for r in rows if r[1] == "on_fit_epoch_end __main__.checkpoint_uploader")
    assert uploader[2].endswith(" ms") and uploader[3].endswith(" us"), uploader
    # Slow in one call of its four: within the calls' own spread, as the column says.
    assert uploader[5].startswith("no (noise "), uploader
    assert rows[0][5] == "too few values to judge by", "a run's total is one value"
