"""The shipped stack for real (``dashboards/collector``, Grafana aside): an OpenTelemetry Collector built
from the Go module proxy with the components of ``otel-collector.yaml``, started with that very file
(only its endpoints moved to loopback), carries the demo's training to the real Jaeger and to the real
Prometheus, where every dashboard panel and alert expression evaluates; and its ``otlpjsonfile``
receiver reads a finished run's traces file into Jaeger as the same tree."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import yaml

from otel_callbacks import semconv as sc
from tests.e2e.backends import (
    ROOT,
    free_port,
    get_json,
    go_program,
    port_open,
    process,
    prometheus,
    promql,
    wait_until,
)
from tests.e2e.jaeger import Jaeger, jaeger
from tests.e2e.test_jaeger import parent_of
from tests.e2e.test_otlp_backends import run
from tests.test_dashboards import queried, substitute
from tests.test_replay import SYNTHETIC_RUN

DASHBOARDS = ROOT / "dashboards"
SHIPPED = DASHBOARDS / "collector" / "otel-collector.yaml"
DEMO = "from otel_callbacks.apps.cli import main; raise SystemExit(main())"
# The panels' queries (title, legend) that the demo gives no data: its callbacks never fail, and it
# trains on a CPU.
DEMO_MAKES_NO_DATA = {
    ("Callback errors", "{{error_type}} in {{code_function_name}} ({{ultralytics_mode}})"),
    ("Memory", "in use {{hw_name}} {{hw_id}} (NVML)"),
    ("Memory", "peak allocated {{hw_id}} ({{instance}})"),
    ("Memory", "peak reserved {{hw_id}} ({{instance}})"),
}


@contextlib.contextmanager
def collector(tmp: Path, config: dict, listens_on: list[int]) -> Iterator[None]:
    """The collector with ``config``, once it listens on every port of ``listens_on``."""
    binary = go_program("otelcol", "go.opentelemetry.io/collector/otelcol")
    config = {**config, "service": {**config["service"], "telemetry": {"metrics": {"level": "none"}}}}
    path = tmp / "otelcol.yaml"  # (its own metrics off: they would listen on port 8888)
    path.write_text(json.dumps(config))
    log = tmp / "otelcol.log"
    with process([binary, "--config", str(path)], log) as proc:

        def listening() -> bool:
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            return all(map(port_open, listens_on))

        wait_until(listening, 60, "the collector to listen")
        yield


def exemplars(url: str, series: str, until: float) -> list[dict[str, str]]:
    """The exemplar labels (``trace_id``, ``span_id``) Prometheus stored for ``series``, latest first."""
    query = urllib.parse.urlencode({"query": series, "start": until - 600, "end": until + 60})
    stored = get_json(f"{url}/api/v1/query_exemplars?{query}")["data"]
    found = [e for s in stored for e in s["exemplars"]]
    return [e["labels"] for e in sorted(found, key=lambda e: -float(e["timestamp"]))]


def shipped_config(backend: Jaeger) -> tuple[dict, int, int]:
    """``otel-collector.yaml`` with loopback endpoints: its OTLP/HTTP and Prometheus ports."""
    config = yaml.safe_load(SHIPPED.read_text())
    http, grpc, scraped = free_port(), free_port(), free_port()
    config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] = f"127.0.0.1:{grpc}"
    config["receivers"]["otlp"]["protocols"]["http"]["endpoint"] = f"127.0.0.1:{http}"
    config["exporters"]["otlp/jaeger"]["endpoint"] = f"127.0.0.1:{backend.grpc_port}"
    config["exporters"]["prometheus"]["endpoint"] = f"127.0.0.1:{scraped}"
    return config, http, scraped


def test_the_shipped_collector_carries_the_demo_to_jaeger_and_prometheus(tmp_path):
    service = f"demo-{uuid.uuid4().hex[:8]}"
    rules = DASHBOARDS / "prometheus" / "alerts.yml"
    with jaeger(tmp_path) as backend:
        config, http, scraped = shipped_config(backend)
        with (
            collector(tmp_path, config, [http, scraped]),
            prometheus(
                tmp_path,
                [f"127.0.0.1:{scraped}"],
                [str(rules)],
                honor_labels=True,
                features=["exemplar-storage"],
            ) as url,
        ):
            env = {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_METRICS_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{http}",
                "OTEL_METRIC_EXPORT_INTERVAL": "1000",
                "OTEL_SERVICE_NAME": service,
                "OTEL_CALLBACKS_SLOW_THRESHOLD": "0.000001",  # calls slow: the slow callback panel's data
            }
            run(DEMO, env, "demo", "--epochs", "2", "--dir", str(tmp_path / "demo"))
            done = "ultralytics_train_epochs_completed == 2"
            wait_until(lambda: promql(url, done), 60, "a scrape after the demo")
            time.sleep(3)  # two samples or more of every series: rates have data
            evaluated_at = time.time()

            dashboard = json.loads((DASHBOARDS / "grafana" / "otel-callbacks.json").read_text())
            empty = {
                (panel["title"], target["legendFormat"])
                for panel in queried(dashboard)
                for target in panel["targets"]
                if not promql(url, substitute(target["expr"]), evaluated_at)
            }
            assert empty == DEMO_MAKES_NO_DATA, "every other panel has data through the collector"
            for variable in dashboard["templating"]["list"]:
                if variable["type"] == "query":  # job and instance, from service.name and the run
                    label = variable["definition"].rsplit(",", 1)[1].strip(" )")
                    assert get_json(f"{url}/api/v1/label/{label}/values")["data"], variable["name"]
            jobs = {r["metric"]["job"] for r in promql(url, "ultralytics_train_epochs_completed")}
            assert jobs == {service}, "the service's name is the job (honor_labels)"
            for group in yaml.safe_load(rules.read_text())["groups"]:
                for rule in group["rules"]:
                    promql(url, rule["expr"], evaluated_at)  # evaluates: no query error
            # From the slow calls' panel to their spans: the exemplars Prometheus stored.
            slow = exemplars(url, "ultralytics_callback_duration_seconds_bucket", evaluated_at)
            counted = exemplars(url, "ultralytics_callback_slow_total", evaluated_at)
            assert slow and counted, "exemplars through the collector's OpenMetrics"

        for found in (slow[0], counted[0]):
            trace = wait_until(lambda: backend.trace(found["trace_id"]), 30, "the exemplar's trace")  # noqa: B023
            (call,) = [s for s in trace["spans"] if s["spanID"] == found["span_id"]]
            assert call["operationName"].startswith("on_"), "the exemplar opens on the call's span"
            assert {"key": sc.ATTR_SLOW, "type": "bool", "value": True} in call["tags"]

        traces = wait_until(lambda: backend.traces(service), 60, "the demo's traces in Jaeger")
        roots = {s["operationName"]: t["traceID"] for t in traces for s in t["spans"] if parent_of(s) is None}
        assert len(roots) == len(traces), "one root per trace"
        assert set(roots) == {"train", "val", "predict", "export"}, "the demo's runs, a trace each"
        trace = backend.trace(roots["train"])
    spans = trace["spans"]
    assert len({s["spanID"] for s in spans}) == len(spans) and not any(s["warnings"] for s in spans)
    assert [s["operationName"] for s in spans].count("epoch") == 2


def test_the_otlpjsonfile_receiver_reads_a_finished_runs_file_into_jaeger_as_its_tree(tmp_path):
    service = f"file-{uuid.uuid4().hex[:8]}"
    files = tmp_path / "otel"
    run(SYNTHETIC_RUN, {"OTEL_CALLBACKS_DIR": str(files), "OTEL_SERVICE_NAME": service})
    (traces,) = files.glob("*.traces.jsonl")
    written = {
        span["spanId"]: span
        for line in traces.read_text().splitlines()
        for resource in json.loads(line)["resourceSpans"]
        for scope in resource["scopeSpans"]
        for span in scope["spans"]
    }
    with jaeger(tmp_path) as backend:
        to_jaeger = {"endpoint": f"127.0.0.1:{backend.grpc_port}", "tls": {"insecure": True}}
        config = {
            "receivers": {"otlpjsonfile": {"include": [str(traces)], "start_at": "beginning"}},
            "exporters": {"otlp/jaeger": to_jaeger},
            "service": {
                "pipelines": {"traces": {"receivers": ["otlpjsonfile"], "exporters": ["otlp/jaeger"]}}
            },
        }
        with collector(tmp_path, config, []):
            (found,) = wait_until(
                lambda: (t := backend.traces(service)) and len(t[0]["spans"]) == len(written) and t,
                60,
                "the file's spans in Jaeger",
            )
        trace = backend.trace(found["traceID"])
    spans = trace["spans"]
    assert sorted(s["spanID"] for s in spans) == sorted(written), "each span of the file, each id once"
    assert not any(s["warnings"] for s in spans), "no Jaeger warning"
    assert [s["operationName"] for s in spans if parent_of(s) is None] == ["train"], "one root"
    for span in spans:
        assert (parent_of(span) or "") == written[span["spanID"]].get("parentSpanId", ""), "as in the file"
