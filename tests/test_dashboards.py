"""dashboards/: the Grafana dashboard, the alert rules and the laptop stack, checked without running them.

Grafana, Jaeger and Docker cannot run here; the e2e test runs the rules and every panel query on a
real Prometheus. Here: schema validity, PromQL syntax (promtool), promtool's rule unit tests, and
every cross-reference between the compose file and the configurations it mounts.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from otel_callbacks import semconv
from tests.e2e.backends import go_release, require

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = ROOT / "dashboards"
DASHBOARD = DASHBOARDS / "grafana" / "otel-callbacks.json"
SUBSTITUTE = {
    "$service": ".*",
    "$run": ".*",
    "$event": ".*",
    "$integration": ".*",
    "$__rate_interval": "1m",
    "$__range": "1h",
}


def substitute(expr: str) -> str:
    """A panel query as Grafana sends it, with every variable at "All" and fixed intervals."""
    for variable, value in SUBSTITUTE.items():
        expr = expr.replace(variable, value)
    return expr


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def dashboard():
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def validator():
    schema = json.loads((DASHBOARDS / "grafana" / "schema" / "dashboard.schema.json").read_text())
    return jsonschema.validators.validator_for(schema)(schema)


def test_dashboard_validates_against_grafanas_schema(dashboard, validator):
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(dashboard)]
    assert errors == []


def test_the_schema_check_can_fail(dashboard, validator):
    broken = json.loads(json.dumps(dashboard))
    broken["panels"][0]["gridPos"]["h"] = "tall"
    del broken["schemaVersion"]
    assert len(list(validator.iter_errors(broken))) >= 2


def queried(dashboard: dict) -> list[dict]:
    """The panels that query (rows only group them)."""
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def test_dashboard_content(dashboard):
    titles = [p["title"] for p in dashboard["panels"]]
    assert len(titles) == len(set(titles)) == 17
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Training health"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) == {"datasource", "traces", "service", "run", "event", "integration"}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    for panel in queried(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["description"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            names = set(
                re.findall(r"\b(ultralytics_[a-z_]+?)(?:_bucket|_sum|_count|_total)?\{", target["expr"])
            )
            assert names <= {
                "ultralytics_callback_duration_seconds",
                "ultralytics_callback_slow",
                "ultralytics_phase_duration_seconds",
                "ultralytics_epoch_restarts",
                "ultralytics_result",
                "ultralytics_train_images",
                "ultralytics_train_epochs_completed",
                "ultralytics_train_epochs_planned",
                "ultralytics_train_time_share",
                "ultralytics_gpu_memory_peak_allocated_bytes",
                "ultralytics_gpu_memory_peak_reserved_bytes",
            }
    exprs = " ".join(t["expr"] for p in queried(dashboard) for t in p["targets"])
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}," in exprs
    slow = next(p for p in dashboard["panels"] if p["title"] == "Slow callback rate")
    (link,) = slow["fieldConfig"]["defaults"]["links"]
    assert "${traces}" in link["url"] and "code_function_name" in link["url"]


def test_metric_and_label_names_follow_the_contract():
    """Dashboards and alerts spell the contract's names as Prometheus does ("." -> "_")."""
    text = DASHBOARD.read_text() + (DASHBOARDS / "prometheus" / "alerts.yml").read_text()
    prom = {name: name.replace(".", "_") for name in (
        semconv.ATTR_EVENT, semconv.ATTR_CALLBACK, semconv.ATTR_INTEGRATION, semconv.ATTR_MODE,
        semconv.ATTR_PHASE, semconv.ATTR_ERROR_TYPE)}  # fmt: skip
    for label in prom.values():
        assert label in text, label
    for metric in (semconv.METRIC_CALLBACK_DURATION, semconv.METRIC_PHASE_DURATION):
        assert metric.replace(".", "_") + "_seconds_" in text
    for counter in (semconv.METRIC_CALLBACK_SLOW, semconv.METRIC_EPOCH_RESTARTS, semconv.METRIC_IMAGES):
        assert counter.replace(".", "_") + "_total" in text
    for gauge in (semconv.METRIC_RESULT, semconv.METRIC_RESULT_NON_FINITE, semconv.METRIC_EPOCHS_COMPLETED,
                  semconv.METRIC_EPOCHS_PLANNED):  # fmt: skip
        assert gauge.replace(".", "_") + "{" in text
    for in_bytes in (
        semconv.METRIC_PROCESS_MEMORY,
        semconv.METRIC_GPU_PEAK_ALLOCATED,
        semconv.METRIC_GPU_MEMORY_USAGE,
    ):
        assert in_bytes.replace(".", "_") + "_bytes" in text
    assert semconv.ATTR_RESULT_NAME.replace(".", "_") in text
    assert semconv.ATTR_RESTART_REASON.replace(".", "_") in text
    for phase in (
        semconv.PHASE_BATCH,
        semconv.PHASE_DATALOADER,
        semconv.PHASE_EPOCH,
        semconv.PHASE_FINAL_EVAL,
    ):
        assert f'"{phase}' in text or f"|{phase}" in text, phase


