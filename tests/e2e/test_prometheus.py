"""Metrics through opentelemetry-exporter-prometheus, scraped by a real Prometheus."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.e2e.backends import (
    free_port,
    get_json,
    prometheus,
    prometheus_exporter_env,
    promql,
    stop,
    wait_until,
)
from tests.e2e.test_jaeger import HANG
from tests.test_dashboards import DASHBOARDS

TRAIN_AND_WAIT = """
import sys, time
import otel_callbacks
otel_callbacks.install()
from ultralytics import YOLO

def slow_logger(trainer):
    time.sleep(0.3)

model = YOLO("yolo11n.yaml")
model.add_callback("on_fit_epoch_end", slow_logger)
model.train(data=sys.argv[1], epochs=2, imgsz=32, batch=4, device="cpu", workers=0, plots=False,
            project=sys.argv[2], name="prom", exist_ok=True)
print("TRAINED", flush=True)
sys.stdin.read()  # keep the /metrics endpoint up until the test is done scraping
"""


def test_prometheus_scrapes_the_callback_histograms_with_the_contract_labels(data, tmp_path):
    port = free_port()
    env = prometheus_exporter_env(port, "yolo-prom-test")
    env["OTEL_CALLBACKS_SLOW_THRESHOLD"] = "0.2"
    with prometheus(tmp_path, [f"127.0.0.1:{port}"]) as url:
        trainer = subprocess.Popen(
            [sys.executable, "-c", TRAIN_AND_WAIT, str(data), str(tmp_path / "runs")],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            wait_until(lambda: "TRAINED" in trainer.stdout.readline(), 240, "the training to finish", 0)
            count = 'ultralytics_callback_duration_seconds_count{ultralytics_event="on_fit_epoch_end"}'
            # two epochs and the final evaluation: three calls, once a scrape after the training saw them
            series = wait_until(
                lambda: [
                    s
                    for s in promql(url, count)
                    if float(s["value"][1]) == 3 and s["metric"]["code_function_name"].endswith("slow_logger")
                ],
                30,
                "the scraped histogram",
            )
            (slow,) = series
            labels = slow["metric"]
            assert labels["ultralytics_integration"] == "user" and labels["ultralytics_mode"] == "train"
            assert labels["job"] == "otel-callbacks"
            buckets = promql(
                url, 'ultralytics_callback_duration_seconds_bucket{code_function_name=~".*slow_logger"}'
            )
            bounds = {b["metric"]["le"]: float(b["value"][1]) for b in buckets}
            assert bounds["0.25"] == 0 and bounds["0.5"] == 3 and bounds["+Inf"] == 3
            assert "ultralytics_batch_index" not in labels, "no batch index on metrics"
            batch = promql(
                url,
                'sum(ultralytics_callback_duration_seconds_count{ultralytics_event="on_train_batch_end"})',
            )
            assert float(batch[0]["value"][1]) > 0
            slow_total = promql(url, 'ultralytics_callback_slow_total{code_function_name=~".*slow_logger"}')
            assert float(slow_total[0]["value"][1]) == 3
            expected = {"epoch", "batch", "dataloader", "val", "final_eval", "setup", "train"}

            def phases():  # the train phase ends at teardown, after the last slow call: a later scrape
                found = {
                    s["metric"]["ultralytics_phase"]
                    for s in promql(url, "ultralytics_phase_duration_seconds_count")
                }
                return expected <= found

            wait_until(phases, 30, "every phase to be scraped")
        finally:  # a stopped target goes stale at once in Prometheus: query before this
            trainer.stdin.close()
            stop(trainer)


def stalled_rule_scaled(tmp_path: Path) -> str:
    """The shipped ``UltralyticsTrainingStalled`` with its 10 minutes without progress and its 5 minutes'
    wait scaled down to 3 s and 2 s, its expression otherwise as shipped: a rule file's path."""
    shipped = yaml.safe_load((DASHBOARDS / "prometheus" / "alerts.yml").read_text())
    (rule,) = [r for r in shipped["groups"][0]["rules"] if r["alert"] == "UltralyticsTrainingStalled"]
    assert rule["expr"].count("_since_progress_seconds) > 600)") == 1 and rule["for"] == "5m"
    rule["expr"] = rule["expr"].replace("_since_progress_seconds) > 600)", "_since_progress_seconds) > 3)")
    rule["for"] = "2s"
    path = tmp_path / "stalled.yml"
    path.write_text(json.dumps({"groups": [{"name": "stalled", "rules": [rule]}]}))
    return str(path)


def test_a_hung_training_is_counted_slow_stops_moving_and_alerts_while_it_hangs(data, tmp_path):
    port = free_port()
    env = prometheus_exporter_env(port, "yolo-hang") | {"OTEL_CALLBACKS_SLOW_THRESHOLD": "1"}
    since = 'ultralytics_train_since_progress_seconds{job="otel-callbacks"}'
    slow = 'ultralytics_callback_slow_total{code_function_name=~".*checkpoint_uploader"}'
    rules = [stalled_rule_scaled(tmp_path)]
    with prometheus(tmp_path, [f"127.0.0.1:{port}"], rule_files=rules) as url:
        trainer = subprocess.Popen(
            [sys.executable, "-c", HANG, str(data), str(tmp_path / "runs")],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        try:
            wait_until(lambda: "HANGING" in trainer.stdout.readline(), 240, "the training to hang", 0)
            wait_until(lambda: [s for s in promql(url, slow) if s["value"][1] == "1"], 30, "a slow count")
            wait_until(lambda: promql(url, f"{since} > 3"), 30, "seconds since it moved, growing")
            (alert,) = wait_until(lambda: stalled(url, "firing"), 30, "UltralyticsTrainingStalled to fire")
            assert alert["labels"]["severity"] == "critical" and "runbook" in alert["annotations"]
            assert trainer.poll() is None, "all of it while the callback hangs"
            trainer.stdin.write("\n")
            trainer.stdin.flush()
            wait_until(lambda: "DONE" in trainer.stdout.readline(), 120, "the training to finish", 0)
            wait_until(lambda: promql(url, f"{since} == 0"), 30, "zero once the training ended")
            wait_until(lambda: not stalled(url), 30, "the alert resolved once the training moved")
            assert [s["value"][1] for s in promql(url, slow)] == ["1"], "its return counted nothing more"
        finally:
            trainer.stdin.close()
            stop(trainer)


def stalled(url: str, state: str | None = None) -> list[dict]:
    """The active ``UltralyticsTrainingStalled`` alerts (in ``state``: pending, firing)."""
    alerts = get_json(f"{url}/api/v1/alerts")["data"]["alerts"]
    named = [a for a in alerts if a["labels"]["alertname"] == "UltralyticsTrainingStalled"]
    return [a for a in named if state in (None, a["state"])]
