"""The shipped alert rules and dashboard against a real Prometheus scraping a real training."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

from tests.e2e.backends import (
    free_port,
    get_json,
    prometheus,
    prometheus_exporter_env,
    promql,
    stop,
    wait_until,
)
from tests.test_dashboards import queried, substitute

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"

TRAIN_SLOW_AND_FAILING = """
import sys, time
import otel_callbacks
otel_callbacks.install()
otel_callbacks.configure()  # the exporter listens from here
print("READY", flush=True)
sys.stdin.readline()  # until Prometheus has a first sample: rates need one before the training
from ultralytics import YOLO
from ultralytics.nn import tasks

original_loss, losses, epoch = tasks.BaseModel.loss, [], [0]
def out_of_memory_once(self, batch, preds=None):  # Ultralytics retries the first epoch at half the batch
    losses.append(1)
    if len(losses) == 1:
        raise RuntimeError("CUDA out of memory (raised by the test)")
    total, items = original_loss(self, batch, preds)
    if self.training and epoch[0] == 1:  # the second epoch's loss components turn NaN (the total does
        nan = float("nan")                # not, so the weights stay finite and the training goes on)
        items = {k: v * nan for k, v in items.items()} if isinstance(items, dict) else items * nan
    return total, items
tasks.BaseModel.loss = out_of_memory_once

def checkpoint_uploader(trainer):  # the slow one: 1.2 s per epoch
    time.sleep(1.2)

def post_results(predictor):  # fails after predictions, outside the training
    raise ConnectionError("results service down")

model = YOLO("yolo11n.yaml")
model.add_callback("on_fit_epoch_end", checkpoint_uploader)
model.add_callback("on_train_epoch_start", lambda trainer: epoch.__setitem__(0, trainer.epoch))
model.train(data=sys.argv[1], epochs=2, imgsz=32, batch=4, device="cpu", workers=0, plots=False,
            project=sys.argv[2], name="alerts", exist_ok=True)
model.add_callback("on_predict_end", post_results)
for attempt in range(2):  # twice, a scrape apart: Prometheus sees an increase only from a first sample
    try:
        model.predict(sys.argv[3], imgsz=32, device="cpu", verbose=False)
    except ConnectionError:
        time.sleep(2.5)
print("TRAINED", flush=True)
sys.stdin.read()
"""


def firing(url: str) -> dict[str, list[dict]]:
    alerts = get_json(f"{url}/api/v1/alerts")["data"]["alerts"]
    by_name: dict[str, list[dict]] = {}
    for alert in alerts:
        by_name.setdefault(alert["labels"]["alertname"], []).append(alert)
    return by_name


def test_slow_callback_alert_fires_and_every_panel_has_data(data, tmp_path):
    port = free_port()
    env = prometheus_exporter_env(port, "yolo-alerts")
    images = data.parent / "images" / "val"
    rules = str(DASHBOARDS / "prometheus" / "alerts.yml")
    with prometheus(tmp_path, [f"127.0.0.1:{port}"], rule_files=[rules]) as url:
        trainer = subprocess.Popen(
            [sys.executable, "-c", TRAIN_SLOW_AND_FAILING, str(data), str(tmp_path / "runs"), str(images)],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            wait_until(lambda: "READY" in trainer.stdout.readline(), 120, "the exporter to listen", 0)
            wait_until(lambda: promql(url, 'up{job="otel-callbacks"} == 1'), 60, "a first scrape")
            trainer.stdin.write("\n")
            trainer.stdin.flush()
            wait_until(lambda: "TRAINED" in trainer.stdout.readline(), 240, "the training to finish", 0)
            trained_at = time.time()
            time.sleep(3)  # a few scrapes after the last observations

            # Every panel query (variables substituted) parses and returns data for the training.
            dashboard = json.loads((DASHBOARDS / "grafana" / "otel-callbacks.json").read_text())
            for panel in queried(dashboard):
                for target in panel["targets"]:
                    expr = substitute(target["expr"])
                    answer = get_json(f"{url}/api/v1/query?query={quote(expr)}&time={trained_at + 2}")
                    values = [float(r["value"][1]) for r in answer["data"]["result"]]
                    if "gpu" in expr:  # a CPU machine has no GPU series
                        assert values == [], f"{panel['title']}: {expr} -> {answer['data']}"
                    elif target["legendFormat"].startswith("ETA"):  # the training finished: 0 left
                        assert values == [0], f"{panel['title']}: {expr} -> {answer['data']}"
                    elif expr.startswith("ultralytics_result{"):  # a 2-epoch training's mAP is 0
                        assert len(values) >= 3, f"{panel['title']}: {expr} -> {answer['data']}"
                    else:
                        assert any(v > 0 for v in values), f"{panel['title']}: {expr} -> {answer['data']}"
            for variable in dashboard["templating"]["list"]:
                if variable["type"] == "query":
                    label = variable["definition"].rsplit(",", 1)[1].strip(" )")
                    values = get_json(f"{url}/api/v1/label/{label}/values")["data"]
                    assert values, variable["name"]

            # The slow callback alert fires after its 2 minutes, naming the callback; nothing else is active.
            def slow_fired():
                alerts = firing(url)
                slow = alerts.get("UltralyticsCallbackSlow", [])
                return alerts if any(alert["state"] == "firing" for alert in slow) else None

            alerts = wait_until(slow_fired, 300, "UltralyticsCallbackSlow to fire", 5)
        finally:
            trainer.stdin.close()
            stop(trainer)
    assert set(alerts) == {
        "UltralyticsCallbackSlow",
        "UltralyticsEpochRestarts",
        "UltralyticsLossNotFinite",
    }, alerts
    nan = {alert["labels"]["ultralytics_result_name"] for alert in alerts["UltralyticsLossNotFinite"]}
    assert nan == {"train/box_loss", "train/cls_loss", "train/dfl_loss"}
    assert all(a["state"] == "firing" for a in alerts["UltralyticsLossNotFinite"])
    (restart,) = alerts["UltralyticsEpochRestarts"]
    assert restart["labels"]["ultralytics_restart_reason"] == "out_of_memory"
    (slow,) = alerts["UltralyticsCallbackSlow"]
    assert slow["labels"]["code_function_name"] == "__main__.checkpoint_uploader"
    assert slow["labels"]["ultralytics_event"] == "on_fit_epoch_end"
    assert "checkpoint_uploader" in slow["annotations"]["summary"]
    assert slow["annotations"]["runbook"]