def test_every_panel_query_is_valid_promql(dashboard, tmp_path):
    promtool = require("promtool", "apt-get install -y --no-install-recommends prometheus")
    rules = []
    for panel in queried(dashboard):
        for target in panel["targets"]:
            expr = substitute(target["expr"])
            assert "$" not in expr, expr
            rules.append({"record": f"panel:{panel['id']}:{target['refId']}", "expr": expr})
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":  # label_values(<selector>, label): the selector must parse
            selector = re.fullmatch(r"label_values\((.*), *\w+\)", variable["definition"]).group(1)
            rules.append(
                {
                    "record": f"variable:{variable['name']}",
                    "expr": selector.replace("$service", ".*").replace("$run", ".*"),
                }
            )
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules)} rules found" in out.stdout


def test_alert_rules_check_and_unit_tests_pass():
    promtool = require("promtool", "apt-get install -y --no-install-recommends prometheus")
    rules = DASHBOARDS / "prometheus" / "alerts.yml"
    check = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0 and "SUCCESS: 8 rules found" in check.stdout, check.stdout + check.stderr
    test = subprocess.run(
        [promtool, "test", "rules", str(rules.with_name("alerts_test.yml"))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr


def test_every_alert_has_unit_tests_firing_and_not_firing_and_a_runbook():
    alerts = load_yaml(DASHBOARDS / "prometheus" / "alerts.yml")["groups"][0]["rules"]
    tests = load_yaml(DASHBOARDS / "prometheus" / "alerts_test.yml")["tests"]
    cases = [c for t in tests for c in t["alert_rule_test"]]
    for rule in alerts:
        mine = [c for c in cases if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in mine) and any(not c["exp_alerts"] for c in mine), rule["alert"]
        assert {"summary", "description", "runbook"} <= set(rule["annotations"])


# The laptop stack ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose():
    return load_yaml(DASHBOARDS / "collector" / "compose.yaml")


def mounts(service: dict) -> dict[str, Path]:
    """Container path -> host path of a compose service's bind mounts."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        found[target] = (DASHBOARDS / "collector" / source).resolve()
    return found


def port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def test_every_mounted_file_exists(compose):
    for name, service in compose["services"].items():
        for target, source in mounts(service).items():
            assert source.is_file(), f"{name}: {source} for {target}"


def test_collector_pipelines_and_ports(compose):
    collector = load_yaml(DASHBOARDS / "collector" / "otel-collector.yaml")
    service = compose["services"]["otel-collector"]
    config_path = next(arg.split("=", 1)[1] for arg in service["command"] if arg.startswith("--config="))
    assert mounts(service)[config_path].name == "otel-collector.yaml"
    for pipeline in collector["service"]["pipelines"].values():
        assert set(pipeline["receivers"]) <= set(collector["receivers"])
        assert set(pipeline["exporters"]) <= set(collector["exporters"])
        assert set(pipeline.get("processors", [])) <= set(collector["processors"])
    published = {int(p.split(":")[1]) for p in service["ports"]}
    protocols = collector["receivers"]["otlp"]["protocols"]
    assert (
        {port_of(protocols["grpc"]["endpoint"]), port_of(protocols["http"]["endpoint"])}
        == published
        == {4317, 4318}
    )
    jaeger = collector["exporters"]["otlp/jaeger"]["endpoint"]
    assert (
        jaeger.split(":")[0] in compose["services"] and port_of(jaeger) == 4317
    )  # Jaeger v2's OTLP gRPC port
    assert "jaeger" in service["depends_on"]


def test_prometheus_scrapes_the_collector_and_loads_the_shipped_rules(compose):
    collector = load_yaml(DASHBOARDS / "collector" / "otel-collector.yaml")
    prometheus = compose["services"]["prometheus"]
    config = load_yaml(DASHBOARDS / "collector" / "prometheus.yml")
    config_path = next(
        arg.split("=", 1)[1] for arg in prometheus["command"] if arg.startswith("--config.file=")
    )
    files = mounts(prometheus)
    assert files[config_path].name == "prometheus.yml"
    (rule_file,) = config["rule_files"]
    assert files[rule_file] == (DASHBOARDS / "prometheus" / "alerts.yml").resolve()
    (target,) = config["scrape_configs"][0]["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host in compose["services"] and int(port) == port_of(
        collector["exporters"]["prometheus"]["endpoint"]
    )


def test_grafana_provisioning_matches_the_dashboard(compose, dashboard):
    grafana = compose["services"]["grafana"]
    files = mounts(grafana)
    datasources = load_yaml(DASHBOARDS / "grafana" / "provisioning" / "datasources.yml")["datasources"]
    providers = load_yaml(DASHBOARDS / "grafana" / "provisioning" / "dashboards.yml")["providers"]
    (dashboard_mount,) = [t for t, s in files.items() if s == DASHBOARD.resolve()]
    assert Path(dashboard_mount).parent == Path(providers[0]["options"]["path"])
    assert any(t.startswith("/etc/grafana/provisioning/datasources/") for t in files)
    assert any(t.startswith("/etc/grafana/provisioning/dashboards/") for t in files)
    types = {d["type"]: d for d in datasources}
    variables = {v["name"]: v for v in dashboard["templating"]["list"] if v["type"] == "datasource"}
    assert {v["query"] for v in variables.values()} <= set(types)  # each datasource variable finds one
    for source in datasources:
        host, port = re.fullmatch(r"http://([\w-]+):(\d+)", source["url"]).groups()
        assert host in compose["services"], source["url"]
        expected = {"prometheus": 9090, "jaeger": 16686}[source["type"]]
        assert int(port) == expected


def test_the_duration_panels_show_exemplars_that_open_in_jaeger(compose, dashboard):
    """Exemplars from the collector's OpenMetrics, stored by Prometheus, each trace_id a link to Jaeger
    (checked end to end in tests/e2e/test_collector.py)."""
    collector = load_yaml(DASHBOARDS / "collector" / "otel-collector.yaml")
    assert collector["exporters"]["prometheus"]["enable_open_metrics"] is True
    assert "--enable-feature=exemplar-storage" in compose["services"]["prometheus"]["command"]
    targets = [t for panel in queried(dashboard) for t in panel["targets"]]
    durations = [t for t in targets if "ultralytics_callback_duration_seconds_bucket" in t["expr"]]
    assert durations and all(t.get("exemplar") is True for t in durations)
    datasources = load_yaml(DASHBOARDS / "grafana" / "provisioning" / "datasources.yml")["datasources"]
    by_type = {d["type"]: d for d in datasources}
    (link,) = by_type["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert link == {"name": "trace_id", "datasourceUid": by_type["jaeger"]["uid"]}


def test_readme_explains_every_panel_and_alert(dashboard):
    readme = (ROOT / "README.md").read_text()
    for panel in dashboard["panels"]:
        assert panel["title"] in readme, panel["title"]
    for rule in load_yaml(DASHBOARDS / "prometheus" / "alerts.yml")["groups"][0]["rules"]:
        assert rule["alert"] in readme
    assert "docker compose -f dashboards/collector/compose.yaml up" in readme


def test_compose_names_the_jaeger_and_collector_releases_that_ci_runs(compose):
    images = {name: service["image"] for name, service in compose["services"].items()}
    exporter = "github.com/open-telemetry/opentelemetry-collector-contrib/exporter/prometheusexporter"
    contrib = go_release("otelcol", exporter)
    assert images["otel-collector"] == f"otel/opentelemetry-collector-contrib:{contrib[1:]}"
    major, minor, patch = go_release("jaeger", "github.com/jaegertracing/jaeger")[1:].split(".")
    # The Jaeger module's v1 tags carry the v2 release 63 minors behind: v1.75.0 is Jaeger 2.12.0.
    assert major == "1" and images["jaeger"] == f"jaegertracing/jaeger:2.{int(minor) - 63}.{patch}"
